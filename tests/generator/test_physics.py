"""The simulation behaves like the service it models (design.md, "Realism rules").

Checked on every scenario and seeds 1-3, from the published series only (what an
investigator sees): requests are conserved, the real limits hold, Little's law holds over
the peak, the root cause has series of its own under the name the ground truth gives it,
series are not copies of each other, and the seed moves the incident.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from generator import generate
from generator.model import Incident
from generator.scenarios import KNOB_DEFAULTS
from generator.texts import SELECT_RECEIPT
from tests.conftest import BUILT_IN

SCENARIOS = BUILT_IN
FAULTY = SCENARIOS[1:]
HIST = "http_server_request_duration_seconds"


@functools.cache
def metrics_of(scenario: str, seed: int, duration_ms: int = 1_800_000,
               step_ms: int = 15_000) -> Incident:
    return generate(scenario, seed=seed, duration_ms=duration_ms, step_ms=step_ms,
                    signals=("metrics",))


def app_first(inc: Incident, name: str):  # type: ignore[no-untyped-def]
    return next(s for s in inc.iter_series(name) if s.label("job") == "payment-service")


def total(inc: Incident, name: str, **labels: str) -> np.ndarray:
    """The sum of ``name``'s series (payment-service's, unless a pg_* name or a job given:
    card-processor's server has the same HTTP and process names)."""
    if not name.startswith("pg_"):
        labels.setdefault("job", "payment-service")
    found = [s.values for s in inc.iter_series(name)
             if all(s.label(k) == v for k, v in labels.items())]
    assert found, f"no series {name} {labels}"
    return np.sum(found, axis=0)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_requests_are_conserved_and_limits_hold(scenario: str, seed: int) -> None:
    inc = metrics_of(scenario, seed)
    active = total(inc, "http_server_active_requests")
    pending = total(inc, "db_client_connection_pending_requests")
    # the gauge as the instrumentation keeps it: each refused connect moves one from used
    # to idle for good; the pool's real state adds them back
    used = total(inc, "db_client_connections_usage_connections", state="used") + \
        _refused_connects(scenario, seed, app_first(inc, HIST + "_count").t_ms)
    kept = _kept_connections(scenario, seed, app_first(inc, HIST + "_count").t_ms)
    # a connection is used by a request in flight, or kept by one that leaked it
    assert np.all(pending + used - kept <= active)
    assert np.all(used >= kept)
    workers = KNOB_DEFAULTS["worker_threads"]
    pool = dict(inc.knobs)["pool_size"] + dict(inc.knobs)["max_overflow"]
    # a thread waits for a connection, or holds one; a leaked one is held by no thread
    assert np.all(pending <= workers - (used - kept))
    assert pending.max() <= workers - pool or kept.max() > 0
    assert used.max() <= pool
    finished = rdiff(total(inc, HIST + "_count"))
    timed_out = rdiff(total(inc, "db_client_connection_timeouts_total"))
    arrived = np.diff(active) + finished  # what is active now was active before or arrived
    assert np.all(np.abs(np.diff(pending)) <= arrived + finished + timed_out)


def rdiff(v: np.ndarray) -> np.ndarray:
    """A counter's increase between scrapes; after a restart it counts from zero."""
    d = np.diff(v)
    return np.where(d < 0, v[1:], d)


def _kept_connections(scenario: str, seed: int, t_ms: np.ndarray) -> np.ndarray:
    """Connections leaked and not yet given back at each instant, counted from the traces:
    a leaking request's receipt lookup (connection_leak) keeps its connection until the
    recovery."""
    if scenario != "connection_leak":
        return np.zeros(t_ms.shape)
    inc = generate(scenario, seed=seed, signals=("traces",))
    leaked = np.sort(np.concatenate([
        t.end_ns[[i for i in range(len(t)) if dict(t.attributes[i]).get("db.statement") ==
                  SELECT_RECEIPT]] for t in inc.span_tables])) // 1_000_000
    assert leaked.size >= 15
    recovery = inc.truth.recovery_ms
    return np.where(t_ms < recovery, np.searchsorted(leaked, t_ms, side="right"), 0)


def _refused_connects(scenario: str, seed: int, t_ms: np.ndarray) -> np.ndarray:
    """payment-service's connections PostgreSQL refused, by each instant (from the traces:
    its `connect` spans that failed with OperationalError)."""
    if scenario != "too_many_clients":
        return np.zeros(t_ms.shape)
    inc = generate(scenario, seed=seed, signals=("traces",))
    ends = np.sort(np.concatenate([
        t.end_ns[[i for i in range(len(t)) if t.name[i] == "connect" and t.events[i] and
                  dict(t.events[i][0].attributes)["exception.type"] ==
                  "sqlalchemy.exc.OperationalError"]]
        for t in inc.span_tables if dict(t.resource)["service.name"] == "payment-service"]))
    assert ends.size >= 10
    # a connect that ended at or before a scrape is in that scrape
    return np.searchsorted(ends, t_ms * 1_000_000, side="right").astype(np.float64)


def _peak(inc: Incident) -> tuple[int, int]:
    peak = next((p for p in inc.truth.phases if p.name == "peak"), None)
    if peak is None:  # baseline: the whole window
        return 0, inc.duration_ms
    return peak.start_ms, peak.end_ms


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_littles_law_over_the_peak(scenario: str, seed: int) -> None:
    """Mean requests in flight (the gauge, sampled) = throughput x mean latency (the
    histogram's _sum over the same span). A quiet service has a fraction of a request in
    flight, so it is sampled every second over a longer window to keep sampling noise
    under the 10 % the law is held to."""
    quiet = scenario not in ("slow_query", "pool_exhaustion", "connection_leak",
                             "upstream_latency", "lock_contention")
    inc = (metrics_of(scenario, seed, 7_200_000, 1000) if quiet
           else metrics_of(scenario, seed))
    start, end = _peak(inc)
    if scenario == "lock_contention":
        # a blockage: what queued at the onset drains only after the peak, so the law holds
        # over a stretch that begins and ends with the service calm
        start, end = 0, inc.duration_ms
    starts = app_first(inc, "process_start_time_seconds")
    jumps = starts.t_ms[1:][np.diff(starts.values) != 0]
    if jumps.size:  # one process: the longest stretch of the peak without a restart
        cuts = np.concatenate([[start], jumps[(jumps > start) & (jumps < end)], [end]])
        k = int(np.argmax(np.diff(cuts)))
        start, end = int(cuts[k]), int(cuts[k + 1]) - 30_000
    t = app_first(inc, HIST + "_count").t_ms
    a, b = np.searchsorted(t, start + 60_000), np.searchsorted(t, end)
    active = total(inc, "http_server_active_requests")[a:b + 1]
    busy = total(inc, HIST + "_sum")
    little = (busy[b] - busy[a]) / ((t[b] - t[a]) / 1000.0)
    assert abs(active.mean() / little - 1.0) < 0.10, (active.mean(), little)


IDENTITY_TO_LABEL = {"job": "job", "server.address": "server_address",
                     "server_address": "server_address", "relname": "relname"}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("scenario", FAULTY)
def test_root_cause_has_series_of_its_own_that_move_at_onset(scenario: str, seed: int) -> None:
    inc = metrics_of(scenario, seed)
    identity = dict(inc.truth.root_cause_identity)
    assert identity, "the ground truth names no telemetry identity"
    onset = inc.truth.onset_ms
    assert onset is not None
    mine = [s for s in inc.series
            if any(s.label(IDENTITY_TO_LABEL[k]) == v for k, v in identity.items()
                   if k in IDENTITY_TO_LABEL)]
    assert mine, f"no series carries {identity}"
    k = int(np.searchsorted(mine[0].t_ms, onset))
    # a leak shows as a staircase of one connection at a time: give it five minutes
    soon = 20 if scenario == "connection_leak" else 4

    def moved(values: np.ndarray) -> bool:
        before, after = values[max(k - 20, 1):k], values[k + 1:k + 1 + soon]
        spread = before.std() + 1e-9
        return abs(after.mean() - before.mean()) > 5 * spread + 0.5

    assert any(moved(np.diff(s.values, prepend=s.values[0])) or moved(s.values)
               for s in mine), f"none of {len(mine)} series of {identity} moved at the onset"


def _twins(inc: Incident) -> tuple[int, int]:
    """(series with an exact twin, changing series) among pg_stat_*. A series that moves at
    only a handful of scrapes (a session seen idle in a transaction twice in half an hour)
    correlates perfectly with whatever moved at the same scrapes; that says nothing about
    copying, so a series counts as changing when it moves at 10 scrapes or more."""
    rows = [np.diff(s.values) for s in inc.series if s.name.startswith("pg_stat_")
            and np.count_nonzero(np.diff(np.diff(s.values))) >= 10]
    m = np.corrcoef(np.array(rows))
    np.fill_diagonal(m, 0.0)
    return int(np.sum(np.abs(m).max(axis=1) > 0.9999)), len(rows)


# connection_leak stops every write for a third of its window: commits, inserted and live
# tuples then move together, as PostgreSQL's own counters would
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "connection_leak"])
def test_few_postgres_series_are_copies(scenario: str, seed: int) -> None:
    twins, changing = _twins(metrics_of(scenario, seed))
    assert changing >= 15
    assert twins < 0.2 * changing, f"{twins} of {changing} changing pg_stat_* series have twins"


@pytest.mark.parametrize("scenario", FAULTY)
def test_the_seed_moves_the_incident(scenario: str) -> None:
    onsets = {metrics_of(scenario, seed).truth.onset_ms for seed in (1, 2, 3)}
    assert len(onsets) >= 2


def test_the_reporting_job_does_not_line_up_with_the_onset() -> None:
    """error_spike has no sequential scans of its own: every seq_scan step is the reporting
    job's. Over ten seeds, at most two put a scan within one step of the onset."""
    close = 0
    for seed in range(1, 11):
        inc = metrics_of("error_spike", seed)
        seq = next(s for s in inc.iter_series("pg_stat_user_tables_seq_scan")
                   if s.label("relname") == "payments")
        scans = seq.t_ms[1:][np.diff(seq.values) > 0]
        assert scans.size >= 4  # one every five minutes
        onset = inc.truth.onset_ms
        close += bool(np.any(np.abs(scans - onset) <= inc.step_ms))
    assert close <= 2


def test_idle_connections_open_lazily() -> None:
    """QueuePool opens connections on demand: a calm service rests a couple of them, not
    pool_size."""
    idle = total(metrics_of("baseline", 1), "db_client_connections_usage_connections",
                 state="idle")
    assert 1 <= np.median(idle) < KNOB_DEFAULTS["pool_size"]
