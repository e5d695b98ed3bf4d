"""The demo scripts work on a machine without Docker (Prometheus only, saying what is
missing); trigger-incident switches a real live_app."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.prometheus_server import free_port, prometheus_binary

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_run_demo_without_docker(tmp_path: Path) -> None:
    prom = prometheus_binary()
    replayer = shutil.which("replayer") or str(Path(sys.executable).parent / "replayer")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(prom, bin_dir / "prometheus")
    os.symlink(replayer, bin_dir / "replayer")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PROMETHEUS_PORT": str(free_port()),
           "REPLAYER_STACK_DIR": str(tmp_path / "stack"), "HOME": str(tmp_path),
           "REPLAYER": "replayer"}
    try:
        out = subprocess.run(["bash", str(ROOT / "scripts/run-demo.sh")], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        text = out.stdout
        assert "No Docker engine" in text and "loading metrics only" in text
        assert "loki" in text and "missing" in text
        assert "rejected 0" in text
        # metrics only: the PromQL to try, not LogQL / TraceQL that cannot work
        assert "  PromQL   histogram_quantile(0.99" in text
        assert text.count("  PromQL   ") == 3
        assert "LogQL" not in text and "TraceQL" not in text
        # run again: the first run's stack is reused, not an error
        again = subprocess.run(["bash", str(ROOT / "scripts/run-demo.sh")], env=env, cwd=ROOT,
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.startswith("A stack from an earlier run is up")
        assert "rejected 0" in again.stdout
    finally:
        subprocess.run([str(bin_dir / "replayer"), "stack", "down"], env=env, cwd=ROOT,
                       capture_output=True, timeout=120)


@pytest.mark.integration
def test_run_demo_from_a_fresh_clone_installs_what_it_needs(tmp_path: Path) -> None:
    """The README's first command on a fresh clone (committed files only), on a machine
    with Python and Debian's prometheus but nothing else: it makes .venv, installs the
    replayer, starts Prometheus, loads the incident, and says how to stop it."""
    prom = prometheus_binary()
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(prom, bin_dir / "prometheus")
    # the interpreter this venv was made from: a machine's own python3
    os.symlink(getattr(sys, "_base_executable", sys.executable), bin_dir / "python3")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PROMETHEUS_PORT": str(free_port()),
           "REPLAYER_STACK_DIR": str(tmp_path / "stack"), "HOME": str(tmp_path),
           "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR",
                                           str(Path.home() / ".cache" / "pip"))}
    try:
        out = subprocess.run(["bash", "scripts/run-demo.sh"], env=env, cwd=clone,
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        text = out.stdout
        assert text.startswith(f"Installing the replayer into {clone}/.venv")
        assert (clone / ".venv/bin/replayer").exists()
        assert "prometheus  ready" in text and "rejected 0" in text
        assert "incident   onset 20" in text and "\nprometheus http://127.0.0.1:" in text
        assert f"Stop it:    {clone}/.venv/bin/replayer stack down" in text
    finally:
        subprocess.run([str(clone / ".venv/bin/replayer"), "stack", "down"], env=env,
                       cwd=clone, capture_output=True, timeout=120)


def test_trigger_incident(tmp_path: Path) -> None:
    import threading
    import time

    import uvicorn

    from live_app.app import create_app
    from live_app.settings import Settings

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(
        database_url=f"sqlite:///{tmp_path / 'p.db'}")), host="127.0.0.1", port=port,
        log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        env = {**os.environ, "LIVE_APP_URL": f"http://127.0.0.1:{port}"}
        out = subprocess.run(["bash", str(ROOT / "scripts/trigger-incident.sh"), "slow_query"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and '"mode":"slow_query"' in out.stdout.replace(" ", "")
        bad = subprocess.run(["bash", str(ROOT / "scripts/trigger-incident.sh"), "boom"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "usage" in bad.stderr
        # a wrong token does not matter from loopback with a loopback Host
        local = subprocess.run(["bash", str(ROOT / "scripts/trigger-incident.sh"), "normal"],
                                 env={**env, "LIVE_APP_URL": f"http://localhost:{port}",
                                      "INCIDENT_TOKEN": "wrong"},
                                 capture_output=True, text=True, timeout=60)
        assert local.returncode == 0, local.stderr
    finally:
        server.should_exit = True
        thread.join(timeout=20)
    # nothing listening any more: not a bare curl error, but how to start live_app
    gone = subprocess.run(["bash", str(ROOT / "scripts/trigger-incident.sh"), "normal"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1
    first = gone.stderr.splitlines()[0]
    assert first.startswith(f"error: no live_app answers at http://127.0.0.1:{port}"), first
    assert "python -m live_app" in gone.stderr and "LIVE_APP_URL" in gone.stderr


def test_trigger_incident_offers_every_live_app_mode() -> None:
    from live_app.settings import MODES

    text = (ROOT / "scripts/trigger-incident.sh").read_text()
    offered = re.search(r"^  ([a-z_|]+)\) ;;$", text, re.M)
    assert offered is not None
    assert offered.group(1).split("|") == list(MODES)
