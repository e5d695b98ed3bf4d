"""postgres_exporter series (default collectors), from the simulated statements.

Each counter comes from its own process: index lookups touch a few buffers, a sequential
scan reads the table through a small ring (a hit ratio that falls while scans run), read
time is reads times a per-read latency that wanders, and other sessions add their own
transactions. Gauges are pg_stat_activity as it would be read at the scrape instant.
"""

from __future__ import annotations

import numpy as np

from .background import (
    CHECKPOINT_SPREAD,
    CHECKPOINT_TIMEOUT_S,
    Background,
    background,
    with_runs,
)
from .queue import covering
from .scenarios import PhasePlan
from .series import PG_JOB, SeriesBuilder
from .simulate import (
    ERR_DISK_FULL,
    ERR_NONE,
    ERR_STATEMENT_TIMEOUT,
    GET_PAYMENT,
    NS_PER_S,
    POST_PAYMENT,
    Simulation,
)

DATABASES = (("payments", "16384"), ("postgres", "5"))
ROWS_PER_PAGE = 60
LIVE_ROWS_AT_START = 1_250_000
PG_STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)",
             "fastpath function call", "disabled")
PG_LOCK_MODES = ("accessexclusivelock", "accesssharelock", "exclusivelock", "rowexclusivelock",
                 "rowsharelock", "sharelock", "sharerowexclusivelock",
                 "shareupdateexclusivelock", "sireadlock")
APP_SESSION = {"datname": "payments", "usename": "payments",
               "application_name": "payment-service", "backend_type": "client backend"}
REPORT_SESSION = {"datname": "payments", "usename": "reporting",
                  "application_name": "reporting", "backend_type": "client backend"}
# the clients some incidents bring (each only where it takes part)
ANALYST_SESSION = {"datname": "payments", "usename": "analyst", "application_name": "psql",
                   "backend_type": "client backend"}
MIGRATION_SESSION = {"datname": "payments", "usename": "payments",
                     "application_name": "alembic", "backend_type": "client backend"}
BATCH_SESSION = {"datname": "payments", "usename": "etl", "application_name": "batch-export",
                 "backend_type": "client backend"}
DASHBOARD_SESSION = {"datname": "payments", "usename": "metabase",
                     "application_name": "metabase", "backend_type": "client backend"}
LEDGER_ROWS = 41_800_000  # ledger_entries: what the dashboard's reports scan
LEDGER_PAGES = 612_000


def postgres_series(b: SeriesBuilder, sim: Simulation, knobs: dict[str, float],
                    plan: PhasePlan | None, rng: np.random.Generator,
                    manual_runs: list[float] | None = None) -> None:
    """``manual_runs``: starts (s) of extra runs of the reporting job (a red herring)."""
    traffic = sim.traffic
    duration_s = float(b.window_ms) / 1000.0
    bg = b.carry.extras.get("background") if b.carry is not None else None
    if not isinstance(bg, Background):  # else drawn once for the whole of a long window
        bg = background(duration_s, rng)
        if manual_runs:
            bg = with_runs(bg, manual_runs)
    b.family("pg_up", "gauge", "Whether the last scrape of metrics from PostgreSQL was able to "
             "connect to the server (1 for yes, 0 for no).")
    b.add("pg_up", PG_JOB, b.const(1))

    ran = traffic.select_end_ns > traffic.select_start_ns
    post, get = traffic.route == POST_PAYMENT, traffic.route == GET_PAYMENT
    seq = ran & post & _scanning(sim, plan, traffic.start_ns)
    sel_idx = b.index(traffic.select_end_ns)
    inserted = (traffic.insert_end_ns > traffic.insert_start_ns) & \
        (traffic.error != ERR_DISK_FULL)
    ins_idx = b.index(traffic.insert_end_ns)
    live_rows = b.start("live_rows", LIVE_ROWS_AT_START) + b.counter(ins_idx[inserted])
    b.end("live_rows", live_rows[-1])
    scan_idx = _report_index(b, bg)

    scanning = _activity(b, sim, bg, seq, rng)
    scans = b.counter(sel_idx[seq]) + b.counter(scan_idx)
    # each scan reads the rows the table holds then
    rows_scanned = np.cumsum(np.diff(scans, prepend=0.0) * live_rows)
    # A scan of 1.25 M rows is planned as a Parallel Seq Scan with 2 workers; each process
    # that takes part counts a scan, and workers are only there while max_parallel_workers
    # (8) has some free: the more scans run at once, the fewer get theirs.
    per_step = np.diff(scans, prepend=0.0).astype(np.int64)
    granted = rng.binomial(2 * per_step, np.minimum(1.0, 4.0 / (scanning + 1.0)))
    scan_count = np.cumsum(per_step + granted).astype(np.float64)
    lookups = ran & ~seq
    found = get & ran & (traffic.status == 200)
    # the N+1 lookups by primary key (deploy_regression), counted at the request's INSERT
    n_plus = np.diff(traffic.nplus_offset).astype(np.float64)
    tbl = {**PG_JOB, "datname": "payments", "schemaname": "public", "relname": "payments"}
    for name, help_text, values in (
        ("seq_scan", "Number of sequential scans initiated on this table", scan_count),
        ("seq_tup_read", "Number of live rows fetched by sequential scans", rows_scanned),
        ("idx_scan", "Number of index scans initiated on this table",
         b.counter(sel_idx[lookups]) + b.counter(ins_idx, n_plus)),
        ("n_live_tup", "Estimated number of live rows", live_rows),
        ("n_dead_tup", "Estimated number of dead rows", b.const(1834)),
    ):
        mtype = "gauge" if name.startswith("n_") else "counter"
        b.family(f"pg_stat_user_tables_{name}", mtype, help_text)
        b.add(f"pg_stat_user_tables_{name}", tbl, values)

    reports = _ledger(b, sim, rng)
    _database(b, sim, bg, rng, seq, sel_idx, ins_idx, inserted, found, scans, rows_scanned,
              reports, b.counter(ins_idx, n_plus), np.minimum(2 * scanning, 8))
    _locks_and_settings(b, sim, knobs, live_rows)


def _ledger(b: SeriesBuilder, sim: Simulation, rng: np.random.Generator,
            ) -> dict[str, np.ndarray]:
    """ledger_entries, which only the finance dashboard and other sessions read; returns
    what its reports (noisy_neighbour) add to the database's counters, by scrape."""
    n = b.n
    step_s = sim.step_ms / 1000.0
    lookups = np.cumsum(np.concatenate([[0], rng.poisson(0.8 * step_s, n - 1)])) + \
        b.start("ledger_lookups", 0.0)
    b.end("ledger_lookups", lookups[-1])
    out = {k: np.zeros(n) for k in ("scans", "rows", "reads", "read_ms", "temp_files",
                                    "temp_bytes", "hits")}
    rep = sim.others.reports if sim.others is not None else None
    if rep is not None:
        start, end, _, temp = rep
        idx = b.index(np.rint(end * NS_PER_S).astype(np.int64))  # counted when each ends
        k = start.shape[0]
        # a Parallel Seq Scan with 2 workers: three processes count a scan each
        # a Parallel Seq Scan: the leader and the workers it was granted count a scan each
        out["scans"] = b.counter(idx, np.asarray(1.0 + rng.binomial(2, 0.8, k), np.float64))
        out["rows"] = b.counter(idx, LEDGER_ROWS + np.cumsum(rng.poisson(900.0, k)))
        cold = rng.uniform(0.75, 0.95, k)  # what shared buffers did not hold
        out["reads"] = b.counter(idx, np.round(LEDGER_PAGES * cold))
        out["hits"] = b.counter(idx, np.round(LEDGER_PAGES * (1.0 - cold)))
        out["read_ms"] = b.counter(idx, LEDGER_PAGES * cold * 0.085 * np.exp(
            0.2 * rng.standard_normal(k)))
        out["temp_files"] = b.counter(idx, np.asarray(2.0 + rng.binomial(2, 0.5, k),
                                                                np.float64))  # sort runs
        out["temp_bytes"] = b.counter(idx, temp)
    tbl = {**PG_JOB, "datname": "payments", "schemaname": "public", "relname": "ledger_entries"}
    for name, values in (("seq_scan", out["scans"]), ("seq_tup_read", out["rows"]),
                         ("idx_scan", lookups.astype(np.float64)),
                         ("n_live_tup", LEDGER_ROWS + np.floor(lookups * 0.3)),
                         ("n_dead_tup", b.const(21_406))):
        b.add(f"pg_stat_user_tables_{name}", tbl, values)
    return out


def _scanning(sim: Simulation, plan: PhasePlan | None, t_ns: np.ndarray) -> np.ndarray:
    """Statements that ran while the index was missing (slow_query only)."""
    plan = sim.plan_of("slow_query")
    if plan is None:
        return np.zeros(t_ns.shape, bool)
    duration_ns = sim.duration_ms * 1_000_000
    return (t_ns >= plan.onset * duration_ns) & (t_ns < plan.recovered * duration_ns)


def _activity(b: SeriesBuilder, sim: Simulation, bg: Background, seq: np.ndarray,
              rng: np.random.Generator) -> np.ndarray:
    """pg_stat_activity at each scrape; returns how many scans of the app ran then."""
    inst, traffic = sim.instants, sim.traffic
    at_ns = b.t_ms * 1_000_000
    scanning = covering(traffic.select_start_ns[seq], traffic.select_end_ns[seq], at_ns)
    io_wait = rng.binomial(scanning, 0.7)  # a scan spends most of its time in DataFileRead
    running = inst.in_statement.astype(np.float64)
    in_tx = inst.in_transaction.astype(np.float64)
    lock_wait, lock_age = _lock_waiters(sim, at_ns)
    counts = {"active": running - io_wait - lock_wait, "idle in transaction": in_tx - running,
              "idle": (inst.used + inst.idle) - in_tx}
    ages = {"active": inst.oldest_statement_s, "idle in transaction": inst.oldest_idle_tx_s}
    b.family("pg_stat_activity_count", "gauge", "number of connections in this state")
    b.family("pg_stat_activity_max_tx_duration", "gauge", "max duration in seconds any active "
             "transaction has been running")
    for st in PG_STATES:
        lab = {**PG_JOB, **APP_SESSION, "state": st}
        b.add("pg_stat_activity_count", lab, counts.get(st, b.const(0)))
        b.add("pg_stat_activity_max_tx_duration", lab, np.round(ages.get(st, b.const(0)), 6))
    lab = {**PG_JOB, **APP_SESSION, "state": "active", "wait_event_type": "IO",
           "wait_event": "DataFileRead"}
    b.add("pg_stat_activity_count", lab, io_wait.astype(np.float64))
    # the oldest running statement is not always the one waiting on a read at that instant
    oldest_waits = rng.random(b.n) < 0.7
    wait_age = np.where(oldest_waits, inst.oldest_statement_s,
                        inst.oldest_statement_s * rng.uniform(0.2, 1.0, b.n))
    b.add("pg_stat_activity_max_tx_duration", lab, np.where(io_wait > 0, np.round(wait_age, 6),
                                                            0.0))
    # each scan's Parallel Seq Scan has up to 2 workers of its own (max_parallel_workers 8
    # for the server): backends of the same database and client, active while it runs
    workers = np.minimum(2 * scanning, 8).astype(np.float64)
    lab = {**PG_JOB, **APP_SESSION, "state": "active", "backend_type": "parallel worker"}
    b.add("pg_stat_activity_count", lab, workers)
    b.add("pg_stat_activity_max_tx_duration", lab, np.where(
        workers > 0, np.round(inst.oldest_statement_s * rng.uniform(0.3, 1.0, b.n), 6), 0.0))
    lab = {**PG_JOB, **APP_SESSION, "state": "active", "wait_event_type": "Lock",
           "wait_event": "relation"}
    b.add("pg_stat_activity_count", lab, lock_wait)
    b.add("pg_stat_activity_max_tx_duration", lab, np.round(lock_age, 6))
    _other_sessions(b, sim)
    t_s = b.t_ms / 1000.0
    report_on = covering(bg.scan_start_s, bg.scan_end_s, t_s)
    age = np.zeros(b.n)
    if bg.scan_start_s.size:  # a short window may hold no run of the job
        first = np.searchsorted(bg.scan_start_s, t_s, side="right") - 1
        age = np.where(report_on > 0, t_s - bg.scan_start_s[np.maximum(first, 0)], 0.0)
    # the job connects for each run (cron), so it has a session only while it scans
    lab = {**PG_JOB, **REPORT_SESSION, "state": "active"}
    b.add("pg_stat_activity_count", lab, report_on.astype(np.float64))
    b.add("pg_stat_activity_max_tx_duration", lab, np.round(age, 6))
    # the exporter's own two connections to the database of its DSN (payments, as the
    # compose stack configures it; no application_name, so no label): one runs this very
    # query, the other waits for the next scrape (as postgres_exporter 0.11 counts them live)
    lab = {**PG_JOB, "datname": "payments", "state": "active", "usename": "payments",
           "backend_type": "client backend"}
    b.add("pg_stat_activity_count", lab, b.const(1))
    b.add("pg_stat_activity_max_tx_duration", lab,
          np.round(0.0011 * np.exp(0.3 * rng.standard_normal(b.n)), 6))
    lab = {**lab, "state": "idle"}
    b.add("pg_stat_activity_count", lab, b.const(1))
    b.add("pg_stat_activity_max_tx_duration", lab, b.const(0))
    return scanning.astype(np.float64)


def _lock_waiters(sim: Simulation, at_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """payment-service statements waiting behind the migration's lock at each instant, and
    the age of the oldest one's transaction."""
    o = sim.others
    if o is None or o.lock is None:
        return np.zeros(at_ns.shape), np.zeros(at_ns.shape)
    t = sim.traffic
    _, lock_from, lock_until = (int(x * NS_PER_S) for x in o.lock)
    ran = t.select_end_ns > t.select_start_ns
    w = ran & (t.select_start_ns >= lock_from) & (t.select_start_ns < lock_until)
    starts = np.sort(t.select_start_ns[w])
    count = covering(starts, np.full(starts.shape[0], lock_until), at_ns).astype(np.float64)
    first = np.searchsorted(starts, lock_from, side="left")
    oldest = starts[first] if first < starts.shape[0] else lock_until
    # the transaction began at the checkout, a fraction of a millisecond before its SELECT
    age = np.where(count > 0, (at_ns - oldest) / NS_PER_S + 0.0004, 0.0)
    return count, age


def _other_sessions(b: SeriesBuilder, sim: Simulation) -> None:
    """The sessions of clients an incident brings: the analyst's idle transaction and the
    migration queued behind it, the batch job's pool, the dashboard's reports."""
    t_s = b.t_ms / 1000.0
    o = sim.others
    sessions: list[tuple[dict[str, str], np.ndarray, np.ndarray]] = []
    if o is not None and o.lock is not None:
        began, queued, ended = o.lock
        holding = (t_s >= began) & (t_s < ended)
        sessions.append(({**ANALYST_SESSION, "state": "idle in transaction"},
                         holding.astype(np.float64), np.where(holding, t_s - began, 0.0)))
        waiting = (t_s >= queued) & (t_s < ended)
        sessions.append(({**MIGRATION_SESSION, "state": "active", "wait_event_type": "Lock",
                          "wait_event": "relation"}, waiting.astype(np.float64),
                         np.where(waiting, t_s - queued, 0.0)))
    if sim.other_sessions is not None:
        sessions.append(({**BATCH_SESSION, "state": "idle"}, sim.other_sessions,
                         np.zeros(b.n)))
    if o is not None and o.reports is not None:
        start, end, _, _ = o.reports
        running = covering(start, end, t_s).astype(np.float64)
        # the oldest report still running: the earliest start whose end is still ahead
        age = np.zeros(b.n)
        for k, tk in enumerate(t_s.tolist()):
            live = (start <= tk) & (end > tk)
            if live.any():
                age[k] = tk - float(start[live].min())
        sessions.append(({**DASHBOARD_SESSION, "state": "active"}, running, age))
    for lab, count, age in sessions:
        b.add("pg_stat_activity_count", {**PG_JOB, **lab}, count)
        b.add("pg_stat_activity_max_tx_duration", {**PG_JOB, **lab}, np.round(age, 6))


def _report_index(b: SeriesBuilder, bg: Background) -> np.ndarray:
    """The scrape at which each of the reporting job's scans is counted (its end)."""
    return b.index(np.rint(bg.scan_end_s * NS_PER_S).astype(np.int64))


def _database(b: SeriesBuilder, sim: Simulation, bg: Background, rng: np.random.Generator,
              seq: np.ndarray, sel_idx: np.ndarray, ins_idx: np.ndarray, inserted: np.ndarray,
              found: np.ndarray, scans: np.ndarray, rows_scanned: np.ndarray,
              reports: dict[str, np.ndarray], n_plus: np.ndarray,
              workers: np.ndarray) -> None:
    traffic, inst, n = sim.traffic, sim.instants, b.n
    step_s = sim.step_ms / 1000.0
    ran = traffic.select_end_ns > traffic.select_start_ns
    lookups = ran & ~seq
    # other sessions: short transactions, a few index lookups each
    other_tx = np.concatenate([[0], rng.poisson(bg.other_tx_per_s * step_s, n - 1)])
    other_rows = rng.poisson(6.0 * other_tx)
    db_ok = traffic.used_db & (traffic.status < 500)
    report_idx = _report_index(b, bg)
    commits = b.counter(ins_idx[inserted & db_ok]) + np.cumsum(other_tx) + b.counter(report_idx)
    # SQLAlchemy rolls back on return a connection that only read (GET), and a failed one
    rolled = ran & ((traffic.route == GET_PAYMENT) | (traffic.error == ERR_STATEMENT_TIMEOUT)
                    | ((traffic.route == POST_PAYMENT) & (traffic.error != ERR_NONE)))
    scan_steps = np.diff(scans, prepend=0.0)
    pages = np.diff(rows_scanned, prepend=0.0) / ROWS_PER_PAGE
    # a large scan goes through a 256 kB ring; what it finds in shared buffers wanders with
    # the other scans running beside it
    hit_share = 1.0 / (1.0 + np.exp(-(-1.2 + b.ar("hit_share", rng, 0.5, 0.7))))
    lookup_blocks = b.counter(sel_idx[lookups], np.full(int(lookups.sum()), 3.0)) + \
        b.counter(ins_idx[inserted], np.full(int(inserted.sum()), 4.0))
    lookup_steps = np.diff(lookup_blocks, prepend=0.0) + 3.0 * other_rows
    lookup_reads = rng.binomial(lookup_steps.astype(np.int64), 0.004)
    seq_reads = np.round(pages * (1.0 - hit_share))
    reads = np.cumsum(seq_reads + lookup_reads) + reports["reads"]
    hits = np.cumsum(np.round(pages * hit_share) + lookup_steps - lookup_reads) + \
        reports["hits"] + 3.0 * n_plus
    read_ms = 0.021 * np.exp(b.ar("read_ms", rng, 0.35, 0.8)) * (1.0 + 0.02 * scan_steps)
    writes = rng.binomial(np.diff(b.counter(ins_idx[inserted]), prepend=0.0).astype(np.int64),
                          0.03)
    write_ms = writes * 0.06 * np.exp(0.5 * rng.standard_normal(n))
    returned = (rows_scanned + b.counter(sel_idx[found]) + np.cumsum(other_rows)
                + b.counter(report_idx, bg.joined_rows.astype(np.float64)))
    others = sim.other_sessions if sim.other_sessions is not None else np.zeros(n)
    stats = {
        # + the exporter's two connections (see _activity)
        "numbackends": inst.used + inst.idle + 2.0 + others + workers,
        "xact_commit": commits,
        "xact_rollback": b.counter(sel_idx[rolled]),
        "blks_read": reads, "blks_hit": hits,
        "tup_returned": returned + reports["rows"],
        "tup_fetched": b.counter(sel_idx[found]) + np.cumsum(rng.poisson(0.6 * other_rows))
        + n_plus,
        "tup_inserted": b.counter(ins_idx[inserted]),
        "tup_updated": np.zeros(n), "tup_deleted": np.zeros(n), "conflicts": np.zeros(n),
        "temp_files": reports["temp_files"], "temp_bytes": reports["temp_bytes"],
        "deadlocks": np.zeros(n),
        "blk_read_time": np.round(np.cumsum(seq_reads * read_ms + lookup_reads * 0.09)
                                  + reports["read_ms"], 3),
        "blk_write_time": np.round(np.cumsum(write_ms), 3),
    }
    _bgwriter(b, bg, rng, np.diff(b.counter(ins_idx[inserted]), prepend=0.0), lookup_reads,
              scan_steps, writes)
    quiet = _quiet(b, rng, step_s)
    for name, values in stats.items():
        mtype = "gauge" if name == "numbackends" else "counter"
        b.family(f"pg_stat_database_{name}", mtype, f"pg_stat_database column {name}")
        for datname, datid in DATABASES:
            lab = {**PG_JOB, "datname": datname, "datid": datid}
            b.add(f"pg_stat_database_{name}", lab,
                  values if datname == "payments" else quiet.get(name, np.zeros(n)))


def _bgwriter(b: SeriesBuilder, bg: Background, rng: np.random.Generator,
              inserts: np.ndarray, lookup_reads: np.ndarray, scan_steps: np.ndarray,
              backend_writes: np.ndarray) -> None:
    """pg_stat_bgwriter: timed checkpoints write what was dirtied since the last one,
    spread over checkpoint_completion_target of the interval."""
    t_s = b.t_ms / 1000.0
    started = np.searchsorted(bg.checkpoint_start_s, t_s, side="right")
    # inserts dirty a heap page per 60 rows and a random leaf of each index
    dirtied = np.cumsum(inserts / 60.0 + np.minimum(inserts, 900.0) * 1.7)
    spread = CHECKPOINT_SPREAD * CHECKPOINT_TIMEOUT_S
    if b.carry is None:
        cp = bg.checkpoint_start_s
        dirty_at = np.interp(cp, t_s, dirtied, left=0.0)
        batch = np.diff(dirty_at, prepend=0.0) + rng.poisson(40.0, cp.shape[0])
        per_page_ms = 0.9 * np.exp(0.3 * rng.standard_normal(cp.shape[0]))
        sync_each = 35.0 * np.exp(0.6 * rng.standard_normal(cp.shape[0]))
    else:
        cp, batch, per_page_ms, sync_each = _span_checkpoints(b, bg, t_s, dirtied, spread)
    done = np.clip((t_s[:, None] - cp[None, :]) / spread, 0.0, 1.0)
    written = np.floor(done @ batch)
    write_ms = np.round((done * spread * 1000.0 * (batch > 0)) @ np.minimum(per_page_ms, 1.0))
    finished = (done >= 1.0).astype(np.float64)
    sync_ms = np.round(finished @ sync_each)
    n = b.n
    clean = np.cumsum(rng.poisson(0.2 * (b.t_ms[1] - b.t_ms[0]) / 1000.0 * (1 + scan_steps), n))
    alloc = np.cumsum(lookup_reads + rng.poisson(32.0 * scan_steps) + rng.poisson(3.0, n))
    for name, help_text, values in (
        ("checkpoints_timed", "Number of scheduled checkpoints that have been performed",
         started.astype(np.float64) + 211.0),
        ("checkpoints_req", "Number of requested checkpoints that have been performed",
         b.const(3)),
        ("checkpoint_write_time", "Total amount of time that has been spent in the portion "
         "of checkpoint processing where files are written to disk, in milliseconds",
         write_ms + 1.9e6),
        ("checkpoint_sync_time", "Total amount of time that has been spent in the portion of "
         "checkpoint processing where files are synchronized to disk, in milliseconds",
         sync_ms + 7.1e3),
        ("buffers_checkpoint", "Number of buffers written during checkpoints",
         written + 4.1e5),
        ("buffers_clean", "Number of buffers written by the background writer",
         clean + 2.3e3),
        ("maxwritten_clean", "Number of times the background writer stopped a cleaning scan "
         "because it had written too many buffers", b.const(0)),
        ("buffers_backend", "Number of buffers written directly by a backend",
         np.cumsum(backend_writes) + 1.6e4),
        ("buffers_backend_fsync", "Number of times a backend had to execute its own fsync "
         "call", b.const(0)),
        ("buffers_alloc", "Number of buffers allocated", alloc + 8.8e5),
    ):
        b.family(f"pg_stat_bgwriter_{name}_total", "counter", help_text)
        b.add(f"pg_stat_bgwriter_{name}_total", PG_JOB, values)


def _span_checkpoints(b: SeriesBuilder, bg: Background, t_s: np.ndarray, dirtied: np.ndarray,
                      spread: float) -> tuple[np.ndarray, ...]:
    """The checkpoints that write during a span of a long window: each one's start, what it
    writes, its time per page and its sync. What a checkpoint writes was dirtied since the
    one before, which can be spans back: the dirty count and the batches of checkpoints
    still writing go on from the earlier span. (Drawn once for the window: each
    checkpoint's own noise, in ``extras``.)"""
    extra, per_page, sync = b.carry.extras["checkpoints"]  # type: ignore[union-attr,misc]
    all_cp = bg.checkpoint_start_s
    lo = int(np.searchsorted(all_cp, t_s[0] - spread, side="left"))
    hi = int(np.searchsorted(all_cp, t_s[-1], side="right"))
    base = b.start("dirtied", 0.0)
    dirtied = dirtied + base
    b.end("dirtied", dirtied[-1])
    cp = all_cp[lo:hi]
    batch = np.zeros(cp.shape[0])
    last = b.start("dirty_at_last", 0.0)
    for j in range(cp.shape[0]):
        g = lo + j
        if cp[j] <= t_s[0]:  # began in an earlier span: its batch was settled there
            batch[j] = b.start(f"checkpoint:{g}", float(extra[g]))
            continue
        at = float(np.interp(cp[j], t_s, dirtied))
        batch[j] = at - last + float(extra[g])
        last = at
    b.end("dirty_at_last", last)
    for j in range(cp.shape[0]):  # still writing when the next span begins
        if cp[j] + spread > t_s[-1]:
            b.end(f"checkpoint:{lo + j}", batch[j])
    return cp, batch, per_page[lo:hi], sync[lo:hi]


def _quiet(b: SeriesBuilder, rng: np.random.Generator, step_s: float) -> dict[str, np.ndarray]:
    """The near-idle `postgres` database: no session of its own (the exporter connects to
    payments); catalog reads of the server's own maintenance, a few each scrape."""
    n = b.n
    per_scrape = np.concatenate([[0.0], np.ones(n - 1)])
    rows = np.concatenate([[0], rng.poisson(31.0 * step_s, n - 1)])
    return {"numbackends": np.zeros(n), "xact_commit": 1800.0 + np.cumsum(per_scrape * 4),
            "tup_returned": 2.1e5 + np.cumsum(rows),
            "tup_fetched": 6.4e4 + np.cumsum(rng.binomial(rows, 0.3)),
            "blks_hit": 9.7e4 + np.cumsum(rng.poisson(0.4 * rows))}


def _locks_and_settings(b: SeriesBuilder, sim: Simulation, knobs: dict[str, float],
                        live_rows: np.ndarray) -> None:
    inst, traffic = sim.instants, sim.traffic
    at_ns = b.t_ms * 1_000_000
    wrote = traffic.insert_end_ns > traffic.insert_start_ns
    # the insert's locks go at its commit: the release, or the leaked receipt lookup's start
    committed = np.where(traffic.receipt_end_ns > traffic.receipt_start_ns,
                         traffic.receipt_start_ns, traffic.release_ns)
    after_insert = covering(traffic.insert_start_ns[wrote], committed[wrote], at_ns)
    b.family("pg_locks_count", "gauge", "Number of locks")
    # a reading transaction holds AccessShareLock on the table and the index it used; an
    # inserting one RowExclusiveLock on the table and both indexes
    held = {"accesssharelock": 2.0 * inst.in_transaction, "rowexclusivelock": 3.0 * after_insert}
    o = sim.others
    if o is not None and o.lock is not None:  # the analyst's read and the queued ALTER
        began, queued, ended = o.lock
        t_s = b.t_ms / 1000.0
        held["accesssharelock"] = held["accesssharelock"] + 2.0 * ((t_s >= began) & (t_s < ended))
        held["accessexclusivelock"] = ((t_s >= queued) & (t_s < ended)).astype(np.float64)
    for mode in PG_LOCK_MODES:
        b.add("pg_locks_count", {**PG_JOB, "datname": "payments", "mode": mode},
              np.asarray(held.get(mode, b.const(0)), np.float64))
    b.family("pg_settings_max_connections", "gauge", "Sets the maximum number of concurrent "
             "connections.")
    b.add("pg_settings_max_connections", PG_JOB, b.const(knobs["max_connections"]))
    b.family("pg_settings_statement_timeout_seconds", "gauge", "Sets the maximum allowed duration "
             "of any statement. [Units converted to seconds.]", "seconds")
    b.add("pg_settings_statement_timeout_seconds", PG_JOB,
          b.const(knobs["statement_timeout_ms"] / 1000.0))
    b.family("pg_database_size_bytes", "gauge", "Disk space used by the database", "bytes")
    pages = np.ceil(live_rows / ROWS_PER_PAGE) + np.ceil(live_rows / 180.0)  # heap + indexes
    b.add("pg_database_size_bytes", {**PG_JOB, "datname": "payments"}, 7_700_000 + pages * 8192)
    b.add("pg_database_size_bytes", {**PG_JOB, "datname": "postgres"}, b.const(7_631_727))
