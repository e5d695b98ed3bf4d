"""`replayer compare`: fingerprints per phase, judged rows, and a comparison that can fail."""

from __future__ import annotations

import json

from click.testing import CliRunner

from replayer.cli import cli
from replayer.compare import compare, latency, quantile
from tests.conftest import cached_incident


def test_quantile_interpolates_like_histogram_quantile() -> None:
    bounds = [0.1, 0.5, float("inf")]
    assert quantile(0.5, bounds, [10, 20, 20]) == 0.1
    assert abs(quantile(0.99, bounds, [10, 20, 20]) - 0.492) < 1e-12  # type: ignore[operator]
    assert quantile(0.9, bounds, [10, 10, 20]) == 0.5  # in +Inf: the highest finite bound
    assert quantile(0.5, bounds, [0, 0, 0]) is None


def test_an_incident_matches_itself_and_differs_from_calm() -> None:
    slow = cached_incident("slow_query")
    rows = compare(slow, slow)
    assert rows and all(r.verdict in ("ok", "n/a") for r in rows)
    judged = [r for r in rows if r.verdict == "ok"]
    assert len(judged) > 30
    calm = cached_incident("baseline")
    versus = {(r.what, r.phase): r for r in compare(calm, slow)}
    # a window without an incident stands whole against each phase of the other
    assert versus[("p50 POST /payment", "before")].verdict == "ok"
    assert versus[("p50 POST /payment", "during")].verdict == "outside"
    assert versus[("slow statement lines", "during")].verdict == "outside"
    shifted = {(r.what, r.phase): r for r in compare(cached_incident("pool_exhaustion"), slow)}
    assert shifted[("pool timeouts", "during")].verdict == "outside"  # one times out, one not


def test_latency_reads_the_phase_from_the_buckets() -> None:
    slow = cached_incident("slow_query")
    onset, recovery = slow.truth.onset_ms, slow.truth.recovery_ms
    assert onset is not None and recovery is not None
    calm = latency(slow, "POST", "/payment", 0.5, 0, onset)
    hot = latency(slow, "POST", "/payment", 0.5, onset + 120_000, recovery)
    assert calm is not None and hot is not None and hot > 20 * calm


def test_cli_exit_code_says_whether_every_row_held(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from replayer.recording import write_recording

    a = tmp_path / "a.jsonl.gz"
    write_recording(cached_incident("error_spike"), a)
    same = CliRunner().invoke(cli, ["compare", str(a), str(a)])
    assert same.exit_code == 0, same.output
    assert "within tolerance" in same.output
    calm = CliRunner().invoke(cli, ["compare", "baseline", "slow_query"])
    assert calm.exit_code == 1 and "OUTSIDE" in calm.output  # unrelated: the comparison fails
    differ = CliRunner().invoke(cli, ["compare", str(a), "connection_leak", "--json"])
    assert differ.exit_code == 1, differ.output
    body = json.loads(differ.output)
    outside = {(r["what"], r["phase"]) for r in body["rows"] if r["verdict"] == "outside"}
    assert ("pool timeouts", "during") in outside


def test_a_scenario_named_against_a_live_fixture_is_generated_as_it_ran() -> None:
    from pathlib import Path

    live = str(Path(__file__).resolve().parents[2] / "recordings" /
               "live_upstream_latency_postgres.jsonl.gz")
    ran = CliRunner().invoke(cli, ["compare", live, "upstream_latency"])
    assert "B = upstream_latency, generated as the recording ran" in ran.output
    own = CliRunner().invoke(cli, ["compare", live, "upstream_latency", "--defaults"])
    assert "generated as the recording ran" not in own.output

    def within(out: str) -> int:
        return int(out.strip().splitlines()[-1].split(" of ")[0])

    # its own defaults (30 min, 15 s, 13 req/s, its own onset) match the live run worse
    assert within(ran.output) > within(own.output)
