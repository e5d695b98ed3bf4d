"""`replayer stack up|down|status`: a local stack without Docker.

Runs the `prometheus`, `loki` and `tempo` binaries found on PATH (or named by
PROMETHEUS_BIN / LOKI_BIN / TEMPO_BIN) with the configs in infra/, on loopback, with
their data in one directory, waits until each is ready, and stops them cleanly (Tempo can
take minutes to stop: the wait is bounded, then it is killed). A missing binary is named
with how to get it; the others still start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from .errors import ReplayerError, UsageError

INFRA = Path(__file__).resolve().parents[1] / "infra"
HOW_TO_GET = {
    "prometheus": "Debian/Ubuntu: apt-get install prometheus (or PROMETHEUS_BIN=/path)",
    "loki": "no Debian package: use the grafana/loki Docker image (infra/docker-compose.yml), "
            "or put a loki binary on PATH / set LOKI_BIN",
    "tempo": "no Debian package: use the grafana/tempo Docker image (infra/docker-compose.yml), "
             "or put a tempo binary on PATH / set TEMPO_BIN",
}


class StackError(ReplayerError):
    exit_code = 3


@dataclass(frozen=True)
class Ports:
    prometheus: int = 9090
    loki: int = 3100
    loki_grpc: int = 9096
    tempo: int = 3200
    tempo_grpc: int = 9095
    tempo_otlp_grpc: int = 4317
    tempo_otlp_http: int = 4318


PORTS_OF = {
    "prometheus": lambda p: (p.prometheus,),
    "loki": lambda p: (p.loki, p.loki_grpc),
    "tempo": lambda p: (p.tempo, p.tempo_grpc, p.tempo_otlp_grpc, p.tempo_otlp_http),
}


def port_is_free(port: int) -> bool:
    """Nothing listens on loopback ``port`` (a bind would succeed)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port nothing listens on now, on loopback, and not one this process was given
    before: a server taking several (Tempo: four) is started after all are chosen, and the
    kernel may offer a port twice while none of them is bound yet (seen: Tempo's OTLP
    receiver given its HTTP port)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise OSError("no free loopback port the kernel has not offered this process before")


@dataclass
class Service:
    name: str
    pid: int
    url: str
    ready_url: str
    log: str


@dataclass
class StackState:
    data_dir: str
    services: list[Service] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)

    def save(self) -> None:
        path = Path(self.data_dir) / "stack.json"
        path.write_text(json.dumps({"data_dir": self.data_dir, "missing": self.missing,
                                    "services": [asdict(s) for s in self.services]}, indent=2))

    @staticmethod
    def load(data_dir: Path) -> StackState:
        path = data_dir / "stack.json"
        if not path.exists():
            raise UsageError(f"no stack in {data_dir} (no stack.json); start one with "
                             "`replayer stack up`")
        raw = json.loads(path.read_text())
        return StackState(raw["data_dir"], [Service(**s) for s in raw["services"]],
                          raw.get("missing", {}))


def find_binary(name: str, env: dict[str, str]) -> str | None:
    return env.get(f"{name.upper()}_BIN") or shutil.which(name)


def parse_scrape(value: str) -> tuple[str, str]:
    """``JOB=HOST:PORT`` (as `stack up --scrape` takes it) -> (job, target)."""
    job, sep, target = value.partition("=")
    host, colon, port = target.rpartition(":")
    if not sep or not job or not colon or not host or not port.isdigit() \
            or not 0 < int(port) < 65536 or "/" in target:
        raise UsageError(f"--scrape {value!r}: give JOB=HOST:PORT, e.g. "
                         "payment-service=127.0.0.1:8000 (live_app's /metrics)")
    return job, target


def prometheus_config(data: Path, scrape: dict[str, str]) -> Path:
    """infra/prometheus/prometheus.yml, plus a scrape job per ``scrape`` entry (a running
    live_app, say), written into the stack's data directory."""
    base = INFRA / "prometheus" / "prometheus.yml"
    if not scrape:
        return base
    import yaml

    cfg = yaml.safe_load(base.read_text())
    cfg["scrape_configs"] = [{"job_name": job, "scrape_interval": "5s",
                              "static_configs": [{"targets": [target]}]}
                             for job, target in scrape.items()]
    path = data / "prometheus.yml"
    path.write_text("# written by `replayer stack up --scrape`, from " + str(base) + "\n" +
                    yaml.safe_dump(cfg, sort_keys=False))
    return path


def _commands(data: Path, ports: Ports, env: dict[str, str],
              scrape: dict[str, str] | None = None) -> dict[str, tuple[list[str],
                                                                       dict[str, str], str, str]]:
    """name -> (argv without the binary, extra env, base URL, readiness URL)."""
    prom_cfg = prometheus_config(data, scrape or {})
    return {
        "prometheus": ([f"--config.file={prom_cfg}", f"--storage.tsdb.path={data / 'prometheus'}",
                        f"--web.listen-address=127.0.0.1:{ports.prometheus}",
                        "--web.enable-remote-write-receiver",
                        "--enable-feature=exemplar-storage"], {},
                       f"http://127.0.0.1:{ports.prometheus}",
                       f"http://127.0.0.1:{ports.prometheus}/-/ready"),
        "loki": ([f"-config.file={INFRA / 'loki' / 'loki.yaml'}", "-config.expand-env=true"],
                 {"LOKI_DATA": str(data / "loki"), "LOKI_HTTP_PORT": str(ports.loki),
                  "LOKI_GRPC_PORT": str(ports.loki_grpc), "LOKI_LISTEN": "127.0.0.1"},
                 f"http://127.0.0.1:{ports.loki}", f"http://127.0.0.1:{ports.loki}/ready"),
        "tempo": ([f"-config.file={INFRA / 'tempo' / 'tempo.yaml'}", "-config.expand-env=true"],
                  {"TEMPO_DATA": str(data / "tempo"), "TEMPO_HTTP_PORT": str(ports.tempo),
                   "TEMPO_GRPC_PORT": str(ports.tempo_grpc), "TEMPO_LISTEN": "127.0.0.1",
                   "TEMPO_OTLP_GRPC": f"127.0.0.1:{ports.tempo_otlp_grpc}",
                   "TEMPO_OTLP_HTTP": f"127.0.0.1:{ports.tempo_otlp_http}"},
                  f"http://127.0.0.1:{ports.tempo}", f"http://127.0.0.1:{ports.tempo}/ready"),
    }


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> int:
    """Start a server detached from this process (its own session, output to ``log``);
    `stack down` stops it later, possibly from another `replayer` process."""
    actions = [(os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                0o644), (os.POSIX_SPAWN_DUP2, 1, 2), (os.POSIX_SPAWN_CLOSE, 0)]
    try:
        return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True)
    except OSError as exc:
        raise StackError(f"cannot start {argv[0]}: {exc}") from None


def wait_ready(url: str, pid: int, timeout_s: float, log: Path,
               sleep: Callable[[float], None] = time.sleep) -> None:
    """Until ``url`` answers 200 while process ``pid`` is alive (an answer after it died
    is another program's)."""
    deadline = time.monotonic() + timeout_s
    while True:
        ok = False
        try:
            ok = requests.get(url, timeout=2).status_code == 200
        except requests.ConnectionError:
            pass  # not listening yet
        if not _alive(pid):
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise StackError(f"{url}: the process exited before it was ready:\n{tail}")
        if ok:
            return
        if time.monotonic() > deadline:
            raise StackError(f"{url} not ready after {timeout_s:.0f} s; see {log}")
        sleep(0.25)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass  # not our child (another `replayer` started it): ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def up(data_dir: Path, ports: Ports, env: dict[str, str],
       ready_timeout_s: float = 120.0, scrape: dict[str, str] | None = None) -> StackState:
    """Start what ``env``'s PATH (or *_BIN) provides; ``env`` also goes to the servers.
    ``scrape``: job -> host:port for Prometheus to scrape (live_app's /metrics)."""
    if not (INFRA / "prometheus" / "prometheus.yml").exists():
        raise UsageError(f"the stack configs are not at {INFRA}: `replayer stack` runs from a "
                         "clone of the repository (pip install -e .)")
    data_dir.mkdir(parents=True, exist_ok=True)
    state = StackState(str(data_dir))
    try:
        existing = StackState.load(data_dir)
        if any(_alive(s.pid) for s in existing.services):
            raise UsageError(f"a stack is already running from {data_dir}; "
                             "`replayer stack down` first")
    except UsageError as exc:
        if "already running" in str(exc):
            raise
    commands = _commands(data_dir, ports, env, scrape)
    present = [name for name in commands if find_binary(name, env) is not None]
    taken = [(name, port) for name in present for port in PORTS_OF[name](ports)
             if not port_is_free(port)]
    if taken:  # another program answers there: it would look ready in our place
        raise StackError("; ".join(f"port {port} ({name}) is in use by another program"
                                   for name, port in taken) +
                         "\n  fix: stop it, or pass other ports (--prometheus-port, "
                         "--loki-port, --tempo-port, ...)")
    for name, (args, extra, url, ready) in commands.items():
        binary = find_binary(name, env)
        if binary is None:
            state.missing[name] = HOW_TO_GET[name]
            continue
        log = data_dir / f"{name}.log"
        pid = _spawn([binary, *args], {**env, **extra}, log)
        state.services.append(Service(name, pid, url, ready, str(log)))
        state.save()
    for s in state.services:
        wait_ready(s.ready_url, s.pid, ready_timeout_s, Path(s.log))
    state.save()
    return state


STOPPING = {"tempo": "Tempo flushes its WAL and leaves its ring on TERM; about a minute"}


def down(data_dir: Path, timeout_s: float = 60.0,
         say: Callable[[str], None] = lambda line: None) -> list[str]:
    """Stop every service; returns what happened to each, and ``say``s each step as it
    happens (a stop can take a minute). The services stay listed, as stopped."""
    state = StackState.load(data_dir)
    report = []
    for s in state.services:
        if not _alive(s.pid):
            line = f"{s.name}: not running"
            report.append(line)
            say(line)
            continue
        os.killpg(s.pid, signal.SIGTERM)
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while _alive(s.pid) and time.monotonic() < deadline:
            if time.monotonic() - t0 > 1.0 and not any(r.startswith(f"{s.name}: waiting")
                                                      for r in report):
                why = STOPPING.get(s.name, "it is shutting down")
                line = (f"{s.name}: waiting for it to stop (pid {s.pid}; {why}); it is killed "
                        f"if still running after {timeout_s:.0f} s")
                report.append(line)
                say(line)
            time.sleep(0.2)
        if _alive(s.pid):
            os.killpg(s.pid, signal.SIGKILL)
            line = f"{s.name}: killed after {timeout_s:.0f} s (it did not stop on TERM)"
        else:
            line = f"{s.name}: stopped ({time.monotonic() - t0:.1f} s)"
        report.append(line)
        say(line)
    state.save()
    return report


def status(data_dir: Path) -> list[tuple[str, str, str]]:
    """(name, url, state) for each service, and the missing ones."""
    state = StackState.load(data_dir)
    out = []
    for s in state.services:
        if not _alive(s.pid):
            out.append((s.name, s.url, "stopped"))
            continue
        try:
            ok = requests.get(s.ready_url, timeout=2).status_code == 200
        except requests.ConnectionError:
            ok = False
        out.append((s.name, s.url, "ready" if ok else "starting"))
    for name, how in state.missing.items():
        out.append((name, "-", f"missing: {how}"))
    if not out:
        out.append(("(none)", "-", "no service was started"))
    return out
