"""The service as it runs: a bounded worker pool in front of a bounded connection pool.

FastAPI runs a sync endpoint in anyio's thread pool (40 threads unless raised): a request
that finds every thread busy waits, first come first served, before any of its code runs.
On a thread it does its own work, calls what it calls, then checks a connection out of the
SQLAlchemy QueuePool (``pool_size + max_overflow`` connections); when all are checked out
it waits in line, and gives up with ``TimeoutError`` after ``pool_timeout``. A connection
goes back when the request's transaction ends.

The model is request by request and conserves requests: each one is waiting for a thread,
waiting for a connection, holding one, or done, at every instant. Both queues serve in the
order requests arrived at the service (anyio's limiter is first come first served; at the
pool the order can differ from that by the few milliseconds of handling before the
checkout, which the model ignores). Where no request has to wait, the answer is plain
arithmetic and is computed for all requests at once; stretches where a limit is reached
are walked one request at a time (Kiefer-Wolfowitz: each request takes the thread, then
the connection, that frees first), until a quiet stretch follows.
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass

import numpy as np

REWALK = 2000  # requests: a walk ends only before a quiet stretch at least this long


@dataclass(frozen=True)
class Demand:
    """What each request asks for, in arrival order (seconds, float64)."""

    arrival: np.ndarray
    on_thread: np.ndarray  # bool: runs in the worker pool (sync endpoint)
    before_pool: np.ndarray  # work on the thread before asking for a connection
    uses_db: np.ndarray  # bool
    hold: np.ndarray  # connection held once checked out
    after_pool: np.ndarray  # work after the connection went back (or after a timeout)
    timeout_jitter: np.ndarray  # how late past pool_timeout a waiter notices (scheduling)
    # a connection kept after the request let go of it (a leak): returned only then;
    # -inf: none
    keep_until: np.ndarray
    # a lock that blocks every statement on the table during [lock_from, lock_until): a
    # request whose first statement (``first_statement`` after its checkout) starts then
    # waits in the database, holding its connection, until the lock goes
    first_statement: np.ndarray | None = None
    # which statement the lock holds: "first" (a lock on the table, every statement waits)
    # or "insert" (CREATE INDEX's SHARE lock: reads go on, writes wait)
    blocks: str = "first"
    lock_from: float = float("inf")
    lock_until: float = float("-inf")

    def lock_wait(self, checkout: np.ndarray, idx: np.ndarray | slice = slice(None),
                  ) -> np.ndarray:
        """How long the first statement of requests ``idx`` that got their connection at
        ``checkout`` waited for the lock (0 when it was not there)."""
        if self.first_statement is None or not self.lock_from < self.lock_until:
            return np.zeros(np.shape(checkout))
        begins = checkout + self.first_statement[idx]
        blocked = (begins >= self.lock_from) & (begins < self.lock_until) & self.uses_db[idx]
        return np.where(blocked, self.lock_until - begins, 0.0)


@dataclass(frozen=True)
class Schedule:
    """When each request got its thread and its connection (seconds, float64)."""

    thread: np.ndarray  # thread acquired (== arrival when none was waited for)
    pool_request: np.ndarray  # asked the pool for a connection
    checkout: np.ndarray  # got one; pool_request + wait for a timed-out request
    release: np.ndarray  # connection returned; == checkout when none was held (a kept one
    # returns at keep_until, after its request ended)
    end: np.ndarray
    timed_out: np.ndarray  # bool


def schedule(d: Demand, workers: int, connections: int, pool_timeout: float,
             fixed: Schedule | None = None) -> Schedule:
    """Run the queue. Stretches without contention are computed as arrays; the rest is
    walked request by request from the state the arrays give at its start.

    ``fixed``: the schedule of the first requests, settled before (requests still in
    flight where an earlier stretch of the window ended): first come, first served, so no
    later arrival changes it; the others queue behind them."""
    free = _free_run(d)
    m = 0
    if fixed is not None:
        m = fixed.end.shape[0]
        for col, done in zip(free, (fixed.thread, fixed.pool_request, fixed.checkout,
                                    fixed.release, fixed.end)):
            col[:m] = done
    conflict = _contended(d, free, workers, connections)
    conflict = conflict[conflict >= m]
    thread, preq, checkout, release, end = free  # fresh arrays: the walks write into them
    thread = thread.copy()
    timed_out = np.zeros(d.arrival.shape, bool)
    if fixed is not None:
        timed_out[:m] = fixed.timed_out
    n = d.arrival.shape[0]
    i = int(conflict[0]) if conflict.size else n
    conflicts = conflict.tolist()
    keepers = np.flatnonzero(d.uses_db & np.isfinite(d.keep_until))  # may hold one long
    while i < n:
        i = _walk(d, i, workers, connections, pool_timeout,
                  (thread, preq, checkout, release, end, timed_out), conflicts, keepers)
        nxt = np.searchsorted(conflict, i)
        i = int(conflict[nxt]) if nxt < conflict.size else n
    return Schedule(thread, preq, checkout, release, end, timed_out)


def _free_run(d: Demand) -> tuple[np.ndarray, ...]:
    """Every request served at once: right wherever no limit is reached."""
    thread = d.arrival.copy()
    preq = thread + d.before_pool
    checkout = preq.copy()
    let_go = np.where(d.uses_db, checkout + d.hold + d.lock_wait(checkout), checkout)
    release = np.where(d.uses_db, np.maximum(let_go, d.keep_until), checkout)
    return thread, preq, checkout, release, let_go + d.after_pool


def _in_use_at_own_start(start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """How many of the intervals [start, stop) cover each interval's own start."""
    s, e = np.sort(start), np.sort(stop)
    return np.searchsorted(s, start, side="right") - np.searchsorted(e, start, side="right")


def _contended(d: Demand, free: tuple[np.ndarray, ...], workers: int,
               connections: int) -> np.ndarray:
    """Indices (sorted) of requests that would find a limit reached in the free run."""
    thread, preq, checkout, release, end = free
    out = np.zeros(d.arrival.shape, bool)
    t = np.flatnonzero(d.on_thread)
    out[t] = _in_use_at_own_start(thread[t], end[t]) > workers
    c = np.flatnonzero(d.uses_db)
    out[c] |= _in_use_at_own_start(checkout[c], release[c]) > connections
    return np.flatnonzero(out)


def _top(values: np.ndarray, k: int) -> list[float]:
    """The k largest values as a heap (padded with -inf): the free times of k servers."""
    if values.size > k:
        values = np.partition(values, values.size - k)[values.size - k:]
    heap = [float("-inf")] * (k - values.size) + values.tolist()
    heapq.heapify(heap)
    return heap


def _walk(d: Demand, i: int, workers: int, connections: int, pool_timeout: float,
          out: tuple[np.ndarray, ...], conflicts: list[int], keepers: np.ndarray) -> int:
    """Serve requests one by one from ``i`` until none is held up and no contention is
    near; returns the first index not walked."""
    end = out[4]
    lo = int(np.searchsorted(d.arrival, d.arrival[i] - _longest(d, out, i, keepers),
                             side="left"))
    past = slice(lo, i)
    threads = _top(end[past][d.on_thread[past]], workers)
    conns = _top(out[3][past][d.uses_db[past]], connections)
    state = _WalkState(bisect.bisect_left(conflicts, i), float("-inf"))
    n, j, chunk = d.arrival.shape[0], i, 256
    while j < n:  # Python lists of the next stretch only: most walks are short
        chunk = min(chunk * 4, 65536)
        stop = min(j + chunk, n)
        done = _walk_stretch(d, j, stop, i, threads, conns, pool_timeout, out, conflicts,
                             state)
        j += done
        if j < stop:
            break
    return j


class _WalkState:
    __slots__ = ("ci", "held_until")

    def __init__(self, ci: int, held_until: float) -> None:
        self.ci, self.held_until = ci, held_until


def _walk_stretch(d: Demand, base: int, stop: int, first: int, threads: list[float],
                  conns: list[float], pool_timeout: float, out: tuple[np.ndarray, ...],
                  conflicts: list[int], state: _WalkState) -> int:
    """Walk requests ``base .. stop-1``; returns how many were walked before the walk
    could end (all of them when it goes on)."""
    arrival, on_thread, uses_db, before, hold, after, jitter, keep = (
        c[base:stop].tolist() for c in (d.arrival, d.on_thread, d.uses_db, d.before_pool,
                                        d.hold, d.after_pool, d.timeout_jitter, d.keep_until))
    locked = d.first_statement is not None and d.lock_from < d.lock_until
    lock_from, lock_until = d.lock_from, d.lock_until
    first_stmt = (d.first_statement[base:stop].tolist()
                  if locked and d.first_statement is not None else [])
    replace = heapq.heapreplace
    n_conflicts = len(conflicts)
    ci, held_until = state.ci, state.held_until
    t_col, p_col, g_col, r_col, e_col, l_col = [], [], [], [], [], []
    for k in range(stop - base):
        a = arrival[k]
        if a > held_until and base + k > first:
            # stop once nothing is held up and the next contention is far off
            while ci < n_conflicts and conflicts[ci] < base + k:
                ci += 1
            if ci == n_conflicts or conflicts[ci] - (base + k) > REWALK:
                break
        t0 = a
        if on_thread[k] and threads[0] > a:
            t0 = threads[0]
        p = t0 + before[k]
        late = False
        if uses_db[k]:
            c0 = conns[0]
            if c0 - p > pool_timeout:
                got = let_go = rel = p + pool_timeout + jitter[k]
                late = True
            else:
                got = c0 if c0 > p else p
                let_go = got + hold[k]
                if locked and lock_from <= got + first_stmt[k] < lock_until:
                    let_go += lock_until - (got + first_stmt[k])
                rel = let_go if let_go > keep[k] else keep[k]
                replace(conns, rel)
        else:
            got = let_go = rel = p
        fin = let_go + after[k]
        if on_thread[k]:
            replace(threads, fin)
        if (t0 > a or got > p or late) and fin > held_until:
            held_until = fin
        t_col.append(t0)
        p_col.append(p)
        g_col.append(got)
        r_col.append(rel)
        e_col.append(fin)
        l_col.append(late)
    state.ci, state.held_until = ci, held_until
    done = len(t_col)
    for arr, col in zip(out, (t_col, p_col, g_col, r_col, e_col, l_col)):
        arr[base:base + done] = col
    return done


def _longest(d: Demand, out: tuple[np.ndarray, ...], i: int,
             keepers: np.ndarray) -> float:
    """How far back a request still in flight (or still keeping its connection) at ``i``'s
    arrival can have arrived."""
    end, release = out[4], out[3]
    head = slice(max(0, i - 50_000), i)
    span = np.maximum(end[head], release[head]) - d.arrival[head]  # a kept connection too
    longest = float(span.max()) + 1.0 if span.size else 0.0
    # a connection kept (leaked) by a request further back
    early = keepers[:int(np.searchsorted(keepers, head.start))]
    kept = early[release[early] > d.arrival[i]]
    if kept.size:
        longest = max(longest, float(d.arrival[i] - d.arrival[kept[0]]) + 1.0)
    return longest


def covering(start: np.ndarray, stop: np.ndarray, at: np.ndarray) -> np.ndarray:
    """How many intervals [start, stop) contain each instant of ``at``."""
    return (np.searchsorted(np.sort(start), at, side="right")
            - np.searchsorted(np.sort(stop), at, side="right"))


def idle_connections(checkout: np.ndarray, release: np.ndarray, pool_size: int,
                     at: np.ndarray, opened: int = 0,
                     since: float = float("-inf")) -> np.ndarray:
    """Connections resting in the QueuePool at each instant of ``at``.

    QueuePool opens a connection only when a checkout finds none resting, and keeps at
    most ``pool_size`` of the returned ones (an overflow connection is closed on return).
    So the number open follows the number checked out with a play of ``pool_size``: it
    rises when checkouts exceed it, falls when it is more than ``pool_size`` above them,
    and otherwise stays (a backlash). It depends on the history, not on one instant:
    ``opened`` is how many were open at ``since`` (the checkouts and returns up to then
    only say how many were in use)."""
    before = int(np.count_nonzero(checkout <= since) - np.count_nonzero(release <= since))
    checkout, release = checkout[checkout > since], release[release > since]
    times = np.concatenate([checkout, release])
    delta = np.concatenate([np.ones(checkout.shape, np.int64),
                            -np.ones(release.shape, np.int64)])
    order = np.lexsort((delta, times))  # at equal times a return first: a handed-over connection
    used = before + np.cumsum(delta[order])
    if used.size == 0:
        return np.full(at.shape, opened - before)
    level = _backlash(used, pool_size, opened)
    pos = np.searchsorted(times[order], at, side="right") - 1
    return np.where(pos >= 0, (level - used)[np.maximum(pos, 0)], opened - before)


def _backlash(u: np.ndarray, play: int, y0: int = 0, block: int = 1024) -> np.ndarray:
    """y[k] = min(max(y[k-1], u[k]), u[k] + play), y[-1] = y0, without a Python loop over k.

    Each step clips to [u, u + play]; clips compose into a clip (clip to [a1, b1] then to
    [a2, b2] is a clip to [clip(a1, a2, b2), clip(b1, a2, b2)]), so the composition of
    every prefix is found by doubling within blocks, and the blocks are chained."""
    n = u.shape[0]
    if n == 0:
        return u.astype(np.int64)
    pad = (-n) % block
    lo = np.concatenate([u, np.full(pad, u[-1])]).astype(np.int32).reshape(-1, block)
    hi = lo + play
    shift = 1
    while shift < block:  # lo/hi[:, k] := the composition of steps k-shift+1 .. k
        a, b = lo[:, :-shift], hi[:, :-shift]
        lo_k, hi_k = lo[:, shift:], hi[:, shift:]
        new_lo = np.minimum(np.maximum(a, lo_k), hi_k)
        new_hi = np.minimum(np.maximum(b, lo_k), hi_k)
        lo[:, shift:], hi[:, shift:] = new_lo, new_hi
        shift *= 2
    start = np.empty(lo.shape[0], np.int64)
    level = int(y0)
    for i, (a, b) in enumerate(zip(lo[:, -1].tolist(), hi[:, -1].tolist())):
        start[i] = level
        level = min(max(level, a), b)
    y = np.minimum(np.maximum(start[:, None], lo), hi).reshape(-1)
    return y[:n].astype(np.int64)


def oldest(xact_start: np.ndarray, states: list[tuple[np.ndarray, np.ndarray]],
           at: np.ndarray) -> np.ndarray:
    """At each instant of ``at``: the age of the oldest transaction that is inside one of
    its ``states`` intervals then (pg_stat_activity's max_tx_duration); 0 when none is."""
    out = np.zeros(at.shape)
    if xact_start.size == 0:
        return out
    longest = max(float((stop - start).max()) for start, stop in states)
    order = np.argsort(xact_start, kind="stable")
    xs = xact_start[order]
    cols = [(start[order], stop[order]) for start, stop in states]
    reach = float((np.maximum.reduce([stop for _, stop in cols]) - xs).max())
    lo_all = np.searchsorted(xs, at - max(reach, longest), side="left")
    hi_all = np.searchsorted(xs, at, side="right")
    for k, (lo, hi) in enumerate(zip(lo_all.tolist(), hi_all.tolist())):
        if hi <= lo:
            continue
        t = at[k]
        inside = np.zeros(hi - lo, bool)
        for start, stop in cols:
            inside |= (start[lo:hi] <= t) & (t < stop[lo:hi])
        if inside.any():
            out[k] = t - xs[lo:hi][inside].min()
    return out
