"""The reference investigator: transparent PromQL rules, run as an evaluate subprocess.

It sees only what any investigator sees: the stack's URLs, the window and the run label
in its environment (see :mod:`replayer.evaluate`). It never reads the ground truth. It
asks Prometheus a fixed list of questions, and the first rule whose evidence holds names
the root cause; the other rules that held follow as ranked candidates. It is a baseline
to beat, not a diagnosis engine: it knows the kinds of evidence each fault leaves, and a
harder library (combined faults, red herrings) fools it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import requests

from .api import scope_promql

OWN_SERVICE = "payment-service"
USUAL_CLIENTS = {OWN_SERVICE, "reporting", ""}  # "": postgres_exporter sets no name


@dataclass(frozen=True)
class Window:
    prometheus: str
    start: float  # unix seconds
    end: float
    step: float
    labels: dict[str, str]


def _parse_time(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def window_from_env(env: dict[str, str]) -> Window:
    labels = json.loads(env.get("REPLAYER_RUN_LABELS", "{}"))
    return Window(env["PROMETHEUS_URL"].rstrip("/"), _parse_time(env["INCIDENT_START"]),
                  _parse_time(env["INCIDENT_END"]), float(env.get("INCIDENT_STEP_SECONDS", 15)),
                  labels)


class Prom:
    """Range queries over the window, each scoped to the run's labels (every selector is
    written with braces, so the scoping reaches it)."""

    def __init__(self, w: Window) -> None:
        self.w = w
        self.asked: list[str] = []

    def series(self, query: str) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
        q = scope_promql(query, self.w.labels)
        self.asked.append(q)
        params: dict[str, str | float] = {"query": q, "start": self.w.start,
                                          "end": self.w.end, "step": self.w.step}
        r = requests.get(f"{self.w.prometheus}/api/v1/query_range", params=params, timeout=60)
        r.raise_for_status()
        out = []
        for s in r.json()["data"]["result"]:
            pts = [(float(t), float(v)) for t, v in s["values"] if v not in ("NaN", "+Inf",
                                                                               "-Inf")]
            if pts:
                t, v = np.array(pts).T
                out.append((s["metric"], t, v))
        return out

    def one(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        got = self.series(query)
        if not got:
            return np.zeros(0), np.zeros(0)
        _, t, v = got[0]
        return t, v


@dataclass
class Finding:
    component: str
    kind: str
    onset: float | None
    why: str


def _calm(t: np.ndarray, w: Window, share: float = 0.15) -> np.ndarray:
    """The first part of the window, taken as the service's usual state."""
    return t < w.start + share * (w.end - w.start)


def _first_above(t: np.ndarray, v: np.ndarray, level: float) -> float | None:
    above = np.flatnonzero(v > level)
    return float(t[above[0]]) if above.size else None


def _rises(p: Prom, query: str, factor: float, floor: float) -> float | None:
    """When ``query`` first rose above ``factor`` times its calm level (None: it did not)."""
    t, v = p.one(query)
    if t.size == 0:
        return None
    calm = _calm(t, p.w)
    base = max(float(v[calm].mean()) if calm.any() else 0.0, floor)
    return _first_above(t, v, factor * base)


def _appears(p: Prom, query: str) -> tuple[float, dict[str, str]] | None:
    """The earliest series of ``query`` that was zero in the calm part and then was not."""
    best = None
    for metric, t, v in p.series(query):
        calm = _calm(t, p.w)
        if calm.any() and v[calm].max() > 0:
            continue
        at = _first_above(t, v, 0.0)
        if at is not None and (best is None or at < best[0]):
            best = (at, metric)
    return best


def rules() -> list[Callable[[Prom], Finding | None]]:
    def lock(p: Prom) -> Finding | None:
        got = _appears(p, 'sum by (application_name) (pg_stat_activity_count{datname='
                          '"payments", wait_event_type="Lock"})')
        if got is None:
            return None
        waiting = [m.get("application_name", "") for m, _, v in p.series(
            'max by (application_name) (pg_stat_activity_count{datname="payments", '
            'wait_event_type="Lock"})') if v.max() > 0]
        culprit = next((a for a in waiting if a not in USUAL_CLIENTS), "postgres")
        return Finding(culprit, "lock_contention", got[0], "sessions wait on a lock")

    def new_client(p: Prom) -> Finding | None:
        got = _appears(p, 'sum by (application_name) (pg_stat_activity_count{datname='
                          '"payments"})')
        if got is None:
            return None
        onset, metric = got
        name = metric.get("application_name", "")
        if name in USUAL_CLIENTS:
            return None
        _, share = p.one("sum(pg_stat_database_numbackends{job=\"postgres\"}) / "
                          "max(pg_settings_max_connections{job=\"postgres\"})")
        if share.size and share.max() > 0.9:
            return Finding(name, "connection_slots_exhausted", onset,
                           f"{name} holds nearly every connection slot")
        if _rises(p, 'rate(pg_stat_database_temp_bytes{datname="payments"}[5m])', 10.0,
                  1.0) is not None:
            return Finding(name, "noisy_neighbour", onset,
                           f"{name} appeared and temp files grew")
        return None

    def disk(p: Prom) -> Finding | None:
        t, v = p.one('rate(pg_stat_database_tup_inserted{datname="payments"}[1m])')
        if t.size == 0:
            return None
        calm = _calm(t, p.w)
        base = float(v[calm].mean()) if calm.any() else 0.0
        if base <= 0:
            return None
        stopped = _first_above(t, (v < 0.1 * base).astype(float), 0.5)
        if stopped is None:
            return None
        errors = _rises(p, 'sum(rate(http_server_request_duration_seconds_count{job='
                           '"payment-service", http_route="/payment", '
                           'http_response_status_code=~"5.."}[1m])) or vector(0)', 10.0, 0.01)
        if errors is None:
            return None
        # a full disk fails writes only: reads by primary key still answer
        reads_fail = _rises(p, 'sum(rate(http_server_request_duration_seconds_count{job='
                               '"payment-service", http_route="/payments/{payment_id}", '
                               'http_response_status_code=~"5.."}[1m])) or vector(0)', 10.0,
                            0.01)
        if reads_fail is not None:
            return None
        return Finding("postgres", "disk_full", stopped, "inserts stopped while POST failed "
                                                          "and GET did not")

    def seq_scans(p: Prom) -> Finding | None:
        at = _rises(p, 'rate(pg_stat_user_tables_seq_scan{relname="payments"}[1m])', 5.0, 0.05)
        return None if at is None else Finding("postgres", "missing_index", at,
                                               "sequential scans of payments")

    def card(p: Prom) -> Finding | None:
        errors = _appears(p, 'sum by (server_address) (rate(http_client_request_duration_'
                             'seconds_count{http_response_status_code=~"5.."}[1m]))')
        if errors is not None:
            return Finding(errors[1].get("server_address", "upstream"), "upstream_errors",
                           errors[0], "an upstream answers 5xx")
        at = _rises(p, 'histogram_quantile(0.99, sum by (le) (rate(http_client_request_'
                       'duration_seconds_bucket{}[1m])))', 5.0, 0.01)
        if at is None:
            return None
        names = [m.get("server_address", "upstream") for m, _, _ in p.series(
            "sum by (server_address) (rate(http_client_request_duration_seconds_count{}[1m]))")]
        return Finding(names[0] if names else "upstream", "upstream_latency", at,
                       "an upstream answers slowly")

    def restarts(p: Prom) -> Finding | None:
        t, v = p.one(f'changes(process_start_time_seconds{{job="{OWN_SERVICE}"}}[2m])')
        at = _first_above(t, v, 0.0) if t.size else None
        if at is None:
            return None
        _, rss = p.one(f'process_resident_memory_bytes{{job="{OWN_SERVICE}"}}')
        if rss.size and rss.max() > 350e6:
            grew = _rises(p, f'process_resident_memory_bytes{{job="{OWN_SERVICE}"}}', 1.15,
                          1e6)
            return Finding(OWN_SERVICE, "memory_leak", grew or at,
                           "memory grew until the process restarted")
        per_request = _rises(p, 'sum(rate(pg_stat_user_tables_idx_scan{relname="payments"}'
                                '[2m])) / sum(rate(http_server_request_duration_seconds_count'
                                f'{{job="{OWN_SERVICE}"}}[2m]))', 2.0, 0.1)
        if per_request is not None:
            return Finding(OWN_SERVICE, "deploy_regression", at,
                           "a restart onto a version that queries more per request")
        return None

    def pool(p: Prom) -> Finding | None:
        at = _rises(p, f'rate(db_client_connection_timeouts_total{{job="{OWN_SERVICE}"}}[1m])',
                    1.0, 0.001)
        if at is None:
            return None
        _, age = p.one('max(pg_stat_activity_max_tx_duration{datname="payments", '
                       f'application_name="{OWN_SERVICE}", state="idle in transaction"}})')
        if age.size and age.max() > 60:
            leak = _rises(p, 'pg_stat_activity_count{datname="payments", application_name='
                             f'"{OWN_SERVICE}", state="idle in transaction"}}', 3.0, 1.0)
            return Finding(OWN_SERVICE, "connection_leak", leak or at,
                           "connections stay idle in transaction and age")
        return Finding(OWN_SERVICE, "connection_pool_exhaustion", at, "the pool times out")

    return [lock, new_client, disk, seq_scans, card, restarts, pool]


def investigate(w: Window) -> dict[str, object]:
    p = Prom(w)
    found = [f for f in (rule(p) for rule in rules()) if f is not None]

    def iso(ts: float | None) -> str | None:
        return None if ts is None else dt.datetime.fromtimestamp(
            ts, tz=dt.timezone.utc).isoformat().replace("+00:00", "Z")

    if not found:
        return {"root_cause": {"component": "none", "kind": "none"}, "onset": None,
                "candidates": [], "evidence": p.asked}
    first = found[0]
    return {"root_cause": {"component": first.component, "kind": first.kind},
            "onset": iso(first.onset),
            "candidates": [{"component": f.component, "kind": f.kind, "why": f.why}
                           for f in found],
            "evidence": p.asked}


def main() -> int:
    try:
        w = window_from_env(dict(os.environ))
    except KeyError as exc:
        print(f"replayer investigate: {exc.args[0]} is not set; run it under "
              "`replayer evaluate`, which sets PROMETHEUS_URL, INCIDENT_START and "
              "INCIDENT_END", file=sys.stderr)
        return 2
    print(json.dumps(investigate(w)))
    return 0
