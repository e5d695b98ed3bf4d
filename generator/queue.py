"""The service as it runs: a bounded worker pool in front of a bounded connection pool.

FastAPI runs a sync endpoint in anyio's thread pool (40 threads unless raised): a request
that finds every thread busy waits, first come first served, before any of its code runs.
On a thread it does its own work, calls what it calls, then checks a connection out of the
SQLAlchemy QueuePool (``pool_size + max_overflow`` connections); when all are checked out
it waits in line, and gives up with ``TimeoutError`` after ``pool_timeout``. A connection
goes back when the request's transaction ends.

The model is request by request and conserves requests: each one is waiting for a thread,
waiting for a connection, holding one, or done, at every instant. Where no request has to
wait, the answer is plain arithmetic and is computed for all requests at once; only the
stretches where a limit is reached are walked one request at a time (Kiefer-Wolfowitz:
each request takes the resource that frees first).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np


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


@dataclass(frozen=True)
class Schedule:
    """When each request got its thread and its connection (seconds, float64)."""

    thread: np.ndarray  # thread acquired (== arrival when none was waited for)
    pool_request: np.ndarray  # asked the pool for a connection
    checkout: np.ndarray  # got one; pool_request + wait for a timed-out request
    release: np.ndarray  # connection returned; == checkout when none was held
    end: np.ndarray
    timed_out: np.ndarray  # bool


def schedule(d: Demand, workers: int, connections: int, pool_timeout: float) -> Schedule:
    """Run the queue. Stretches without contention are computed as arrays; the rest is
    walked request by request from the state the arrays give at its start."""
    free = _free_run(d)
    thread, preq, checkout, release, end = (a.copy() for a in free)
    timed_out = np.zeros(d.arrival.shape, bool)
    conflict = _contended(d, free, workers, connections)
    n = d.arrival.shape[0]
    i = int(conflict[0]) if conflict.size else n
    while i < n:
        i = _walk(d, i, workers, connections, pool_timeout,
                  (thread, preq, checkout, release, end, timed_out), conflict)
        nxt = np.searchsorted(conflict, i)
        i = int(conflict[nxt]) if nxt < conflict.size else n
    return Schedule(thread, preq, checkout, release, end, timed_out)


def _free_run(d: Demand) -> tuple[np.ndarray, ...]:
    """Every request served at once: exact wherever no limit is reached."""
    thread = d.arrival
    preq = thread + d.before_pool
    checkout = preq.copy()
    release = np.where(d.uses_db, checkout + d.hold, checkout)
    return thread, preq, checkout, release, release + d.after_pool


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
          out: tuple[np.ndarray, ...], conflict: np.ndarray) -> int:
    """Serve requests one by one from ``i`` until none of them is held up any more and
    the free run is exact again; returns the first index not walked."""
    thread, preq, checkout, release, end, timed_out = out
    lo = int(np.searchsorted(d.arrival, d.arrival[i] - _longest(d, out, i), side="left"))
    past = slice(lo, i)
    threads = _top(end[past][d.on_thread[past]], workers)
    conns = _top(release[past][d.uses_db[past]], connections)
    last_conflict = int(conflict[-1])
    cols = (d.arrival, d.on_thread, d.uses_db, d.before_pool, d.hold, d.after_pool,
            d.timeout_jitter)
    n = d.arrival.shape[0]
    held_until = float("-inf")  # the last moment a held-up request occupies anything
    j = i
    chunk_at, chunk = i, 256
    while j < n:
        if j >= chunk_at:  # Python lists of the next stretch only: walks are mostly short
            chunk = min(chunk * 4, 65536)
            base, chunk_at = j, min(j + chunk, n)
            arrival, on_thread, uses_db, before, hold, after, jitter = (
                c[base:chunk_at].tolist() for c in cols)
        k = j - base
        a = arrival[k]
        if j > i and a > held_until and (j > last_conflict or not _is_conflict(conflict, j)):
            break
        t0 = max(a, threads[0]) if on_thread[k] else a
        p = t0 + before[k]
        if uses_db[k]:
            c0 = conns[0]
            if c0 - p > pool_timeout:
                got, rel, late = p + pool_timeout + jitter[k], None, True
            else:
                got, late = max(p, c0), False
                rel = got + hold[k]
                heapq.heapreplace(conns, rel)
            stop = (rel if rel is not None else got) + after[k]
        else:
            got, rel, late = p, p, False
            stop = p + after[k]
        if on_thread[k]:
            heapq.heapreplace(threads, stop)
        if t0 > a or got > p or late:
            held_until = max(held_until, stop)
        thread[j], preq[j], checkout[j] = t0, p, got
        release[j] = rel if rel is not None else got
        end[j], timed_out[j] = stop, late
        j += 1
    return j


def _is_conflict(conflict: np.ndarray, j: int) -> bool:
    k = int(np.searchsorted(conflict, j))
    return k < conflict.size and int(conflict[k]) == j


def _longest(d: Demand, out: tuple[np.ndarray, ...], i: int) -> float:
    """How far back a request still in flight at ``i``'s arrival can have arrived."""
    end = out[4]
    head = slice(max(0, i - 50_000), i)
    span = end[head] - d.arrival[head]
    return float(span.max()) + 1.0 if span.size else 0.0


def covering(start: np.ndarray, stop: np.ndarray, at: np.ndarray) -> np.ndarray:
    """How many intervals [start, stop) contain each instant of ``at``."""
    return (np.searchsorted(np.sort(start), at, side="right")
            - np.searchsorted(np.sort(stop), at, side="right"))


def idle_connections(checkout: np.ndarray, release: np.ndarray, pool_size: int,
                     at: np.ndarray) -> np.ndarray:
    """Connections resting in the QueuePool at each instant of ``at``.

    QueuePool opens a connection only when a checkout finds none resting, and keeps at
    most ``pool_size`` of the returned ones (an overflow connection is closed on return).
    So the number open follows the number checked out with a play of ``pool_size``: it
    rises when checkouts exceed it, falls when it is more than ``pool_size`` above them,
    and otherwise stays (a backlash). It depends on the history, not on one instant."""
    times = np.concatenate([checkout, release])
    delta = np.concatenate([np.ones(checkout.shape, np.int64),
                            -np.ones(release.shape, np.int64)])
    order = np.lexsort((delta, times))  # at equal times a return first: a handed-over connection
    used = np.cumsum(delta[order])
    opened = _backlash(used, pool_size)
    pos = np.searchsorted(times[order], at, side="right") - 1
    return np.where(pos >= 0, (opened - used)[np.maximum(pos, 0)], 0)


def _backlash(u: np.ndarray, play: int, chunk: int = 4096) -> np.ndarray:
    """y[k] = min(max(y[k-1], u[k]), u[k] + play), y[-1] = 0; found by jumping from one
    change of y to the next (y changes far less often than u)."""
    y = np.empty(u.shape, np.int64)
    level, k, n = 0, 0, u.shape[0]
    while k < n:
        stop = min(k + chunk, n)
        seg = u[k:stop]
        moved = (seg > level) | (seg + play < level)
        hit = int(np.argmax(moved)) if moved.any() else -1
        if hit < 0:
            y[k:stop] = level
            k = stop
            continue
        y[k:k + hit] = level
        v = int(seg[hit])
        level = v if v > level else v + play
        y[k + hit] = level
        k += hit + 1
    return y


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
