"""`load` into a real Grafana Mimir (monolithic, infra/mimir/mimir.yaml), as the compose
stack's "scale" profile runs it: everything stored, exemplars kept, tenants apart, and two
shards store what one load stores.

Skipped with the reason when no `mimir` binary is on PATH (or MIMIR_BIN): there is no
Debian package; users get it as the grafana/mimir Docker image named in infra/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from click.testing import CliRunner

from replayer.cli import cli
from tests.conftest import cached_incident

from .backends import ROOT, running_mimir
from .test_prometheus_load import fixed_end_ms, iso

pytestmark = pytest.mark.integration


def _compose_load_args(url: str, tenant: str) -> list[str]:
    """The compose file's replayer-mimir command, pointed at this Mimir and tenant."""
    compose = yaml.safe_load((ROOT / "infra/docker-compose.yml").read_text())
    argv = compose["services"]["replayer-mimir"]["command"]
    assert argv[:3] == ["replayer", "load", "slow_query"]
    return [a.replace("http://mimir:9009", url).replace("--tenant=demo", f"--tenant={tenant}")
            for a in argv[1:]]


def _stored(url: str, tenant: str, end_ms: int, window_ms: int) -> dict[tuple, dict]:
    """Every raw sample the tenant holds in the window (the range is left-open: one second
    more takes the first step)."""
    r = requests.get(f"{url}/prometheus/api/v1/query", headers={"X-Scope-OrgID": tenant},
                     params={"query": f'{{__name__=~".+"}}[{window_ms // 1000 + 1}s]',
                             "time": end_ms / 1000}, timeout=120)
    r.raise_for_status()
    return {tuple(sorted(s["metric"].items())): {t: v for t, v in s["values"]}
            for s in r.json()["data"]["result"]}


def _exemplars(url: str, tenant: str, start_ms: int, end_ms: int) -> int:
    r = requests.get(f"{url}/prometheus/api/v1/query_exemplars",
                     headers={"X-Scope-OrgID": tenant},
                     params={"query": "http_server_request_duration_seconds_bucket",
                             "start": start_ms / 1000, "end": end_ms / 1000}, timeout=60)
    r.raise_for_status()
    return sum(len(g["exemplars"]) for g in r.json()["data"])


def test_load_and_two_shards_into_mimir_store_the_same_incident(tmp_path: Path) -> None:
    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    start_ms = end_ms - inc.duration_ms
    with running_mimir(tmp_path) as url:
        whole = CliRunner().invoke(cli, [*_compose_load_args(url, "whole"), "--end",
                                         iso(end_ms)])
        assert whole.exit_code == 0, whole.output
        assert (f"metrics: sent {inc.sample_count} samples, accepted {inc.sample_count}, "
                "rejected 0") in whole.output
        assert f"exemplars: sent {inc.exemplar_count}, accepted {inc.exemplar_count}" \
            in whole.output
        # two processes at once, each its shard, into another tenant
        procs = [subprocess.Popen(
            [sys.executable, "-m", "replayer.cli", *_compose_load_args(url, "sharded"),
             "--end", iso(end_ms), "--shard", f"{k}/2"], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True) for k in (0, 1)]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, out + err
        sent = [int(out.split("metrics: sent ")[1].split()[0]) for out, _ in outs]
        assert sum(sent) == inc.sample_count and min(sent) > 0
        whole_stored = _stored(url, "whole", end_ms, inc.duration_ms)
        assert sum(len(v) for v in whole_stored.values()) == inc.sample_count
        assert len(whole_stored) == len(inc.series)
        assert _stored(url, "sharded", end_ms, inc.duration_ms) == whole_stored
        assert _exemplars(url, "whole", start_ms, end_ms) == inc.exemplar_count
        assert _exemplars(url, "sharded", start_ms, end_ms) == inc.exemplar_count
        # tenants are apart: one that was never loaded holds nothing
        assert _stored(url, "nobody", end_ms, inc.duration_ms) == {}


def test_mimirs_default_exemplar_limit_is_caught_before_sending(tmp_path: Path) -> None:
    """Mimir keeps no exemplars unless max_global_exemplars_per_user is set (default 0):
    the load printed "exemplars: sent 851, accepted 851", exit 0, and Mimir stored none.
    The preflight knows Mimir from its build info and reads the tenant's limits."""
    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    with running_mimir(tmp_path, "-ingester.max-global-exemplars-per-user=0") as url:
        r = CliRunner().invoke(cli, [*_compose_load_args(url, "t0"), "--end", iso(end_ms)])
        assert r.exit_code == 1, r.output
        assert f"exemplars: sent {inc.exemplar_count}, accepted 0" in r.output
        assert (f"dropped {inc.exemplar_count} exemplars: Mimir keeps no exemplars for this "
                "tenant") in r.output
        assert "max_global_exemplars_per_user: 100000" in r.output  # the runtime-config fix
        assert "Grafana Mimir 3.0.2: its tenant's limits read" in r.output
        assert "not Prometheus?" not in r.output
        assert _exemplars(url, "t0", end_ms - inc.duration_ms, end_ms) == 0
        assert sum(len(v) for v in _stored(url, "t0", end_ms, inc.duration_ms).values()) \
            == inc.sample_count


def test_a_missing_tenant_is_authentication_not_unreachable(tmp_path: Path) -> None:
    """Mimir answers 401 "no org id" without X-Scope-OrgID: it exited 4 ("could not be
    reached"), with the unsent samples under "rejected"."""
    with running_mimir(tmp_path) as url:
        args = [a for a in _compose_load_args(url, "x") if not a.startswith("--tenant")]
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 5, r.output
        assert "HTTP 401 Unauthorized (no org id)" in r.output and "--tenant" in r.output
        assert "metrics: nothing sent (45254 samples not sent)" in r.output


def _discarded(url: str, tenant: str) -> float:
    """Mimir's own count of the tenant's refused samples (cortex_discarded_samples_total)."""
    text = requests.get(f"{url}/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("cortex_discarded_samples_total{")
               and f'user="{tenant}"' in line)


def test_a_load_partly_beyond_mimirs_window_claims_what_it_stored(tmp_path: Path) -> None:
    """Mimir stores what it can of a request and answers 400 for the rest (Prometheus 2.42
    refuses the whole request). A window half beyond its 3 h out-of-order window: claimed
    accepted 74,932 where Mimir stored 1,446,744. Now the claim is what it holds, the
    exemplars it kept count as kept, and the refused samples are not sent again and again
    (halving had Mimir count 408,000 discards for 44,880 refused samples)."""
    import re

    end_ms = fixed_end_ms()
    with running_mimir(tmp_path) as url:
        args = _compose_load_args(url, "late")
        first = CliRunner().invoke(cli, [*args, "--end", iso(end_ms), "--no-exemplars"])
        assert first.exit_code == 0, first.output  # the tenant's newest sample is now
        before = _discarded(url, "late")
        late_end = end_ms - 150 * 60_000  # a 1 h window from 3.5 h to 2.5 h ago
        r = CliRunner().invoke(cli, [*args, "--end", iso(late_end), "--duration", "1h"])
        assert r.exit_code == 1, r.output
        m = re.search(r"metrics: sent (\d+) samples, accepted (\d+), rejected (\d+)"
                      r"[^;]*; (\d+) requests", r.output)
        assert m, r.output
        sent, accepted, rejected, posts = map(int, m.groups())
        assert accepted + rejected == sent and 0 < accepted < sent
        assert "err-mimir-sample-timestamp-too-old" in r.output
        stored = sum(len(v) for v in _stored(url, "late", late_end, 3_600_000).values())
        assert accepted == stored
        assert len(r.output.splitlines()) < 40  # grouped, not a line per series
        # each refused sample counted once by Mimir, plus one per probe at most
        discarded = _discarded(url, "late") - before
        assert rejected <= discarded <= rejected + 20 * posts
        assert discarded < 1.01 * rejected
        exemplars = int(re.search(r"exemplars: sent \d+, accepted (\d+)", r.output)[1])
        assert exemplars == _exemplars(url, "late", late_end - 3_600_000, late_end) > 0


def test_a_load_is_paced_under_a_low_ingestion_rate(tmp_path: Path) -> None:
    """Mimir's default tenant takes 10,000 samples and exemplars a second and answers 429
    over that. The preflight reads the tenant's rate and burst, and the load goes out under
    them: nothing refused, nothing retried, all stored."""
    import re

    end_ms = fixed_end_ms()
    with running_mimir(tmp_path, "-distributor.ingestion-rate-limit=40000",
                       "-distributor.ingestion-burst-size=20000") as url:
        r = CliRunner().invoke(cli, [*_compose_load_args(url, "slow"), "--end", iso(end_ms)])
        assert r.exit_code == 0, r.output
        assert "ingestion_rate 40,000/s, burst 20,000: paced under them" in r.output
        assert "paced under Mimir's ingestion_rate for this tenant" in r.output
        m = re.search(r"metrics: sent (\d+) samples, accepted (\d+), rejected 0, clipped 0; "
                      r"\d+ requests, 0 retries", r.output)
        assert m, r.output
        stored = sum(len(v) for v in _stored(url, "slow", end_ms, 3_600_000).values())
        assert int(m[1]) == int(m[2]) == stored


def test_a_window_longer_than_mimirs_is_refused_then_clipped(tmp_path: Path) -> None:
    """The preflight reads the tenant's out-of-order window from Mimir's admin pages (3 h
    in infra/mimir): a 4 h window is refused before sending, with the runtime-config fix,
    and --clip loads the part Mimir takes, claiming what it stored."""
    import re

    end_ms = fixed_end_ms()
    with running_mimir(tmp_path) as url:
        args = [*_compose_load_args(url, "long"), "--end", iso(end_ms), "--duration", "4h",
                "--no-exemplars"]
        refused = CliRunner().invoke(cli, args)
        assert refused.exit_code == 3, refused.output
        assert "Mimir takes this tenant's samples only from" in refused.output
        assert "out_of_order_time_window: 250m" in refused.output
        assert _stored(url, "long", end_ms, 4 * 3_600_000) == {}  # nothing was sent
        clipped = CliRunner().invoke(cli, [*args, "--clip"])
        assert clipped.exit_code == 0, clipped.output
        m = re.search(r"metrics: sent (\d+) samples, accepted (\d+), rejected 0, clipped (\d+)",
                      clipped.output)
        assert m, clipped.output
        sent, accepted, cut = map(int, m.groups())
        assert sent == accepted and cut > 0
        assert sum(len(v) for v in _stored(url, "long", end_ms, 4 * 3_600_000).values()) \
            == accepted
