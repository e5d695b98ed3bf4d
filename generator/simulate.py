"""One seeded simulation of payment-service on PostgreSQL, request by request, vectorized.

Every signal is derived from the :class:`Traffic` this module produces: metrics count its
requests, logs print them, spans time them. That is what makes the signals agree.

Model, per step of the window:
- arrivals per route are Poisson around the scenario's rate;
- handling time is log-normal; the database work is log-normal per statement, and the
  scenario's fault scales it (a seq scan instead of an index lookup, or a transaction held
  open around a slow call) by the phase severity;
- the SQLAlchemy QueuePool (``pool_size + max_overflow`` connections) is an M/M/c queue:
  offered load ``a = arrivals x hold time`` (Little's law); below ``c`` the Erlang-C
  probability of waiting, above it a saturated pool where ``1 - c/a`` of the requests
  hit ``pool_timeout`` and the rest wait anywhere up to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenarios import PhasePlan

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

ROUTES = (("POST", "/payment"), ("GET", "/payments/{id}"), ("GET", "/health"))
POST_PAYMENT, GET_PAYMENT, HEALTH = 0, 1, 2

ERR_NONE, ERR_POOL_TIMEOUT, ERR_STATEMENT_TIMEOUT, ERR_GATEWAY = 0, 1, 2, 3
# Tail sampling as an OTel collector policy would do it: keep every error, a quarter of the
# requests slower than 1 s, and `trace_sample_ratio` of the rest.
SLOW_TRACE_S = 1.0
SLOW_KEEP_RATIO = 0.25


@dataclass(frozen=True)
class Traffic:
    """Completed requests of the window (start >= 0, end <= duration), by start time."""

    route: np.ndarray  # int8
    start_ns: np.ndarray  # int64
    end_ns: np.ndarray  # int64
    status: np.ndarray  # int16 HTTP status
    error: np.ndarray  # int8 ERR_*
    pre_ns: np.ndarray  # handling before the pool checkout
    wait_ns: np.ndarray  # pool checkout (the `connect` span); 0 for /health
    select_ns: np.ndarray  # 0 when not run
    insert_ns: np.ndarray  # 0 when not run
    hold_extra_ns: np.ndarray  # connection held after the statements
    sampled: np.ndarray  # bool: a trace exists for this request
    payment_id: np.ndarray  # int64 (GET path, query parameters)

    def __len__(self) -> int:
        return int(self.start_ns.shape[0])

    @property
    def latency_s(self) -> np.ndarray:
        return (self.end_ns - self.start_ns) / NS_PER_S

    @property
    def used_db(self) -> np.ndarray:
        """Requests that checked out a connection (or waited for one)."""
        return (self.route != HEALTH) & (self.error != ERR_GATEWAY)


@dataclass(frozen=True)
class StepState:
    """Per-step state of the model (``n_steps`` intervals of ``step_ms``)."""

    step_ms: int
    fault: str
    severity: np.ndarray  # 0..1 fault intensity
    rate: np.ndarray  # (routes, steps) requests per second
    offered_load: np.ndarray  # erlangs of connection time asked for
    pool_capacity: int
    db_busy: np.ndarray  # mean connections running a statement
    db_idle_in_tx: np.ndarray  # mean connections held with no statement running
    max_statement_s: np.ndarray  # longest statement that ended in the step
    max_hold_s: np.ndarray  # longest idle-in-transaction hold in the step


def severity_curve(plan: PhasePlan | None, t_frac: np.ndarray) -> np.ndarray:
    """0 at baseline, smooth rise to 1 over onset, 1 at peak, smooth fall in recovery."""
    if plan is None:
        return np.zeros_like(t_frac)

    def smooth(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, 0.0, 1.0)
        return x * x * (3.0 - 2.0 * x)

    ramp = smooth((t_frac - plan.onset) / max(plan.peak - plan.onset, 1e-9))
    rise = np.where(t_frac >= plan.onset, plan.onset_jump + (1.0 - plan.onset_jump) * ramp, 0.0)
    fall = 1.0 - smooth((t_frac - plan.recovery) / max(plan.recovered - plan.recovery, 1e-9))
    return np.minimum(rise, fall)


def erlang_c(servers: int, load: np.ndarray) -> np.ndarray:
    """Probability that an arrival waits in an M/M/c queue (load < servers), stably."""
    blocking = np.ones_like(load)
    for i in range(1, servers + 1):  # Erlang-B recursion over pool slots, not samples
        blocking = load * blocking / (i + load * blocking)
    denom = servers - load * (1.0 - blocking)
    return np.clip(servers * blocking / np.maximum(denom, 1e-12), 0.0, 1.0)


def _lognormal(rng: np.random.Generator, median: np.ndarray, sigma: float) -> np.ndarray:
    return median * np.exp(sigma * rng.standard_normal(np.shape(median)))


def simulate(
    knobs: dict[str, float],
    plan: PhasePlan | None,
    fault: str,
    duration_ms: int,
    step_ms: int,
    streams: dict[str, np.random.Generator],
) -> tuple[Traffic, StepState]:
    """Run the model; ``streams`` are independent generators (traffic, latency, pool, ...)."""
    n_steps = duration_ms // step_ms
    step_s = step_ms / 1000.0
    mid_frac = (np.arange(n_steps) + 0.5) / n_steps
    severity = severity_curve(plan, mid_frac)

    rate = _route_rates(knobs, n_steps, streams["traffic"])
    counts = streams["traffic"].poisson(rate * step_s)  # (routes, steps)
    route, step_idx = _expand(counts)
    offset = np.asarray(streams["traffic"].random(route.shape[0])) * (step_ms * NS_PER_MS)
    start_ns = step_idx * step_ms * NS_PER_MS + offset.astype(np.int64)
    order = np.lexsort((route, start_ns))
    route, step_idx, start_ns = route[order], step_idx[order], start_ns[order]
    sev = severity_curve(plan, start_ns / (duration_ms * NS_PER_MS))  # per request
    gateway_s, gw_fail = _gateway_failures(knobs, fault, route, sev, streams["faults"])

    work = _database_work(knobs, fault, route, sev, streams["latency"])
    work["hold_s"] = np.where(gw_fail, 0.0, work["hold_s"])  # it failed before the DB
    state_load = _offered_load(work["hold_s"], route, step_idx, n_steps, step_s)
    capacity = int(knobs["pool_size"] + knobs["max_overflow"])
    wait_s, timed_out = _pool_wait(knobs, capacity, state_load, route, step_idx,
                                   work["hold_s"], streams["pool"])

    wait_s = np.where(gw_fail, 0.0, wait_s)
    timed_out &= ~gw_fail
    error = np.full(route.shape, ERR_NONE, np.int8)
    error[timed_out] = ERR_POOL_TIMEOUT
    stmt_to = work["statement_timeout"] & ~timed_out & ~gw_fail
    error[stmt_to] = ERR_STATEMENT_TIMEOUT
    error[gw_fail] = ERR_GATEWAY
    db = (route != HEALTH) & ~gw_fail
    select_s = np.where(db & ~timed_out, work["select_s"], 0.0)
    insert_s = np.where((route == POST_PAYMENT) & (error == ERR_NONE), work["insert_s"], 0.0)
    extra_s = np.where(insert_s > 0, work["extra_s"], 0.0)
    del work  # a day-long window holds a million requests: free what is no longer needed

    app_s = _lognormal(streams["latency"], np.full(route.shape, knobs["app_p50_ms"] / 1e3),
                       knobs["app_sigma"])
    app_s = np.where(route == HEALTH, app_s * 0.3, app_s)
    pre_s = app_s * 0.4
    gaps_s = np.where(db & ~timed_out, 0.0003, 0.0)
    total_s = app_s + wait_s + select_s + insert_s + extra_s + gaps_s + gateway_s

    to_ns = _to_ns
    pre_ns, wait_ns = to_ns(pre_s), to_ns(wait_s)
    select_ns, insert_ns, extra_ns = to_ns(select_s), to_ns(insert_s), to_ns(extra_s)
    end_ns = start_ns + np.maximum(to_ns(total_s),
                                   pre_ns + wait_ns + select_ns + insert_ns + extra_ns + 1000)
    del total_s, gaps_s, app_s, pre_s

    status = _status(knobs, route, error, streams["latency"])
    latency = (end_ns - start_ns) / NS_PER_S
    keep_draw = streams["latency"].random(route.shape[0])
    sampled = ((status >= 500) | ((latency > SLOW_TRACE_S) & (keep_draw < SLOW_KEEP_RATIO))
               | (keep_draw < knobs["trace_sample_ratio"]))
    del keep_draw, latency
    payment_id = np.asarray(streams["latency"].integers(10_000, 990_000, route.shape[0]))

    keep = end_ns <= duration_ms * NS_PER_MS
    traffic = Traffic(
        route=_ro(route[keep], np.int8), start_ns=_ro(start_ns[keep]), end_ns=_ro(end_ns[keep]),
        status=_ro(status[keep], np.int16), error=_ro(error[keep], np.int8),
        pre_ns=_ro(pre_ns[keep]), wait_ns=_ro(np.where(db, wait_ns, 0)[keep]),
        select_ns=_ro(select_ns[keep]), insert_ns=_ro(insert_ns[keep]),
        hold_extra_ns=_ro(extra_ns[keep]), sampled=_ro(sampled[keep], bool),
        payment_id=_ro(payment_id[keep]),
    )
    state = _step_state(step_ms, fault, severity, rate, state_load, capacity, route, step_idx,
                        n_steps, select_s + insert_s, extra_s, step_s)
    return traffic, state


def _to_ns(seconds: np.ndarray) -> np.ndarray:
    return np.rint(seconds * NS_PER_S).astype(np.int64)


def _ro(arr: np.ndarray, dtype: type | str = np.int64) -> np.ndarray:
    out = np.ascontiguousarray(arr, dtype=dtype)
    out.setflags(write=False)
    return out


def _route_rates(knobs: dict[str, float], n_steps: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array([knobs["rps_post_payment"], knobs["rps_get_payment"], knobs["rps_health"]])
    wave = 1.0 + 0.06 * np.sin(2 * np.pi * np.arange(n_steps) / max(n_steps, 1))
    noise = np.exp(0.05 * rng.standard_normal((len(ROUTES), n_steps)))
    noise[HEALTH] = 1.0  # probes run on a timer
    return base[:, None] * wave[None, :] * noise


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    routes, steps = counts.shape
    flat = counts.reshape(-1)
    route = np.repeat(np.repeat(np.arange(routes), steps), flat)
    step_idx = np.repeat(np.tile(np.arange(steps), routes), flat)
    return route.astype(np.int8), step_idx.astype(np.int64)


def _gateway_failures(knobs: dict[str, float], fault: str, route: np.ndarray, sev: np.ndarray,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """upstream_errors: the card processor answers 503 to a share of POST /payment (that
    grows with the severity), after ~80 ms, before any database work. Other faults draw
    nothing here, so their incidents do not change."""
    n = route.shape[0]
    if fault != "upstream_errors":
        return np.zeros(n), np.zeros(n, bool)
    failed = (route == POST_PAYMENT) & (rng.random(n) < sev * knobs["error_ratio_peak"])
    took = _lognormal(rng, np.full(n, 0.08), 0.3)
    return np.where(failed, took, 0.0), failed


def _database_work(knobs: dict[str, float], fault: str, route: np.ndarray, sev: np.ndarray,
                   rng: np.random.Generator) -> dict[str, np.ndarray]:
    sigma = knobs["query_sigma"]
    base_sel = knobs["select_p50_ms"] / 1e3
    if fault == "slow_query":  # log-interpolate index lookup -> sequential scan
        sel_median = base_sel * (knobs["select_peak_ms"] / knobs["select_p50_ms"]) ** sev
    else:
        sel_median = np.full(route.shape, base_sel)
    # GET by primary key is unaffected by the index, but shares the disk with the scans.
    sel_median = np.where(route == GET_PAYMENT, base_sel * 0.7 * (1.0 + 1.5 * sev), sel_median)
    select_s = _lognormal(rng, sel_median, sigma)
    insert_s = _lognormal(rng, np.full(route.shape, knobs["insert_p50_ms"] / 1e3), sigma)
    extra_s = np.zeros(route.shape)
    if fault == "connection_hold":
        extra_s = _lognormal(rng, knobs["hold_extra_peak_ms"] / 1e3 * sev, 0.3)
    stmt_timeout_s = knobs["statement_timeout_ms"] / 1e3
    statement_timeout = np.zeros(route.shape, bool)
    if stmt_timeout_s > 0:
        statement_timeout = (select_s > stmt_timeout_s) & (route != HEALTH)
        select_s = np.minimum(select_s, stmt_timeout_s)
    hold = np.where(route == POST_PAYMENT, select_s + insert_s + extra_s, select_s)
    hold = np.where(route == HEALTH, 0.0, hold + 0.0003)
    return {"select_s": select_s, "insert_s": insert_s, "extra_s": extra_s,
            "hold_s": hold, "statement_timeout": statement_timeout}


def _offered_load(hold_s: np.ndarray, route: np.ndarray, step_idx: np.ndarray, n_steps: int,
                  step_s: float) -> np.ndarray:
    db = route != HEALTH
    return np.bincount(step_idx[db], weights=hold_s[db], minlength=n_steps) / step_s


def _pool_wait(knobs: dict[str, float], capacity: int, load: np.ndarray, route: np.ndarray,
               step_idx: np.ndarray, hold_s: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    timeout = knobs["pool_timeout_s"]
    n = route.shape[0]
    db = route != HEALTH
    counts = np.bincount(step_idx[db], minlength=load.shape[0])
    busy = np.bincount(step_idx[db], weights=hold_s[db], minlength=load.shape[0])
    mean_hold = busy / np.maximum(counts, 1)
    below = load < capacity
    p_wait = np.where(below, erlang_c(capacity, np.minimum(load, capacity - 1e-9)), 1.0)
    cond_mean = np.where(below, mean_hold / np.maximum(capacity - load, 1e-9), timeout)
    cond_mean = np.minimum(cond_mean, timeout / 3.0)
    p_timeout_sat = np.where(below, 0.0, 1.0 - capacity / np.maximum(load, 1e-9))

    r_wait, r_draw = rng.random(n), rng.random(n)
    exp_draw = rng.exponential(1.0, n)
    checkout = 0.0001 * np.exp(0.3 * rng.standard_normal(n))  # a free connection: ~0.1 ms
    s = step_idx
    queued = np.where(below[s], exp_draw * cond_mean[s],
                      r_draw * timeout / np.maximum(1.0 - p_timeout_sat[s], 1e-9))
    waits = r_wait < p_wait[s]
    wait = checkout + np.where(waits, queued, 0.0)
    timed_out = db & (wait >= timeout)
    wait = np.where(timed_out, timeout, wait)
    return np.where(db, wait, 0.0), timed_out


def _status(knobs: dict[str, float], route: np.ndarray, error: np.ndarray,
            rng: np.random.Generator) -> np.ndarray:
    status = np.full(route.shape, 200, np.int16)
    not_found = (route == GET_PAYMENT) & (rng.random(route.shape[0]) < knobs["not_found_ratio"])
    status[not_found] = 404
    status[error != ERR_NONE] = 500
    return status


def _step_state(step_ms: int, fault: str, severity: np.ndarray, rate: np.ndarray, load: np.ndarray,
                capacity: int, route: np.ndarray, step_idx: np.ndarray, n_steps: int,
                statement_s: np.ndarray, extra_s: np.ndarray, step_s: float) -> StepState:
    db = route != HEALTH
    busy = np.bincount(step_idx[db], weights=statement_s[db], minlength=n_steps) / step_s
    idle_tx = np.bincount(step_idx[db], weights=extra_s[db], minlength=n_steps) / step_s
    max_stmt = np.zeros(n_steps)
    np.maximum.at(max_stmt, step_idx[db], statement_s[db])
    max_hold = np.zeros(n_steps)
    np.maximum.at(max_hold, step_idx[db], extra_s[db])
    scale = np.where(load > capacity, capacity / np.maximum(load, 1e-9), 1.0)
    return StepState(
        step_ms=step_ms, fault=fault, severity=_ro(severity, np.float64),
        rate=_ro(rate, np.float64),
        offered_load=_ro(load, np.float64), pool_capacity=capacity,
        db_busy=_ro(busy * scale, np.float64), db_idle_in_tx=_ro(idle_tx * scale, np.float64),
        max_statement_s=_ro(max_stmt, np.float64), max_hold_s=_ro(max_hold, np.float64),
    )


@dataclass(frozen=True)
class TraceIds:
    """IDs of the sampled requests' spans, row i for the i-th sampled request."""

    trace_id: np.ndarray  # uint8 (m, 16)
    server: np.ndarray  # uint8 (m, 8): the server span, which exemplars and logs name
    connect: np.ndarray
    select: np.ndarray
    insert: np.ndarray

    def hex_trace(self, row: int) -> str:
        return bytes(self.trace_id[row]).hex()

    def hex_span(self, row: int) -> str:
        return bytes(self.server[row]).hex()


def assign_ids(traffic: Traffic, rng: np.random.Generator) -> TraceIds:
    """Random 16-byte trace IDs and non-zero 8-byte span IDs from the seeded id stream."""
    m = int(np.count_nonzero(traffic.sampled))
    raw = rng.integers(0, 256, size=(m, 16 + 4 * 8), dtype=np.uint8)
    spans = raw[:, 16:].reshape(m, 4, 8)
    zero = ~spans.any(axis=2)
    spans[..., 7][zero] = 1  # an all-zero span ID is invalid in OTLP
    tid = raw[:, :16]
    tid[~tid.any(axis=1), 15] = 1
    return TraceIds(*(_ro(a, np.uint8) for a in (tid, spans[:, 0], spans[:, 1], spans[:, 2],
                                                 spans[:, 3])))
