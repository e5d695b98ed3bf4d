"""Every incident of the library can be told apart from every other from the data alone.

A fingerprint is the set of revealing signals that move between the calm before the onset
and the incident (onset to recovery), read off what an investigator sees: the published
series and log lines, not the simulation. Two scenarios whose fingerprints differ in fewer
than two signals would leave an investigator guessing; baseline moves nothing.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import numpy as np
import pytest

from generator.model import Incident
from tests.conftest import BUILT_IN, cached_incident

HIST = "http_server_request_duration_seconds"
KNOWN_CLIENTS = {"payment-service", "reporting", ""}  # "": postgres_exporter sets none


def _series(inc: Incident, name: str, **labels: str) -> list:
    if not name.startswith("pg_"):  # payment-service's (card-processor's has the same names)
        labels.setdefault("job", "payment-service")
    return [s for s in inc.iter_series(name) if all(s.label(k) == v for k, v in labels.items())]


def _sum(inc: Incident, name: str, **labels: str) -> tuple[np.ndarray, np.ndarray]:
    found = _series(inc, name, **labels)
    assert found, (name, labels)
    t = found[0].t_ms
    return t, np.sum([np.interp(t, s.t_ms, s.values) for s in found], axis=0)


def _rate(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    d = np.diff(v)
    d = np.where(d < 0, v[1:], d)  # a counter that started again from zero
    return d / (np.diff(t) / 1000.0)


def _p99(inc: Incident, name: str, **labels: str) -> tuple[np.ndarray, np.ndarray]:
    buckets: dict[float, np.ndarray] = {}
    t = None
    for s in _series(inc, name + "_bucket", **labels):
        le = float(s.label("le"))
        r = _rate(s.t_ms, s.values)
        buckets[le] = buckets.get(le, 0) + r
        t = s.t_ms[1:]
    les = sorted(buckets)
    cum = np.array([buckets[le] for le in les])
    total = cum[-1]
    idx = np.argmax(cum >= 0.99 * total[None, :], axis=0)
    bounds = np.array([le if np.isfinite(le) else les[-2] * 2 for le in les])
    return t, np.where(total > 0, bounds[idx], 0.0)


class Windows:
    def __init__(self, inc: Incident) -> None:
        onset = inc.truth.onset_ms if inc.truth.onset_ms is not None else inc.duration_ms // 3
        recovery = inc.truth.recovery_ms or 2 * inc.duration_ms // 3
        self.calm = (0, onset)
        self.hot = (onset, recovery)

    def split(self, t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (v[(t >= self.calm[0]) & (t < self.calm[1])],
                v[(t >= self.hot[0]) & (t < self.hot[1])])


def _rises(factor: float, floor: float) -> Callable[[np.ndarray, np.ndarray], bool]:
    def moved(calm: np.ndarray, hot: np.ndarray) -> bool:
        return hot.size > 0 and hot.mean() > factor * max(calm.mean(), floor)
    return moved


def _appears(calm: np.ndarray, hot: np.ndarray) -> bool:
    return hot.size > 0 and hot.max() > 0 and calm.max(initial=0) == 0


def _log_lines(inc: Incident, text: str, w: Windows) -> tuple[int, int]:
    calm = hot = 0
    for st in inc.log_streams:
        for t, line in zip((st.t_ns // 1_000_000).tolist(), st.lines):
            if text in line:
                calm += w.calm[0] <= t < w.calm[1]
                hot += w.hot[0] <= t < w.hot[1]
    return calm, hot


def fingerprint(inc: Incident) -> frozenset[str]:
    w = Windows(inc)
    moved: set[str] = set()

    def check(name: str, tv: tuple[np.ndarray, np.ndarray],
              rule: Callable[[np.ndarray, np.ndarray], bool]) -> None:
        if rule(*w.split(*tv)):
            moved.add(name)

    post = {"http_request_method": "POST"}
    check("p99 POST /payment", _p99(inc, HIST, **post), _rises(1.5, 0.01))
    for route in ("/payment", "/payments/{payment_id}"):
        five = [s for s in _series(inc, HIST + "_count", http_route=route)
                if s.label("http_response_status_code").startswith("5")]
        t, _ = _sum(inc, HIST + "_count", http_route=route)
        v = np.sum([np.interp(t, s.t_ms, s.values) for s in five], axis=0) if five else \
            np.zeros(t.shape)
        check(f"5xx on {route}", (t[1:], _rate(t, v)), _rises(10.0, 0.01))
    check("requests in flight", _sum(inc, "http_server_active_requests"), _rises(3.0, 0.5))
    check("pool connections used", _sum(inc, "db_client_connections_usage_connections",
                                        state="used"), _rises(3.0, 1.0))
    check("pool connections idle (drained)", _sum(
        inc, "db_client_connections_usage_connections", state="idle"),
        lambda c, h: h.size > 0 and h.min() == 0 and c.min() > 0 and h.mean() < 0.5 * c.mean())
    check("requests waiting for a connection", _sum(
        inc, "db_client_connection_pending_requests"), _rises(3.0, 0.5))
    t, v = _sum(inc, "db_client_connection_timeouts_total")
    check("pool timeouts", (t[1:], _rate(t, v)), _appears)
    t, v = _sum(inc, "pg_stat_user_tables_seq_scan", relname="payments")
    check("seq scans of payments", (t[1:], _rate(t, v)), _rises(5.0, 0.05))
    t, v = _sum(inc, "pg_stat_user_tables_seq_scan", relname="ledger_entries")
    check("seq scans of ledger_entries", (t[1:], _rate(t, v)), _appears)
    check("idle in transaction", _sum(inc, "pg_stat_activity_count", datname="payments",
                                      state="idle in transaction"), _rises(3.0, 1.0))
    lock = [s for s in _series(inc, "pg_stat_activity_count") if s.label("wait_event_type")
            == "Lock"]
    t = lock[0].t_ms
    check("sessions waiting on a lock", (t, np.sum([s.values for s in lock], axis=0)),
          _appears)
    check("ACCESS EXCLUSIVE locks", _sum(inc, "pg_locks_count", mode="accessexclusivelock"),
          _appears)
    others = [s for s in _series(inc, "pg_stat_activity_count")
              if s.label("application_name") not in KNOWN_CLIENTS]
    if others:
        check("sessions of another client", (others[0].t_ms, np.sum(
            [s.values for s in others], axis=0)), _appears)
    check("backends", _sum(inc, "pg_stat_database_numbackends"), _rises(3.0, 5.0))
    t, v = _sum(inc, "pg_stat_database_blks_read", datname="payments")
    check("blocks read from disk", (t[1:], _rate(t, v)), _rises(5.0, 1.0))
    t, v = _sum(inc, "pg_stat_database_temp_bytes", datname="payments")
    check("temp files", (t[1:], _rate(t, v)), _appears)
    t, v = _sum(inc, "pg_stat_database_tup_inserted", datname="payments")
    check("inserts stop", (t[1:], _rate(t, v)),
          lambda c, h: h.size > 0 and h.mean() < 0.2 * c.mean())
    t, v = _sum(inc, "pg_stat_user_tables_idx_scan", relname="payments")
    tr, req = _sum(inc, HIST + "_count")
    per_req = _rate(t, v) / np.maximum(np.interp(t[1:], tr[1:], _rate(tr, req)), 1e-9)
    check("index lookups per request", (t[1:], per_req), _rises(2.0, 0.1))
    check("oldest transaction", _sum(inc, "pg_stat_activity_max_tx_duration",
                                     datname="payments"), _rises(5.0, 1.0))
    check("card processor p99", _p99(inc, "http_client_request_duration_seconds"),
          _rises(3.0, 0.01))
    five = [s for s in _series(inc, "http_client_request_duration_seconds_count")
            if s.label("http_response_status_code").startswith("5")]
    if five:
        check("card processor errors", (five[0].t_ms[1:], _rate(five[0].t_ms, five[0].values)),
              _appears)
    rss = _series(inc, "process_resident_memory_bytes")[0]
    check("resident memory", (rss.t_ms, rss.values), _rises(1.3, 1e6))
    start = _series(inc, "process_start_time_seconds")[0]
    check("process restarts", (start.t_ms[1:], (np.diff(start.values) != 0).astype(float)),
          _appears)
    versions = {s.label("service_version") for s in _series(inc, "target_info")}
    if len(versions) > 1:
        moved.add("a new service.version")
    up = _series(inc, "up", job="payment-service")[0]
    check("failed scrapes", (up.t_ms, 1.0 - up.values), _appears)
    for text, name in (("still waiting for", "lock waits logged"),
                       ("No space left on device", "disk full logged"),
                       ("connection slots are reserved", "refused connections logged"),
                       ("temporary file", "temp files logged"),
                       ("QueuePool limit", "pool timeouts logged"),
                       ("PaymentGatewayError", "gateway errors logged"),
                       ("duration:", "slow statements logged")):
        calm, hot = _log_lines(inc, text, w)
        if hot > 0 and hot > 10 * calm:
            moved.add(name)
    return frozenset(moved)


@functools.cache
def fingerprints() -> dict[str, frozenset[str]]:
    return {name: fingerprint(cached_incident(name)) for name in BUILT_IN}


def test_baseline_moves_nothing() -> None:
    assert fingerprints()["baseline"] == frozenset()


@pytest.mark.parametrize("a,b", list(itertools.combinations(BUILT_IN, 2)))
def test_every_two_scenarios_differ_in_two_signals_or_more(a: str, b: str) -> None:
    fa, fb = fingerprints()[a], fingerprints()[b]
    assert len(fa ^ fb) >= 2, f"{a} and {b} differ only in {sorted(fa ^ fb)}; shared: " \
                              f"{sorted(fa & fb)}"


def test_the_library_holds_twelve_incidents() -> None:
    from generator import SCENARIOS

    assert set(BUILT_IN) == set(SCENARIOS) and len(SCENARIOS) >= 12
