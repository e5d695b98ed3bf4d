"""Calibration: the generator, run as each committed live fixture ran (its window, scrape
interval, knobs and switch times), against that fixture, row by row (`replayer compare`).

Every judged row must be within tolerance, except the gaps listed here, each with why it
cannot match yet. A listed gap that closes fails the test too, so the list stays true."""

from __future__ import annotations

from pathlib import Path

import pytest

from generator.scenarios import SCENARIOS
from replayer.calibrate import calibration_scenario, generated_like, run_settings
from replayer.compare import compare
from replayer.recording import read_recording

RECORDINGS = Path(__file__).resolve().parents[2] / "recordings"
FIXTURES = sorted(RECORDINGS.glob("live_*_postgres.jsonl.gz"))
LIVE_SCENARIOS = ("slow_query", "pool_exhaustion", "connection_leak", "error_spike",
                  "upstream_latency", "lock_contention", "too_many_clients", "noisy_neighbour")

# why a row cannot match (yet); the live runs are on one 2-core machine: live_app, its card
# processor, PostgreSQL and the traffic driver share the CPUs, where the generator models
# production (the database on a host of its own)
SHARED_CORES = ("two shared cores: live, the app's own work (its checkout, the GIL, the card "
                "call) slows while the database is busy or a backlog bursts; the generator's "
                "app and card processor do not contend")
HIGH_WATER = ("the pool keeps open the most connections ever checked out at once: live, "
              "scheduler jitter made three overlap once; the generator's traffic needed two")
SWITCH_OFF = ("at the switch-off live_app reads its mode when a handler starts, so requests "
              "still waiting for a thread skip the fault and the queue drains at once; the "
              "generator decides at arrival (as a rollback does: the old code finishes what it "
              "accepted), so its backlog holds connections into the after phase")
CLIENT_GIVES_UP = ("live, the traffic driver gives up after 60 s: a request that waited for a "
                   "thread and then 30 s for the pool is abandoned, and the server's "
                   "histogram never counts it (half of the 50 pool timeouts during the lock); "
                   "the generator's clients wait for every answer")
REPORTS_CANCELLED = ("live_app cancels the reports at the switch-off; the generator's "
                     "reports run to their end (as when someone turns a dashboard's refresh "
                     "off), with their sessions and duration lines")
KNOWN_GAPS: dict[str, dict[tuple[str, str], str]] = {
    "noisy_neighbour": {
        **{(row, "during"): SHARED_CORES for row in (
            "p50 POST /payment", "p99 POST /payment", "p50 GET /payments/{payment_id}",
            "p99 GET /payments/{payment_id}", "p50 card-processor call",
            "p99 card-processor call", "pool used (mean)", "pool idle (mean)",
            "pool wait (mean)", "db idle in transaction (mean)", "slow statement lines",
            "onset to 90 % of peak p99")},
        ("db active sessions (mean)", "during"): (
            "the reports run as parallel scans live, their workers sessions too; the "
            "generator's reports are one session each"),
        ("p99 GET /payments/{payment_id}", "after"): SHARED_CORES,
        ("db active sessions (mean)", "after"): REPORTS_CANCELLED,
        ("slow statement lines", "after"): REPORTS_CANCELLED,
    },
    "too_many_clients": {
        ("pool idle (mean)", "before"): (
            "the pool's open connections are its high-water mark of checkouts at once, and "
            "(pool_recycle 20 s) when each was last replaced: 1.9 live, 2.7 generated"),
        ("db active sessions (mean)", "before"): (
            "postgres_exporter 0.11 runs the queries of its two connections side by side: at "
            "a scrape the second is active 10 to 55 % of the time across the live runs; the "
            "generator counts one active and one idle"),
        ("p99 GET /payments/{payment_id}", "during"): SHARED_CORES,
        ("pending requests (max)", "during"): (
            "live, a checkout that opens a new connection is pending while PostgreSQL answers "
            "(and refuses): one scrape caught one; the generator's refusals take no time"),
        ("5xx ratio", "after"): (
            "the slots come back over the first second after the switch: 6 payments failed "
            "in it live, 12 generated"),
        ("onset to 90 % of peak p99", "during"): (
            "the failures are fast, so POST's p99 hardly moves (50 ms): which scrape first "
            "reaches 90 % of a flat peak is chance (14 s live, 4 s generated)"),
    },
    "slow_query": {
        ("pool wait (mean)", "during"): SHARED_CORES,
        ("onset to 90 % of peak p99", "during"): (
            "live, the scans keep slowing for ~40 s after the index is gone (cold pages, more "
            "scans at once on two cores); the generator's scans have their peak time at once"),
    },
    "connection_leak": {("p99 card-processor call", "after"): SHARED_CORES},
    "error_spike": {
        ("pool idle (mean)", "during"): HIGH_WATER,
        ("pool idle (mean)", "after"): HIGH_WATER,
        ("5xx ratio", "after"): "a payment or two in flight at the switch-off (2 live, 1 "
                                "generated): chance, at 10 requests a second",
    },
    "upstream_latency": {
        ("pool idle (mean)", "during"): HIGH_WATER,
        ("pool idle (mean)", "after"): HIGH_WATER,
    },
    "pool_exhaustion": {
        ("p50 GET /payments/{payment_id}", "during"): SWITCH_OFF,
        ("pool used (mean)", "after"): SWITCH_OFF,
        ("pool saturated (max used = max)", "after"): SWITCH_OFF,
        ("pending requests (max)", "after"): SWITCH_OFF,
        ("pending requests (mean)", "after"): SWITCH_OFF,
        ("pool wait (mean)", "after"): SWITCH_OFF,
        ("db idle in transaction (mean)", "after"): SWITCH_OFF,
        ("onset to 90 % of peak p99", "during"): (
            "the pool is at its knife edge here (arrivals about its capacity), where the "
            "queue grows with the arrivals' chance bunching: the generated seed brought 11 % "
            "more payments in the first 30 s (209 against 188), its p99 climbs in 24 s, "
            "live's in 44 s"),
    },
    "lock_contention": {
        ("db idle in transaction (mean)", "before"): (
            "live_app opens the analyst's transaction at the switch; the generator's analyst "
            "began minutes before the migration queued, as it happens"),
        ("request rate", "during"): CLIENT_GIVES_UP,
        ("p50 POST /payment", "after"): CLIENT_GIVES_UP,
        ("p50 GET /payments/{payment_id}", "after"): CLIENT_GIVES_UP,
        ("p50 card-processor call", "after"): SHARED_CORES,
        ("p99 card-processor call", "after"): SHARED_CORES,
        ("onset to 90 % of peak p99", "during"): CLIENT_GIVES_UP,
    },
}


def test_every_live_scenario_has_a_fixture() -> None:
    live = {n for n, s in SCENARIOS.items() if s.live_mode}
    assert live == set(LIVE_SCENARIOS)
    assert {f.name for f in FIXTURES} == {f"live_{n}_postgres.jsonl.gz" for n in live}


@pytest.fixture(scope="module", params=[f.name for f in FIXTURES])
def pair(request):  # type: ignore[no-untyped-def]
    live = read_recording(RECORDINGS / request.param)
    return live, generated_like(live)


def test_a_fixture_says_how_it_ran(pair) -> None:  # type: ignore[no-untyped-def]
    live, gen = pair
    source = dict(live.source)
    name, knobs = run_settings(live)
    assert source["postgres_exporter"] and source["database"].startswith(
        "postgres (PostgreSQL) 15")
    jobs = {s.label("job") for s in live.series}
    assert {"payment-service", "card-processor", "postgres"} <= jobs
    services = {dict(t.resource)["service.name"] for t in live.span_tables}
    assert {"payment-service", "card-processor"} <= services
    assert knobs["rps_post_payment"] > 0 and knobs["pool_size"] >= 1
    # the service kept answering its scrapes through the incident (operational endpoints
    # never wait on the worker threads or the pool), and was switched on and off
    up = [s for s in live.series if s.name == "up" and s.label("job") == "payment-service"]
    assert up and all((s.values == 1).all() for s in up) and len(up[0]) >= 30
    modes = source["incident_modes"].split()
    assert [m.split(":")[1] for m in modes] == ["normal", SCENARIOS[name].live_mode, "normal"]
    # the generated twin has the fixture's window, step and switch times
    assert gen.step_ms == live.step_ms
    assert abs(gen.duration_ms - live.duration_ms) <= live.step_ms
    assert abs(gen.truth.onset_ms - live.truth.onset_ms) <= 1000
    assert abs(gen.truth.recovery_ms - live.truth.recovery_ms) <= 1000
    assert calibration_scenario(live).fault == SCENARIOS[name].fault
    assert gen.truth.root_cause_kind == SCENARIOS[name].root_cause_kind


def test_generated_rows_are_within_tolerance_of_the_live_run(pair) -> None:  # type: ignore[no-untyped-def]
    live, gen = pair
    name, _ = run_settings(live)
    rows = compare(live, gen)
    judged = [r for r in rows if r.verdict != "n/a"]
    assert len(judged) >= 30  # the database and card-processor rows are judged too
    outside = {(r.what, r.phase): r for r in rows if r.verdict == "outside"}
    gaps = KNOWN_GAPS.get(name, {})
    unexplained = sorted(f"{w} ({p}): live {r.a}, generated {r.b}"
                         for (w, p), r in outside.items() if (w, p) not in gaps)
    closed = sorted(f"{w} ({p})" for (w, p) in gaps if (w, p) not in outside)
    assert not unexplained, f"{name}: rows outside tolerance: {unexplained}"
    assert not closed, f"{name}: listed gaps that now hold (remove them): {closed}"


def test_a_recording_that_does_not_say_how_it_ran_is_refused_clearly() -> None:
    from dataclasses import replace

    from replayer.calibrate import NotCalibratable
    from tests.conftest import cached_incident

    generated = cached_incident("slow_query")
    with pytest.raises(NotCalibratable, match="names no built-in scenario"):
        run_settings(generated)
    live = read_recording(FIXTURES[0])
    broken = replace(live, source=tuple((k, "not json" if k == "knobs" else v)
                                        for k, v in live.source))
    with pytest.raises(NotCalibratable, match="knobs header is not a JSON object"):
        run_settings(broken)
