"""One seeded simulation of payment-service on PostgreSQL, request by request.

Every signal is derived from what this module produces: metrics count its requests and
sample its instantaneous state at each scrape, logs print the requests, spans time them.
That is what makes the signals agree.

Per request: arrivals per route are Poisson around the scenario's rate; a POST first
calls the card processor over HTTP, then checks a connection out of the pool, runs its
SELECT and INSERT and commits; a GET runs one SELECT. Handling, call and statement times
are log-normal; the scenario's fault changes them from its onset (a sequential scan
instead of an index lookup, a transaction held open around a slow call, the card
processor failing). Who waits for what is decided by :mod:`generator.queue`: the worker
threads and the connection pool are real limits, and every request is accounted for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .queue import Demand, Schedule, covering, idle_connections, oldest, schedule
from .scenarios import PhasePlan

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

ROUTES = (("POST", "/payment"), ("GET", "/payments/{payment_id}"), ("GET", "/health"))
POST_PAYMENT, GET_PAYMENT, HEALTH = 0, 1, 2

ERR_NONE, ERR_POOL_TIMEOUT, ERR_STATEMENT_TIMEOUT, ERR_GATEWAY = 0, 1, 2, 3
ERR_DISK_FULL = 4  # the INSERT could not extend the table's file
ERR_CONNECT = 5  # PostgreSQL refused a new connection (no slot left)
# what a payment-service process costs before it serves anything, and how its memory drifts
BASE_RSS_BYTES = 101.3e6
VERSION, NEW_VERSION = "1.4.2", "1.5.0"
# Below trace_sample_ratio 1, tail sampling as an OTel collector policy would do it: keep
# every error, a quarter of the requests slower than 1 s, and `trace_sample_ratio` of the
# rest. The ground truth records the policy, so rates taken from traces can be corrected.
SLOW_TRACE_S = 1.0
SLOW_KEEP_RATIO = 0.25
WARMUP_S = 120.0  # simulated before the window, so it opens on a running service


@dataclass(frozen=True)
class Traffic:
    """Completed requests of the window (start >= 0, end <= duration), by start time (in
    a span of a long window: every request that does something in the span, the ones
    still running at its end included, their later steps left to the next span).

    Every moment of a request is its own column (ns from the window start), so spans,
    logs and metrics read the same instants. A step that did not happen has start == end.
    """

    route: np.ndarray  # int8
    start_ns: np.ndarray  # int64: arrival (server span start)
    end_ns: np.ndarray  # int64
    status: np.ndarray  # int16 HTTP status
    error: np.ndarray  # int8 ERR_*
    call_start_ns: np.ndarray  # card processor call (POST /payment only)
    call_end_ns: np.ndarray
    connect_start_ns: np.ndarray  # pool checkout asked for (the `connect` span)
    connect_end_ns: np.ndarray  # got it, or gave up at pool_timeout
    select_start_ns: np.ndarray
    select_end_ns: np.ndarray
    insert_start_ns: np.ndarray
    insert_end_ns: np.ndarray
    # the fraud check a deploy put inside the transaction (pool_exhaustion), after the INSERT
    fraud_start_ns: np.ndarray
    fraud_end_ns: np.ndarray
    # the receipt lookup of the leaking code path (connection_leak), after the commit
    receipt_start_ns: np.ndarray
    receipt_end_ns: np.ndarray
    release_ns: np.ndarray  # connection back in the pool (transaction ended)
    sampled: np.ndarray  # bool: a trace exists for this request
    payment_id: np.ndarray  # int64 (GET path, query parameters)
    # which process served it: 0 the one running at the window's start, +1 per restart
    era: np.ndarray  # int8
    # the N+1 SELECTs between the SELECT and the INSERT (deploy_regression): request r's are
    # entries nplus_offset[r]:nplus_offset[r+1] of the flat gap (before each) and duration
    nplus_offset: np.ndarray  # int64, len + 1
    nplus_gap_s: np.ndarray  # float32
    nplus_s: np.ndarray  # float32

    def __len__(self) -> int:
        return int(self.start_ns.shape[0])

    @property
    def latency_s(self) -> np.ndarray:
        return (self.end_ns - self.start_ns) / NS_PER_S

    @property
    def wait_ns(self) -> np.ndarray:
        return self.connect_end_ns - self.connect_start_ns

    @property
    def select_ns(self) -> np.ndarray:
        return self.select_end_ns - self.select_start_ns

    @property
    def insert_ns(self) -> np.ndarray:
        return self.insert_end_ns - self.insert_start_ns

    @property
    def called_card(self) -> np.ndarray:
        return self.call_end_ns > self.call_start_ns

    @property
    def used_db(self) -> np.ndarray:
        """Requests that checked out a connection (or waited for one)."""
        return (self.route != HEALTH) & (self.error != ERR_GATEWAY)


@dataclass(frozen=True)
class Restart:
    """payment-service stopped at ``stop_s`` and a new process answered from ``up_s``."""

    stop_s: float
    up_s: float
    killed: bool  # SIGKILL (the OOM killer): requests in flight are lost; else it drains them
    version: str  # service.version of the new process
    instance: str  # its service.instance.id (a new pod for a deploy, the same for a restart)


@dataclass(frozen=True)
class Instants:
    """The service's state at each scrape instant (``k * step``), from every simulated
    request, the ones in flight at the window's edges included."""

    active: dict[str, np.ndarray]  # by HTTP method: requests the server is handling
    threads_busy: np.ndarray  # worker threads running a request
    pending: np.ndarray  # requests waiting for a connection
    used: np.ndarray  # connections checked out
    idle: np.ndarray  # connections resting in the pool
    in_statement: np.ndarray  # connections running a statement (pg "active")
    in_transaction: np.ndarray  # connections inside a transaction (running or not)
    oldest_statement_s: np.ndarray  # age of the oldest transaction now running a statement
    oldest_idle_tx_s: np.ndarray  # age of the oldest transaction idle between statements


@dataclass(frozen=True)
class Work:
    """What each request asks of the threads, the card processor and the database."""

    demand: Demand
    pre: np.ndarray  # handling before the card processor call
    card_s: np.ndarray
    card_fail: np.ndarray
    select_s: np.ndarray
    insert_s: np.ndarray
    gap: np.ndarray  # (3, n): checkout -> SELECT -> INSERT -> commit/rollback
    stmt_to: np.ndarray
    writes: np.ndarray
    extra_s: np.ndarray  # the fraud check inside the transaction, after the INSERT
    leaks: np.ndarray  # bool: keeps its connection after a committed payment
    receipt_s: np.ndarray  # commit -> receipt lookup start, and the lookup: (2, n)
    disk_full: np.ndarray  # bool: the INSERT failed, the volume being full
    nplus_count: np.ndarray  # int: N+1 SELECTs of each request
    nplus_total: np.ndarray  # float32: their time, gaps included
    nplus_gap_s: np.ndarray  # float32 flat, request by request
    nplus_s: np.ndarray


@dataclass(frozen=True)
class Simulation:
    traffic: Traffic
    instants: Instants
    severity: np.ndarray  # fault intensity per step (0..1)
    step_ms: int
    fault: str
    pool_capacity: int
    restarts: tuple[Restart, ...] = ()
    # the other client's sessions at each scrape (too_many_clients)
    other_sessions: np.ndarray | None = None
    others: Others | None = None
    faults: tuple[tuple[str, PhasePlan], ...] = ()  # every fault, its realized phases
    grid_ms: np.ndarray | None = None  # the scrape instants (ms, window time)
    window_ms: int = 0  # the whole window's length (a span's simulation covers part of it)
    resume: Span | None = None  # where the next span starts (a span's simulation only)

    @property
    def scrape_ms(self) -> np.ndarray:
        if self.grid_ms is not None:
            return self.grid_ms
        return np.arange(self.severity.shape[0] + 1, dtype=np.int64) * self.step_ms

    @property
    def duration_ms(self) -> int:
        return self.window_ms or self.severity.shape[0] * self.step_ms

    def plan_of(self, kind: str) -> PhasePlan | None:
        return dict(self.faults).get(kind)


@dataclass(frozen=True)
class Others:
    """Other clients of the database that take part in an incident (seconds)."""

    lock: tuple[float, float, float] | None = None  # holder's BEGIN, the ALTER, the end
    # slow_query's fix: CREATE INDEX from .. until (writes wait for its SHARE lock)
    rebuild: tuple[float, float] | None = None
    # the dashboard's reports: start, end, which of its sessions, temp bytes written
    reports: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


def severity_curve(plan: PhasePlan | None, t_frac: np.ndarray) -> np.ndarray:
    """0 at baseline, ``onset_jump`` at the onset rising to 1 at the peak, 1 until the
    recovery, then down to 0. A fault that starts or ends at an instant (a dropped index, a
    deploy) has no ramp: the curve steps."""
    if plan is None:
        return np.zeros_like(t_frac)

    def smooth(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0.0, 1.0)
        return x * x * (3.0 - 2.0 * x)

    ramp = smooth((t_frac - plan.onset) / max(plan.peak - plan.onset, 1e-12))
    rise = np.where(t_frac >= plan.onset, plan.onset_jump + (1.0 - plan.onset_jump) * ramp, 0.0)
    fall = np.where(t_frac < plan.recovery, 1.0, 1.0 - smooth(
        (t_frac - plan.recovery) / max(plan.recovered - plan.recovery, 1e-12)))
    return np.minimum(rise, fall)


def _lognormal(rng: np.random.Generator, median: np.ndarray | float, sigma: np.ndarray | float,
               n: int) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(n))


class Active:
    """The faults of one window, each with the phases its seed gave it (the first is the
    primary one); several compose, each acting on its own part of the service."""

    def __init__(self, faults: tuple[tuple[str, PhasePlan], ...], duration_s: float) -> None:
        self.faults = faults
        self.plans = dict(faults)
        self.duration_s = duration_s

    def __contains__(self, kind: str) -> bool:
        return kind in self.plans

    @property
    def primary(self) -> str:
        return self.faults[0][0] if self.faults else "none"

    def sev(self, kind: str, t_s: np.ndarray) -> np.ndarray:
        plan = self.plans.get(kind)
        return severity_curve(plan, np.maximum(t_s, 0.0) / self.duration_s)

    def window(self, kind: str) -> tuple[float, float]:
        plan = self.plans.get(kind)
        if plan is None:
            return (0.0, 0.0)
        return (plan.onset * self.duration_s, plan.recovery * self.duration_s)


@dataclass(frozen=True)
class Span:
    """One part of a long window, simulated on its own (``generator.chunks``): the scrapes
    from ``lo_s`` to ``hi_s`` (window time), and the state the earlier parts leave."""

    lo_s: float
    hi_s: float
    warm_s: float = 0.0  # simulated before lo_s (the window's first part only)
    restarts: tuple[Restart, ...] = ()  # every restart so far (and the planned ones)
    # memory_leak: the kills count POSTs since ``since_s``; ``counted`` of them were before lo_s
    since_s: float = float("-inf")
    counted: int = 0
    prefix: Prefix | None = None  # the requests still in flight (or keeping a connection)
    others: Others | None = None  # the other clients, drawn once for the whole window
    # (a process, its pool's open connections) at lo_s: QueuePool keeps what it opened,
    # so this hangs on the history
    opened: tuple[int, int] = (0, 0)
    # too_many_clients: the connections open at its onset, and when each grows too old
    deaths: tuple[int, np.ndarray] | None = None


@dataclass(frozen=True)
class Prefix:
    """Requests of the earlier parts not done where this part begins: what they ask for
    and their schedule, settled (first come, first served: no later arrival changes it)."""

    route: np.ndarray
    era: np.ndarray
    work: Work
    sched: Schedule
    refused: np.ndarray


def simulate(knobs: dict[str, float], faults: tuple[tuple[str, PhasePlan], ...],
             duration_ms: int, step_ms: int, streams: dict[str, np.random.Generator],
             extra_restarts: tuple[Restart, ...] = (), span: Span | None = None) -> Simulation:
    """Run the model; ``streams`` are independent generators (traffic, latency, pool, ...).
    ``span``: only that part of the window (its scrapes, and every request that does
    something between its first and last scrape); the result's ``resume`` is where the next
    part starts."""
    n_steps = duration_ms // step_ms
    step_s, duration_s = step_ms / 1000.0, duration_ms / 1000.0
    warm = int(np.ceil((WARMUP_S if span is None else span.warm_s) / step_s))
    first = 0 if span is None else int(round(span.lo_s / step_s))
    last = n_steps if span is None else int(round(span.hi_s / step_s))
    rate = _route_rates(knobs, np.arange(first - warm, last), n_steps, streams["traffic"])
    counts = streams["traffic"].poisson(rate * step_s)
    route, step_idx = _expand(counts)
    offset = np.asarray(streams["traffic"].random(route.shape[0]))
    arrival = (step_idx + (first - warm) + offset) * step_s
    order = np.lexsort((route, arrival))
    route, arrival = route[order], arrival[order]
    act = Active(faults, duration_s)
    plan = faults[0][1] if faults else None
    if span is None:
        restarts = tuple(sorted(_restarts(knobs, act, route, arrival, duration_s)[0]
                                + extra_restarts, key=lambda r: r.stop_s))
    else:
        owned = arrival >= span.lo_s
        found, since, counted = _restarts(knobs, act, route[owned], arrival[owned],
                                          duration_s, (span.since_s, span.counted))
        restarts = tuple(sorted(set(span.restarts) | set(found) | set(extra_restarts),
                                key=lambda r: r.stop_s))
    if restarts:  # while no process listens, a request is refused before it is anything
        down = np.zeros(arrival.shape, bool)
        for r in restarts:
            down |= (arrival >= r.stop_s) & (arrival < r.up_s)
        route, arrival = route[~down], arrival[~down]
    era = np.searchsorted(np.array([r.up_s for r in restarts]), arrival, side="right")
    regressed = np.isin(era, [e + 1 for e, r in enumerate(restarts) if r.version == NEW_VERSION])
    work = _work(knobs, act, route, arrival, streams, regressed)
    prefix = span.prefix if span is not None else None
    fixed = 0
    if prefix is not None:  # they came first, and their schedule is settled
        fixed = prefix.route.shape[0]
        route, era = np.concatenate([prefix.route, route]), np.concatenate([prefix.era, era])
        work = _join_work(prefix.work, work)
        arrival = work.demand.arrival
    capacity = int(knobs["pool_size"] + knobs["max_overflow"])
    sched = schedule(work.demand, int(knobs["worker_threads"]), capacity,
                     knobs["pool_timeout_s"], None if prefix is None else prefix.sched)
    lost = _killed(sched, arrival, restarts)
    scrape_s = np.arange(first, last + 1) * step_s
    refused, others, alive, deaths = None, None, None, None
    if "too_many_clients" in act:
        refused, others, alive, deaths = _refused_connections(
            knobs, work, sched, act.window("too_many_clients"), scrape_s, streams["faults"],
            fixed, None if span is None else span.deaths,
            None if prefix is None else prefix.refused)
    opened = (0, 0) if span is None else span.opened
    since_s = float("-inf") if span is None else span.lo_s
    resume = None
    if span is not None:
        onset = act.window("too_many_clients")[0]
        resume = Span(span.hi_s, span.hi_s, 0.0, restarts, since, counted,
                      _in_flight(route, era, work, sched, refused, lost, span.hi_s),
                      span.others, _pool_opened(work, sched, refused, era, restarts,
                                                int(knobs["pool_size"]), span.hi_s, opened,
                                                since_s),
                      deaths if deaths is not None and onset <= span.hi_s else span.deaths)
    # a day-long window holds a million requests: keep only what the signals still read
    d = work.demand
    work = replace(work, demand=replace(d, before_pool=np.empty(0), hold=np.empty(0),
                                        after_pool=np.empty(0), timeout_jitter=np.empty(0),
                                        keep_until=np.empty(0)))
    del d
    instants = _instants(route, work, sched, scrape_s, int(knobs["pool_size"]), refused, era,
                         restarts, alive, opened, since_s)
    # a span counts what happens between its first and last scrape (a step of a request
    # still running at its end is counted there; the request's end, by the next span)
    keep = (arrival >= 0.0) & (sched.end <= duration_s) if span is None else \
        (sched.end > span.lo_s)
    traffic = _traffic(knobs, route, arrival, work, sched, keep, streams["latency"],
                       lost, refused, era)
    mid = (np.arange(first, last) + 0.5) / n_steps
    return Simulation(traffic, instants, _ro(severity_curve(plan, mid), np.float64), step_ms,
                      act.primary, capacity, restarts, others,
                      _other_clients(act, streams["faults"], knobs) if span is None
                      else span.others, faults, _ro(scrape_s * 1000.0), duration_ms, resume)


_WORK_COLUMNS = ("pre", "card_s", "card_fail", "select_s", "insert_s", "gap", "stmt_to",
                 "writes", "extra_s", "leaks", "receipt_s", "disk_full", "nplus_total")
_DEMAND_COLUMNS = ("arrival", "on_thread", "before_pool", "uses_db", "hold", "after_pool",
                   "timeout_jitter", "keep_until")


def _join_work(a: Work, b: Work) -> Work:
    """``a``'s requests, then ``b``'s (each request's own columns; the N+1 SELECTs of
    ``a``'s, counted where they ran, are left out)."""
    da, db = a.demand, b.demand
    fs = None
    if db.first_statement is not None:
        fs = np.concatenate([np.full(da.arrival.shape, np.inf, np.float32)
                             if da.first_statement is None else da.first_statement,
                             db.first_statement])
    joined: dict[str, Any] = {f: np.concatenate([getattr(da, f), getattr(db, f)])
                              for f in _DEMAND_COLUMNS}
    demand = replace(db, **joined, first_statement=fs)
    cols = {f: np.concatenate([getattr(a, f), getattr(b, f)], axis=-1) for f in _WORK_COLUMNS}
    cols["nplus_count"] = np.concatenate([np.zeros(a.nplus_count.shape, b.nplus_count.dtype),
                                          b.nplus_count])
    return Work(demand, **cols, nplus_gap_s=b.nplus_gap_s, nplus_s=b.nplus_s)


def _in_flight(route: np.ndarray, era: np.ndarray, work: Work, s: Schedule,
               refused: np.ndarray | None, lost: np.ndarray, at_s: float) -> Prefix | None:
    """The requests not done at ``at_s`` (running, waiting, or keeping a connection)."""
    k = np.flatnonzero(~lost & ((s.end > at_s) | (s.release > at_s)))
    if k.size == 0:
        return None
    d = work.demand
    taken: dict[str, Any] = {f: getattr(d, f)[k] for f in _DEMAND_COLUMNS}
    demand = replace(d, **taken, first_statement=None if d.first_statement is None
                     else d.first_statement[k])
    cols = {f: getattr(work, f)[..., k] for f in _WORK_COLUMNS + ("nplus_count",)}
    sched = Schedule(*(getattr(s, f)[k].copy() for f in (
        "thread", "pool_request", "checkout", "release", "end", "timed_out")))
    return Prefix(route[k], era[k], Work(demand, **cols, nplus_gap_s=np.zeros(0, np.float32),
                                         nplus_s=np.zeros(0, np.float32)),
                  sched, np.zeros(k.shape, bool) if refused is None else refused[k])


def _other_clients(act: Active, rng: np.random.Generator,
                   knobs: dict[str, float]) -> Others | None:
    lock = rebuild = None
    if "lock_contention" in act:  # the analyst began minutes before the ALTER queued
        onset, end = act.window("lock_contention")
        lock = (onset - float(rng.uniform(120.0, 900.0)), onset, end)
    elif "slow_query" in act and knobs["index_build_s"] > 0:  # as _work models it
        until = act.window("slow_query")[1]
        rebuild = (until - knobs["index_build_s"], until)
    if "noisy_neighbour" not in act:
        return None if lock is None and rebuild is None else Others(lock=lock, rebuild=rebuild)
    onset, end = act.window("noisy_neighbour")
    starts, ends, session, temp = [], [], [], []
    for sess in range(2):  # two dashboard cards refresh side by side, report after report
        t = onset + float(rng.uniform(0.0, 20.0))
        while t < end:
            took = float(70.0 * np.exp(0.3 * rng.standard_normal()))
            starts.append(t)
            ends.append(t + took)
            session.append(sess)
            temp.append(float(np.round(1.1e9 * np.exp(0.2 * rng.standard_normal()) / 8192)
                              * 8192))
            t += took + float(rng.uniform(0.5, 4.0))
    order = np.argsort(starts, kind="stable")
    reports = (np.asarray(starts)[order], np.asarray(ends)[order],
               np.asarray(session)[order], np.asarray(temp)[order])
    return Others(lock=lock, rebuild=rebuild, reports=reports)



INSTANCES = ("payment-service-7d9f8c6b5-x2x9k", "payment-service-5c8b7f9d4-q7m2p",
             "payment-service-7d9f8c6b5-h4n8w", "payment-service-6f4d9c8b7-r5t2v")


def herring_restarts(herrings: tuple, duration_ms: int,
                     knobs: dict[str, float]) -> tuple[Restart, ...]:
    """A red-herring deploy: payment-service restarts on a new version (a new pod) that
    changes nothing. ``herrings``: (RedHerring, realized start as a fraction) pairs."""
    out = []
    for h, at in herrings:
        if h.kind == "deploy":
            stop = at * duration_ms / 1000.0
            out.append(Restart(stop, stop + knobs["restart_s"], False, h.version, INSTANCES[3]))
    return tuple(out)


def _restarts(knobs: dict[str, float], act: Active, route: np.ndarray,
              arrival: np.ndarray, duration_s: float,
              carry: tuple[float, int] | None = None,
              ) -> tuple[tuple[Restart, ...], float, int]:
    """When payment-service restarts in the window: a deploy and its rollback
    (deploy_regression, graceful), or the OOM killer each time the leak reaches the
    container's limit (memory_leak). With ``carry`` (a span of the window): the POSTs are
    the span's, and (since when the count runs, how many came before the span) goes on
    from the earlier spans; returns the restarts and that pair for the next span."""
    down = knobs["restart_s"]
    out: list[Restart] = []
    if "deploy_regression" in act:
        stop, back = act.window("deploy_regression")
        out += [Restart(stop, stop + down, False, NEW_VERSION, INSTANCES[1]),
                Restart(back, back + down, False, VERSION, INSTANCES[2])]
    plan = act.plans.get("memory_leak")
    if plan is None or knobs["leak_kb_per_payment"] <= 0:
        return tuple(out), float("-inf"), 0
    # the process is killed once the cache of a process's payments fills what the limit
    # leaves above its own footprint
    headroom = knobs["memory_limit_mb"] * 2**20 - BASE_RSS_BYTES - 2e6
    need = int(np.ceil(headroom / (knobs["leak_kb_per_payment"] * 1024.0)))
    posts = arrival[(route == POST_PAYMENT) & (arrival >= plan.onset * duration_s)
                    & (arrival < plan.recovery * duration_s)]
    start, counted = plan.onset * duration_s, 0
    if carry is not None and np.isfinite(carry[0]):
        start, counted = carry
    while True:
        first = int(np.searchsorted(posts, start, side="left"))
        i = first + need - counted - 1
        if i >= posts.shape[0] or posts[i] >= duration_s:
            return tuple(out), start, counted + posts.shape[0] - first
        kill = float(posts[i])
        out.append(Restart(kill, kill + down, True, VERSION, INSTANCES[0]))
        start, counted = kill + down, 0


def _killed(s: Schedule, arrival: np.ndarray, restarts: tuple[Restart, ...]) -> np.ndarray:
    """Requests in flight when the process was killed: they end there, unanswered, and
    take their telemetry with them. (A graceful stop drains them instead.)"""
    lost = np.zeros(arrival.shape, bool)
    for r in restarts:
        if not r.killed:
            continue
        hit = (arrival < r.stop_s) & (s.end > r.stop_s)
        lost |= hit
        for col in (s.thread, s.pool_request, s.checkout, s.release, s.end):
            col[hit] = np.minimum(col[hit], r.stop_s)
    return lost


def _refused_connections(knobs: dict[str, float], work: Work, s: Schedule,
                         window: tuple[float, float], at: np.ndarray,
                         rng: np.random.Generator, fixed: int = 0,
                         carried: tuple[int, np.ndarray] | None = None,
                         was: np.ndarray | None = None) -> tuple:
    """too_many_clients: from ``window[0]`` another client holds every slot PostgreSQL has
    for ordinary roles, so each connection payment-service opens is refused at once.

    It keeps the connections it has open until pool_recycle replaces them: each one's
    replacement is refused (the request that found it too old fails), and a request that
    finds all that are left in use fails opening one more. Calm as the service is, a
    refused request frees what it would have held without anyone waiting on it, so the
    schedule of the others stands.

    In a part of a long window: the first ``fixed`` requests were settled before (``was``:
    which of them were refused), and ``carried`` is (connections open at the onset, when
    each grew too old) where the onset was in an earlier part. Returns the refusals, the
    other client's sessions and the service's live connections at each of ``at``, and
    that pair."""
    d = work.demand
    onset, end = window
    if carried is None:
        held = np.flatnonzero(d.uses_db & ~s.timed_out)
        at_onset = np.array([onset])
        used = covering(s.checkout[held], s.release[held], at_onset)
        opened = int(used[0] + idle_connections(s.checkout[held], s.release[held],
                                                int(knobs["pool_size"]), at_onset)[0])
        recycle = knobs["pool_recycle_s"] if knobs["pool_recycle_s"] > 0 else float("inf")
        # how old each open connection was at the onset: any age below pool_recycle
        deaths = np.sort(onset + recycle * rng.random(opened)) if np.isfinite(recycle) else \
            np.full(opened, np.inf)
    else:
        opened, deaths = carried
    c = s.checkout
    inside = np.flatnonzero(d.uses_db & (c >= onset) & (c < end))
    inside = inside[inside >= fixed]
    inside = inside[np.argsort(c[inside], kind="stable")]
    refused = np.zeros(c.shape, bool)
    # the first checkout after each connection grew too old tries to replace it
    first_after = np.searchsorted(c[inside], deaths[deaths < end], side="left")
    refused[inside[first_after[first_after < inside.shape[0]]]] = True
    alive = opened - np.searchsorted(deaths, c[inside], side="right")
    for _ in range(2):  # who is left holding one decides who finds none free
        ok = np.flatnonzero(d.uses_db & ~s.timed_out & ~refused)
        busy = covering(c[ok], s.release[ok], c[inside]) - (~refused[inside])
        refused[inside] |= busy >= alive
    fail_s = _lognormal(rng, 0.0028, 0.3, int(refused.sum()))
    r = np.flatnonzero(refused)
    if was is not None:
        refused[:fixed] = was
    s.checkout[r] = s.pool_request[r] + fail_s
    s.release[r] = s.checkout[r]
    s.end[r] = s.checkout[r] + d.after_pool[r] + _lognormal(rng, 0.0015, 0.4, r.shape[0])
    # the job's pool grabs every slot the service lets go of: 97 for ordinary roles, one of
    # them the exporter's
    slots = knobs["max_connections"] - 3 - 1
    alive_at = opened - np.searchsorted(deaths, at, side="right")
    fault_on = (at >= onset) & (at < end)
    others = np.where(fault_on, slots - np.maximum(alive_at, 0), 0.0)
    return (refused, others.astype(np.float64), np.where(fault_on, np.maximum(alive_at, 0), -1),
            (opened, deaths))


def _route_rates(knobs: dict[str, float], k: np.ndarray, n_steps: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Each route's rate at steps ``k`` of a window of ``n_steps``: a slow swell over the
    window, and noise of each step's own."""
    base = np.array([knobs["rps_post_payment"], knobs["rps_get_payment"], knobs["rps_health"]])
    wave = 1.0 + 0.06 * np.sin(2 * np.pi * k / max(n_steps, 1))
    noise = np.exp(0.05 * rng.standard_normal((len(ROUTES), k.shape[0])))
    noise[HEALTH] = 1.0  # probes run on a timer
    return base[:, None] * wave[None, :] * noise


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    routes, steps = counts.shape
    flat = counts.reshape(-1)
    route = np.repeat(np.repeat(np.arange(routes), steps), flat)
    step_idx = np.repeat(np.tile(np.arange(steps), routes), flat)
    return route.astype(np.int8), step_idx.astype(np.int64)


def _work(knobs: dict[str, float], act: Active, route: np.ndarray, arrival: np.ndarray,
          streams: dict[str, np.random.Generator], regressed: np.ndarray) -> Work:
    n = route.shape[0]
    lat, gaps = streams["latency"], streams["pool"]
    post, get, health = route == POST_PAYMENT, route == GET_PAYMENT, route == HEALTH
    app = _lognormal(lat, knobs["app_p50_ms"] / 1e3, knobs["app_sigma"], n)
    app = np.where(health, app * 0.08, app)
    pre, post_work = app * 0.55, app * 0.45

    card_s, card_fail = _card_calls(knobs, act, post, arrival, streams["faults"])
    sel_median = np.full(n, knobs["select_p50_ms"] / 1e3)
    sev = act.sev("slow_query", arrival)
    if "slow_query" in act:  # the index is gone: a sequential scan, from the onset on
        peak = knobs["select_peak_ms"] / 1e3
        sel_median = np.where(post, sel_median * (peak / sel_median) ** sev, sel_median)
    # GET by primary key keeps its index, but shares the disk and the CPUs with the scans:
    # most lookups hardly notice, a share waits for a CPU the scan's workers hold
    sel_median = np.where(get, knobs["select_p50_ms"] / 1e3 * 0.7 * (
        1.0 + 0.15 * sev), sel_median)
    sigma = knobs["query_sigma"]
    # a scan's time spreads wider than a lookup's (what is cached, who else runs)
    select_s = _lognormal(lat, sel_median, np.where(post, sigma + 0.12 * sev, sigma), n)
    if "slow_query" in act:
        # the scans' share of the database's CPUs (2 cores): how often a lookup waits
        busy = min(1.0, knobs["rps_post_payment"] * knobs["select_peak_ms"] / 1e3 / 2.0)
        waits = get & (streams["faults"].random(n) < 0.3 * busy * sev)
        select_s = select_s + np.where(waits, _lognormal(streams["faults"], 0.008, 0.8, n),
                                       0.0)
    insert_s = _lognormal(lat, knobs["insert_p50_ms"] / 1e3, sigma, n)
    if "noisy_neighbour" in act:  # every statement waits on the disk and CPUs the
        # reports keep busy; the plans stay what they were
        slower = 1.0 + (knobs["statement_slowdown_peak"] - 1.0) * act.sev("noisy_neighbour",
                                                                         arrival)
        select_s, insert_s = select_s * slower, insert_s * slower
    disk_full = np.zeros(n, bool)
    if "disk_full" in act:  # from the onset no INSERT can extend the table's file
        full_from, full_until = act.window("disk_full")
        disk_full = post & (arrival >= full_from) & (arrival < full_until)
        insert_s = np.where(disk_full, _lognormal(streams["faults"], 0.0007, 0.4, n), insert_s)
    extra_s = np.zeros(n)
    if "connection_hold" in act:
        sev = act.sev("connection_hold", arrival)
        extra_s = np.where(post & (sev > 0), _lognormal(
            streams["faults"], knobs["hold_extra_peak_ms"] / 1e3 * np.maximum(sev, 1e-9),
            0.3, n), 0.0)
    extra_s = np.asarray(extra_s, np.float32)  # as the span reads it back
    stmt_timeout_s = knobs["statement_timeout_ms"] / 1e3
    stmt_to = np.zeros(n, bool)
    if stmt_timeout_s > 0:
        stmt_to = (select_s > stmt_timeout_s) & ~health
        select_s = np.minimum(select_s, stmt_timeout_s)
    # driver and ORM time between the checkout, the statements and the commit: measured
    # live in the hundreds of microseconds, never the same twice
    gap = _lognormal(gaps, 0.00035, 0.5, 3 * n).reshape(3, n)
    # reading the card processor's answer before asking the pool for a connection
    card_s_read = np.where(post, _lognormal(gaps, 0.00025, 0.5, n), 0.0)
    # durations are kept as float32 (0.1 us at a second, far below what a span shows):
    # a day-long window holds a million requests
    pre_32, card_32, select_32, insert_32, gap_32 = (np.asarray(a, np.float32) for a in (
        pre, card_s, select_s, insert_s, gap))
    del pre, card_s, select_s, insert_s, gap
    uses_db = ~health & ~card_fail
    writes = post & ~stmt_to
    nplus_count, nplus_total, nplus_gap, nplus_dur = _n_plus_one(
        knobs, act, writes & uses_db & regressed, sigma, streams["faults"])
    hold = (gap_32[0] + select_32 + np.where(writes, gap_32[1] + insert_32 + extra_s
                                             + nplus_total, 0.0) + gap_32[2])
    # connection_leak: after the commit the leaking path reads the receipt (a new
    # transaction) and keeps the connection until the fix ends the leaked sessions
    leaks = np.zeros(n, bool)
    receipt = np.zeros((2, n), np.float32)
    keep_until = np.full(n, -np.inf)  # -inf: the connection goes back when the request lets go
    if "connection_leak" in act:
        given_back_s = act.window("connection_leak")[1]
        leaks = writes & uses_db & (arrival < given_back_s) & (
            streams["faults"].random(n) < act.sev("connection_leak", arrival)
            * knobs["leak_ratio_peak"])
        k = np.flatnonzero(leaks)
        receipt[0, k] = _lognormal(gaps, 0.00035, 0.5, k.size)
        receipt[1, k] = _lognormal(lat, knobs["select_p50_ms"] / 1e3 * 0.7, sigma, k.size)
        hold = hold + receipt[0] + receipt[1]
        keep_until[k] = given_back_s
    error_s = np.where(card_fail | stmt_to, _lognormal(lat, 0.0015, 0.4, n), 0.0)
    if "disk_full" in act:
        error_s = error_s + np.where(disk_full, _lognormal(streams["faults"], 0.0015, 0.4, n),
                                     0.0)
    locked = "lock_contention" in act
    lock_from, lock_until = act.window("lock_contention")
    # slow_query's fix: CREATE INDEX ends at the recovery; until it commits, the scans go
    # on and every INSERT waits for its SHARE lock (a table lock of lock_contention's, if
    # both faults run at once, is the one modelled)
    rebuild = not locked and "slow_query" in act and knobs["index_build_s"] > 0
    blocked_at = gap_32[0] if locked else None
    if rebuild:
        lock_until = act.window("slow_query")[1]
        lock_from = lock_until - knobs["index_build_s"]
        blocked_at = np.where(writes & uses_db, gap_32[0] + select_32 + nplus_total
                              + gap_32[1], np.inf).astype(np.float32)
    demand = Demand(
        arrival=arrival, on_thread=~health, before_pool=pre_32 + card_32 + card_s_read,
        uses_db=uses_db,
        hold=np.where(uses_db, hold, 0.0), after_pool=post_work + error_s,
        timeout_jitter=_lognormal(gaps, 0.0012, 0.6, n), keep_until=keep_until,
        # the migration's ACCESS EXCLUSIVE lock on payments, from the onset to its commit
        first_statement=blocked_at, blocks="insert" if rebuild else "first",
        lock_from=lock_from if locked or rebuild else float("inf"),
        lock_until=lock_until if locked or rebuild else float("-inf"))
    return Work(demand, pre_32, card_32, card_fail, select_32, insert_32, gap_32, stmt_to,
                writes, extra_s, leaks, receipt, disk_full, nplus_count, nplus_total,
                nplus_gap, nplus_dur)


def _n_plus_one(knobs: dict[str, float], act: Active, regressed: np.ndarray, sigma: float,
                rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """deploy_regression: the new version loads the card's recent payments one by one, a
    SELECT by primary key each (as many as the card has: Poisson around the knob)."""
    n = regressed.shape[0]
    if "deploy_regression" not in act or knobs["n_plus_one_peak"] <= 0:
        return (np.zeros(n, np.int32), np.zeros(n, np.float32), np.zeros(0, np.float32),
                np.zeros(0, np.float32))
    count = np.where(regressed, rng.poisson(knobs["n_plus_one_peak"], n), 0).astype(np.int32)
    total = int(count.sum())
    gap = _lognormal(rng, 0.00035, 0.5, total).astype(np.float32)
    dur = _lognormal(rng, knobs["select_p50_ms"] / 1e3 * 0.5, sigma, total).astype(np.float32)
    per = np.bincount(np.repeat(np.arange(n), count), weights=gap + dur, minlength=n)
    return count, per.astype(np.float32), gap, dur


def _card_calls(knobs: dict[str, float], act: Active, post: np.ndarray, arrival: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """POST /payment charges the card over HTTP before touching the database. In
    upstream_errors the processor sheds a share of the calls with a fast 503; in
    upstream_latency it answers ever more slowly."""
    n = post.shape[0]
    median = np.full(n, knobs["card_p50_ms"] / 1e3)
    if "upstream_latency" in act and knobs["card_peak_ms"] > 0:  # slower, not failing
        median = median * (knobs["card_peak_ms"] / knobs["card_p50_ms"]) ** act.sev(
            "upstream_latency", arrival)
    took = _lognormal(rng, median, 0.35, n)
    failed = np.zeros(n, bool)
    if "upstream_errors" in act:
        failed = post & (rng.random(n) < act.sev("upstream_errors", arrival)
                         * knobs["error_ratio_peak"])
        took = np.where(failed, _lognormal(rng, 0.004, 0.5, n), took)
    return np.where(post, took, 0.0), failed


def _pool_opened(work: Work, s: Schedule, refused: np.ndarray | None, era: np.ndarray,
                 restarts: tuple[Restart, ...], pool_size: int, t: float,
                 start: tuple[int, int], since: float) -> tuple[int, int]:
    """(the process, how many connections its pool had open) at ``t``; ``start``: the
    same at ``since``."""
    got = work.demand.uses_db & ~s.timed_out
    if refused is not None:
        got &= ~refused
    e = int(np.searchsorted(np.array([r.up_s for r in restarts]), t, side="right"))
    h = np.flatnonzero(got & (era == e))
    at = np.array([t])
    idle = idle_connections(s.checkout[h], s.release[h], pool_size, at,
                            start[1] if start[0] == e else 0, since)
    return e, int(idle[0] + covering(s.checkout[h], s.release[h], at)[0])


def _instants(route: np.ndarray, work: Work, s: Schedule, at: np.ndarray,
              pool_size: int, refused: np.ndarray | None, era: np.ndarray,
              restarts: tuple[Restart, ...], alive: np.ndarray | None = None,
              opened: tuple[int, int] = (0, 0), since: float = float("-inf")) -> Instants:
    """``opened``: (a process, how many connections its pool had open at ``since``)."""
    d = work.demand
    got = d.uses_db & ~s.timed_out
    if refused is not None:
        got &= ~refused
    # each process has a pool of its own, empty when it starts and closed when it stops
    idle = np.zeros(at.shape, np.int64)
    bounds = [float("-inf")] + [r.up_s for r in restarts]
    ends = [r.stop_s for r in restarts] + [float("inf")]
    for e, (lo, hi) in enumerate(zip(bounds, ends)):
        h = np.flatnonzero(got & (era == e))
        live = (at >= lo) & (at < hi)
        idle = np.where(live, idle_connections(s.checkout[h], s.release[h], pool_size, at,
                                               opened[1] if opened[0] == e else 0, since),
                        idle)
    del h
    # Only a request in flight (or keeping its connection) at some scrape instant shows in a
    # gauge: the few that are (at a 15 s step, a fraction of a percent of a calm day's
    # requests) are all that the counts below look at.
    step = float(at[1] - at[0]) if at.shape[0] > 1 else 1.0
    seen = np.flatnonzero(np.ceil(d.arrival / step) * step < np.maximum(s.end, s.release))
    arrival, end, held = d.arrival[seen], s.end[seen], got[seen]
    checkout, release = s.checkout[seen], s.release[seen]
    sel_start, sel_end, ins_start, ins_end = _statement_times(work, s, seen, held)
    post = route[seen] == POST_PAYMENT
    active = {"GET": covering(arrival[~post], end[~post], at),
              "POST": covering(arrival[post], end[post], at)}
    on = d.on_thread[seen]
    db = d.uses_db[seen]
    hs, he = sel_start[held], sel_end[held]
    is_, ie, rel = ins_start[held], ins_end[held], release[held]
    used = covering(checkout[held], rel, at)
    if alive is not None:  # connections the service could not replace are gone
        idle = np.where(alive >= 0, np.minimum(idle, np.maximum(alive - used, 0)), idle)
    return Instants(
        active=active, threads_busy=covering(s.thread[seen][on], end[on], at),
        pending=covering(s.pool_request[seen][db], checkout[db], at),
        used=used, idle=idle,
        in_statement=covering(hs, he, at) + covering(is_, ie, at),
        in_transaction=covering(hs, rel, at),
        oldest_statement_s=oldest(hs, [(hs, he), (is_, ie)], at),
        oldest_idle_tx_s=oldest(hs, [(he, is_), (ie, rel)], at))


def _statement_times(work: Work, s: Schedule, idx: np.ndarray,
                     held: np.ndarray) -> tuple[np.ndarray, ...]:
    """SELECT and INSERT start and end of requests ``idx`` (``held``: those that got a
    connection); a statement that did not run starts and ends where the last one ended."""
    checkout = s.checkout[idx]
    writes = held & work.writes[idx]
    sel_start = np.where(held, checkout + work.gap[0, idx], checkout)
    waited = np.where(held, work.demand.lock_wait(checkout, idx), 0.0)
    on_insert = work.demand.blocks == "insert"  # the wait is the INSERT's, not the SELECT's
    sel_end = np.where(held, sel_start + (0.0 if on_insert else waited) + work.select_s[idx],
                       sel_start)
    ins_start = np.where(writes, sel_end + work.nplus_total[idx] + work.gap[1, idx], sel_end)
    return sel_start, sel_end, ins_start, np.where(
        writes, ins_start + (waited if on_insert else 0.0) + work.insert_s[idx], ins_start)


def _traffic(knobs: dict[str, float], route: np.ndarray, arrival: np.ndarray,
             work: Work, s: Schedule, keep: np.ndarray,
             rng: np.random.Generator, lost: np.ndarray, refused: np.ndarray | None,
             era: np.ndarray) -> Traffic:
    error = np.full(route.shape, ERR_NONE, np.int8)
    error[s.timed_out] = ERR_POOL_TIMEOUT
    error[work.stmt_to & ~s.timed_out] = ERR_STATEMENT_TIMEOUT
    error[work.card_fail] = ERR_GATEWAY
    error[work.disk_full & ~s.timed_out] = ERR_DISK_FULL
    if refused is not None:
        error[refused] = ERR_CONNECT
    status = _status(knobs, route, error, rng)
    keep_draw = np.asarray(rng.random(route.shape[0]))
    payment_id = np.asarray(rng.integers(10_000, 990_000, route.shape[0]))
    k = np.flatnonzero(keep & ~lost)
    route, error, status = route[k], error[k], status[k]
    latency = s.end[k] - arrival[k]
    sampled = ((status >= 500) | ((latency > SLOW_TRACE_S) & (keep_draw[k] < SLOW_KEEP_RATIO))
               | (keep_draw[k] < knobs["trace_sample_ratio"]))
    del keep_draw, latency
    post = route == POST_PAYMENT
    held = work.demand.uses_db[k] & ~s.timed_out[k] & (error != ERR_CONNECT)

    def ns(a: np.ndarray) -> np.ndarray:
        return _ro(np.rint(a * NS_PER_S), np.int64)

    # one column at a time: a day holds a million requests, and every float temporary
    # here is 9 MB
    col: dict[str, np.ndarray] = {}
    thread = s.thread[k]
    at = thread + work.pre[k]
    col["call_start_ns"] = ns(np.where(post, at, thread))
    col["call_end_ns"] = ns(np.where(post, at + work.card_s[k], thread))
    del at, thread
    # the `connect` span (and the pool's wait histogram) also holds the checkout itself:
    # part of the driver time before the first statement, a tenth of a millisecond or two
    col["connect_start_ns"] = ns(s.pool_request[k])
    col["connect_end_ns"] = ns(np.where(held, s.checkout[k] + 0.45 * work.gap[0, k],
                                        s.checkout[k]))
    times = _statement_times(work, s, k, held)
    for name, at in zip(("select_start_ns", "select_end_ns", "insert_start_ns",
                         "insert_end_ns"), times):
        col[name] = ns(at)
    # the fraud check (pool_exhaustion) runs right after the INSERT, before the commit
    checked = held & work.writes[k] & (work.extra_s[k] > 0)
    # the handler's own code between the INSERT and the call: a fraction of a millisecond
    lead = np.minimum(_lognormal(rng, 0.00015, 0.5, k.shape[0]), 0.1 * work.extra_s[k])
    col["fraud_start_ns"] = ns(np.where(checked, times[3] + lead, times[3]))
    del lead
    col["fraud_end_ns"] = ns(np.where(checked, times[3] + work.extra_s[k], times[3]))
    # the receipt lookup starts after the commit that followed the INSERT
    leaked = held & work.leaks[k]
    commit_end = times[3] + work.extra_s[k] * checked + work.gap[2, k]
    receipt_start = np.where(leaked, commit_end + work.receipt_s[0, k], times[3])
    col["receipt_start_ns"] = ns(receipt_start)
    col["receipt_end_ns"] = ns(np.where(leaked, receipt_start + work.receipt_s[1, k],
                                        times[3]))
    del times, commit_end, receipt_start
    # the N+1 SELECTs of the requests kept, flat, in request order
    counts = work.nplus_count[k]
    offsets = np.concatenate([[0], np.cumsum(work.nplus_count)])
    flat = (np.repeat(offsets[k], counts) + np.arange(int(counts.sum()))
            - np.repeat(np.cumsum(counts) - counts, counts)).astype(np.int64)
    return Traffic(
        route=_ro(route, np.int8), start_ns=ns(arrival[k]), end_ns=ns(s.end[k]),
        status=_ro(status, np.int16), error=_ro(error, np.int8),
        release_ns=ns(s.release[k]), sampled=_ro(sampled, bool),
        payment_id=_ro(payment_id[k]), era=_ro(era[k], np.int8),
        nplus_offset=_ro(np.concatenate([[0], np.cumsum(counts)]), np.int64),
        nplus_gap_s=_ro(work.nplus_gap_s[flat], np.float32),
        nplus_s=_ro(work.nplus_s[flat], np.float32), **col)


def _ro(arr: np.ndarray, dtype: type | str = np.int64) -> np.ndarray:
    out = np.ascontiguousarray(arr, dtype=dtype)
    out.setflags(write=False)
    return out


def _status(knobs: dict[str, float], route: np.ndarray, error: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    status = np.full(route.shape, 200, np.int16)
    not_found = (route == GET_PAYMENT) & (rng.random(route.shape[0]) < knobs["not_found_ratio"])
    status[not_found] = 404
    status[error != ERR_NONE] = 500
    return status


@dataclass(frozen=True)
class TraceIds:
    """IDs of the sampled requests' spans, row i for the i-th sampled request."""

    trace_id: np.ndarray  # uint8 (m, 16)
    server: np.ndarray  # uint8 (m, 8): the server span, which exemplars and logs name
    connect: np.ndarray
    select: np.ndarray
    insert: np.ndarray
    card: np.ndarray  # the card processor call (client span)
    receipt: np.ndarray  # the leaking path's receipt lookup (connection_leak)
    fraud: np.ndarray  # the fraud check inside the transaction (pool_exhaustion)

    def hex_trace(self, row: int) -> str:
        return bytes(self.trace_id[row]).hex()

    def hex_span(self, row: int) -> str:
        return bytes(self.server[row]).hex()


def assign_ids(traffic: Traffic, rng: np.random.Generator) -> TraceIds:
    """Random 16-byte trace IDs and non-zero 8-byte span IDs from the seeded id stream."""
    m = int(np.count_nonzero(traffic.sampled))
    raw = rng.integers(0, 256, size=(m, 16 + 7 * 8), dtype=np.uint8)
    spans = raw[:, 16:].reshape(m, 7, 8)
    zero = ~spans.any(axis=2)
    spans[..., 7][zero] = 1  # an all-zero span ID is invalid in OTLP
    tid = raw[:, :16]
    tid[~tid.any(axis=1), 15] = 1
    return TraceIds(*(_ro(a, np.uint8) for a in (tid, *(spans[:, j] for j in range(7)))))
