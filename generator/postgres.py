"""postgres_exporter series (default collectors), derived from the same traffic."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .simulate import (
    ERR_POOL_TIMEOUT,
    GET_PAYMENT,
    NS_PER_MS,
    POST_PAYMENT,
    StepState,
    Traffic,
)

if TYPE_CHECKING:
    from .metrics import _Builder

DATABASES = (("payments", "16384"), ("postgres", "5"))
ROWS_PER_PAGE = 60
LIVE_ROWS_AT_START = 1_250_000


def postgres_series(b: _Builder, traffic: Traffic, idx: np.ndarray, state: StepState,
                    knobs: dict[str, float], rng: np.random.Generator) -> None:
    from .metrics import PG_JOB, PG_LOCK_MODES, PG_STATES

    n = b.t_ms.shape[0]
    job = PG_JOB

    def counter(mask: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = None if weights is None else weights[mask]
        return np.cumsum(np.bincount(idx[mask], weights=w, minlength=n)[:n]).astype(float)

    def gauge(per_step: np.ndarray) -> np.ndarray:
        return np.concatenate([per_step[:1], per_step])

    b.family("pg_up", "gauge", "Whether the last scrape of metrics from PostgreSQL was able to "
             "connect to the server (1 for yes, 0 for no).")
    b.add("pg_up", job, b.const(1))

    ran_select = traffic.used_db & (traffic.error != ERR_POOL_TIMEOUT)
    slow = state.fault == "slow_query"
    seq = ran_select & (traffic.route == POST_PAYMENT) & (state.severity[_step(traffic, state)]
                                                          > 0.05) & slow
    inserted = traffic.insert_ns > 0
    live_rows = LIVE_ROWS_AT_START + counter(inserted)

    # pg_stat_activity: connections of the pool by state, plus the exporter's own session.
    busy = gauge(state.db_busy)
    idle_tx = gauge(state.db_idle_in_tx)
    opened = np.maximum(np.minimum(gauge(state.offered_load), state.pool_capacity),
                        knobs["pool_size"])
    active = np.minimum(rng.poisson(busy), opened).astype(float)
    in_tx = np.minimum(rng.poisson(idle_tx), opened - active).astype(float)
    io_wait = np.round(active * np.clip(gauge(state.severity), 0, 1) * 0.8 * slow)
    counts = {"active": active - io_wait, "idle": np.maximum(opened - active - in_tx, 0),
              "idle in transaction": in_tx}
    max_stmt, max_hold = gauge(state.max_statement_s), gauge(state.max_hold_s)
    b.family("pg_stat_activity_count", "gauge", "number of connections in this state")
    b.family("pg_stat_activity_max_tx_duration", "gauge", "max duration in seconds any active "
             "transaction has been running")
    for st in PG_STATES:
        lab = {**job, "datname": "payments", "state": st, "usename": "payments",
               "application_name": "payment-service", "backend_type": "client backend"}
        b.add("pg_stat_activity_count", lab, counts.get(st, b.const(0)))
        dur = {"active": max_stmt, "idle in transaction": max_hold + max_stmt}.get(st)
        b.add("pg_stat_activity_max_tx_duration", lab,
              np.round(dur, 6) if dur is not None else b.const(0))
    lab = {**job, "datname": "payments", "state": "active", "usename": "payments",
           "application_name": "payment-service", "backend_type": "client backend",
           "wait_event_type": "IO", "wait_event": "DataFileRead"}
    b.add("pg_stat_activity_count", lab, io_wait)
    b.add("pg_stat_activity_max_tx_duration", lab, np.where(io_wait > 0, max_stmt, 0.0))
    lab = {**job, "datname": "postgres", "state": "active", "usename": "postgres_exporter",
           "application_name": "postgres_exporter", "backend_type": "client backend"}
    b.add("pg_stat_activity_count", lab, b.const(1))
    b.add("pg_stat_activity_max_tx_duration", lab, b.const(0.001))

    # pg_stat_user_tables for the payments table.
    tbl = {**job, "datname": "payments", "schemaname": "public", "relname": "payments"}
    analytic = np.floor(b.t_ms / 300000.0)  # a reporting job's seq scan every 5 min
    for name, help_text, values in (
        ("seq_scan", "Number of sequential scans initiated on this table", counter(seq) + analytic),
        ("seq_tup_read", "Number of live rows fetched by sequential scans",
         counter(seq, np.full(len(traffic), 1.0)) * live_rows + analytic * live_rows),
        ("idx_scan", "Number of index scans initiated on this table",
         counter(ran_select & ~seq)),
        ("n_live_tup", "Estimated number of live rows", live_rows),
        ("n_dead_tup", "Estimated number of dead rows", np.round(live_rows * 0.004)),
    ):
        mtype = "gauge" if name.startswith("n_") else "counter"
        b.family(f"pg_stat_user_tables_{name}", mtype, help_text)
        b.add(f"pg_stat_user_tables_{name}", tbl, values)

    commits = counter(traffic.used_db & (traffic.error != ERR_POOL_TIMEOUT)
                      & (traffic.status < 500))
    rollbacks = counter(traffic.used_db & (traffic.error != ERR_POOL_TIMEOUT)
                        & (traffic.status >= 500))
    seq_rows = counter(seq) * live_rows
    pages = seq_rows / ROWS_PER_PAGE
    lookups = counter(ran_select & ~seq) + counter(inserted)
    stats = {
        "numbackends": opened + 1,
        "xact_commit": commits + b.t_ms / 1000.0 * 0.2,
        "xact_rollback": rollbacks,
        "blks_read": np.round(pages * 0.35 + lookups * 0.05),
        "blks_hit": np.round(pages * 0.65 + lookups * 4.0),
        "tup_returned": seq_rows + lookups,
        "tup_fetched": counter(ran_select & (traffic.route == GET_PAYMENT)) + lookups,
        "tup_inserted": counter(inserted),
        "tup_updated": np.zeros(n), "tup_deleted": np.zeros(n), "conflicts": np.zeros(n),
        "temp_files": np.zeros(n), "temp_bytes": np.zeros(n), "deadlocks": np.zeros(n),
        "blk_read_time": np.round(pages * 0.35 * 0.08, 3),
        "blk_write_time": np.round(counter(inserted) * 0.01, 3),
    }
    for name, values in stats.items():
        mtype = "gauge" if name == "numbackends" else "counter"
        b.family(f"pg_stat_database_{name}", mtype, f"pg_stat_database column {name}")
        for datname, datid in DATABASES:
            lab = {**job, "datname": datname, "datid": datid}
            b.add(f"pg_stat_database_{name}", lab,
                  values if datname == "payments" else _quiet(name, b.t_ms))

    b.family("pg_locks_count", "gauge", "Number of locks")
    held = {"accesssharelock": active + in_tx, "rowexclusivelock": in_tx +
            np.round(active * 0.3)}
    for mode in PG_LOCK_MODES:
        b.add("pg_locks_count", {**job, "datname": "payments", "mode": mode},
              held.get(mode, b.const(0)))
    b.family("pg_settings_max_connections", "gauge", "Sets the maximum number of concurrent "
             "connections.")
    b.add("pg_settings_max_connections", job, b.const(100))
    b.family("pg_settings_statement_timeout_seconds", "gauge", "Sets the maximum allowed duration "
             "of any statement. [Units converted to seconds.]", "seconds")
    b.add("pg_settings_statement_timeout_seconds", job,
          b.const(knobs["statement_timeout_ms"] / 1000.0))
    b.family("pg_database_size_bytes", "gauge", "Disk space used by the database", "bytes")
    b.add("pg_database_size_bytes", {**job, "datname": "payments"}, np.round(live_rows * 412.0))
    b.add("pg_database_size_bytes", {**job, "datname": "postgres"}, b.const(7_631_727))


def _quiet(name: str, t_ms: np.ndarray) -> np.ndarray:
    """The near-idle `postgres` database: only the exporter's own queries."""
    if name == "numbackends":
        return np.ones(t_ms.shape)
    if name in ("xact_commit", "tup_returned", "tup_fetched", "blks_hit"):
        per_s = {"xact_commit": 0.27, "tup_returned": 31.0, "tup_fetched": 9.0,
                 "blks_hit": 12.0}[name]
        return np.floor(t_ms / 1000.0 * per_s)
    return np.zeros(t_ms.shape)


def _step(traffic: Traffic, state: StepState) -> np.ndarray:
    return np.minimum(traffic.start_ns // (state.step_ms * NS_PER_MS), state.severity.shape[0] - 1)
