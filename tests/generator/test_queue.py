"""The queue itself: the limits are never exceeded, nobody is served out of turn, waits
happen only when a resource is taken, timeouts only past pool_timeout."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from generator.queue import Demand, _backlash, covering, idle_connections, schedule


def demand(seed: int, n: int, rate: float, hold: float,
           keep_until: np.ndarray | None = None) -> Demand:
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    on_thread = rng.random(n) > 0.05
    uses_db = on_thread & (rng.random(n) > 0.1)
    return Demand(arrival=arrival, on_thread=on_thread,
                  before_pool=rng.lognormal(np.log(0.01), 0.5, n), uses_db=uses_db,
                  hold=np.where(uses_db, rng.lognormal(np.log(hold), 0.6, n), 0.0),
                  after_pool=rng.lognormal(np.log(0.004), 0.5, n),
                  timeout_jitter=rng.lognormal(np.log(0.001), 0.5, n),
                  keep_until=np.full(n, -np.inf) if keep_until is None else keep_until)


@pytest.mark.parametrize("rate, hold", [(5.0, 0.01), (13.0, 1.0), (13.0, 1.3), (13.0, 3.0)])
def test_limits_order_waits_and_timeouts(rate: float, hold: float) -> None:
    d = demand(7, 6000, rate, hold)
    s = schedule(d, workers=40, connections=15, pool_timeout=2.0)
    t = np.flatnonzero(d.on_thread)
    starts = np.concatenate([s.thread[t], s.pool_request[d.uses_db]])
    # at every moment something starts, the limits hold
    assert covering(s.thread[t], s.end[t], starts).max() <= 40
    held = d.uses_db & ~s.timed_out
    assert covering(s.checkout[held], s.release[held], starts).max() <= 15
    # first come, first served for the threads; nobody starts before arriving
    assert np.all(np.diff(s.thread[t]) >= 0)
    assert np.all(s.thread >= d.arrival)
    # a request waits for a thread only while all 40 are busy
    waited = t[s.thread[t] > d.arrival[t]]
    assert np.all(covering(s.thread[t], s.end[t], d.arrival[waited]) >= 40)
    # a request waits for a connection while all 15 are out; served in arrival order, one
    # that reached the pool a few ms before an earlier arrival can find 14 out (rarely)
    pooled = d.uses_db & (s.checkout > s.pool_request)
    busy = covering(s.checkout[held], s.release[held], s.pool_request[pooled] + 1e-9)
    assert np.all(busy >= 14) and np.count_nonzero(busy < 15) <= 0.01 * busy.size
    # timeouts are exactly the waits past pool_timeout, and they hold no connection
    wait = s.checkout - s.pool_request
    assert np.all(wait[s.timed_out] > 2.0)
    assert np.all(wait[held] <= 2.0 + 1e-9)
    assert np.all(s.release[s.timed_out] == s.checkout[s.timed_out])
    assert np.all(s.end >= s.release)
    np.testing.assert_allclose(s.release[held] - s.checkout[held], d.hold[held])


def test_a_calm_service_waits_for_nothing() -> None:
    d = demand(3, 3000, 5.0, 0.005)
    s = schedule(d, workers=40, connections=15, pool_timeout=30.0)
    np.testing.assert_array_equal(s.thread, d.arrival)
    np.testing.assert_array_equal(s.checkout, s.pool_request)
    assert not s.timed_out.any()


def test_overload_queues_for_threads_not_without_bound_in_the_pool() -> None:
    d = demand(5, 4000, 13.0, 3.0)
    s = schedule(d, workers=40, connections=15, pool_timeout=30.0)
    waiting = covering(s.pool_request[d.uses_db], s.checkout[d.uses_db], d.arrival)
    assert waiting.max() <= 25  # 40 threads, 15 of them holding connections
    assert (s.thread - d.arrival).max() > 10  # the rest waits for a thread


def _reference_backlash(u: np.ndarray, play: int) -> np.ndarray:
    out, level = [], 0
    for x in u.tolist():
        level = min(max(level, x), x + play)
        out.append(level)
    return np.array(out)


@pytest.mark.parametrize("n", [1, 7, 1023, 1024, 1025, 30000])
def test_backlash_equals_the_step_by_step_rule(n: int) -> None:
    rng = np.random.default_rng(n)
    u = np.abs(np.cumsum(rng.choice([-1, 1], n))) % 20
    np.testing.assert_array_equal(_backlash(u, 5), _reference_backlash(u, 5))


def test_idle_connections_rest_lazily_and_at_most_pool_size() -> None:
    # three overlapping checkouts, then one at a time
    checkout = np.array([0.0, 0.1, 0.2, 5.0, 6.0])
    release = np.array([1.0, 1.1, 1.2, 5.5, 6.5])
    idle = idle_connections(checkout, release, 2, np.array([0.05, 0.15, 0.5, 2.0, 5.2, 7.0]))
    # opened on demand: 0, 0, 0 resting while all are out; two kept after (pool_size 2)
    np.testing.assert_array_equal(idle, [0, 0, 0, 2, 1, 2])


def test_kept_connections_leave_the_pool_until_they_are_given_back() -> None:
    """A leak: some requests keep their connection after they answered. The pool shrinks
    one connection per leak; with all 15 kept every checkout times out; giving them back
    serves the queue again. The leaking request's thread is free as soon as it answered."""
    n, rate, back = 8000, 13.0, 500.0
    arrival = np.cumsum(np.random.default_rng(3).exponential(1.0 / rate, n))
    keep = np.full(n, -np.inf)
    leakers = np.flatnonzero(arrival < back)[::200][:20]  # 20 leaks, every ~15 s
    keep[leakers] = back
    d = replace(demand(3, n, rate, 0.01), arrival=arrival, keep_until=keep)
    s = schedule(d, workers=40, connections=15, pool_timeout=2.0)
    db = np.flatnonzero(d.uses_db & ~s.timed_out)
    starts = s.checkout[db]
    held = np.searchsorted(np.sort(starts), starts, side="right") - np.searchsorted(
        np.sort(s.release[db]), starts, side="right")
    assert held.max() <= 15
    kept = leakers[d.uses_db[leakers] & ~s.timed_out[leakers]]
    assert kept.size >= 15 and np.all(s.release[kept] == back)
    assert np.all(s.end[kept] < back - 1)  # answered long before the connection came back
    fifteenth = np.sort(s.checkout[kept])[14]
    starved = np.flatnonzero(d.uses_db & (s.pool_request > fifteenth + 0.1) &
                             (s.pool_request < back - 3))
    assert starved.size > 100 and s.timed_out[starved].all()
    after = np.flatnonzero(d.uses_db & (s.pool_request > back + 30))
    assert after.size > 100 and not s.timed_out[after].any()


@pytest.mark.parametrize("rate, hold, leak", [(13.0, 1.3, False), (13.0, 3.0, False),
                                              (13.0, 0.5, True)])
def test_a_stretch_goes_on_from_the_requests_still_in_flight(rate: float, hold: float,
                                                            leak: bool) -> None:
    """Long windows go span by span (generator/chunks.py): the requests not done where a
    span ends are handed to the next with their schedule settled. First come, first
    served, so what follows is the same as in one run: exactly, not on average."""
    n = 6000
    keep = None
    if leak:  # a share of the requests keep their connection for a long while
        rng = np.random.default_rng(11)
        keep = np.where(rng.random(n) < 0.002, 400.0 + 100.0 * rng.random(n), -np.inf)
    d = demand(9, n, rate, hold, keep)
    whole = schedule(d, workers=40, connections=15, pool_timeout=2.0)
    m = n // 2
    cut = float(d.arrival[m])
    early = np.arange(m)
    still = early[(whole.end[early] > cut) | (whole.release[early] > cut)]
    assert still.size > (15 if not leak else 3)  # a queue to hand over
    rows = np.concatenate([still, np.arange(m, n)])
    part = replace(d, **{f: getattr(d, f)[rows] for f in (
        "arrival", "on_thread", "before_pool", "uses_db", "hold", "after_pool",
        "timeout_jitter", "keep_until")})
    settled = type(whole)(*(getattr(whole, f)[still] for f in (
        "thread", "pool_request", "checkout", "release", "end", "timed_out")))
    again = schedule(part, workers=40, connections=15, pool_timeout=2.0, fixed=settled)
    later = slice(still.size, None)
    for f in ("thread", "pool_request", "checkout", "release", "end", "timed_out"):
        np.testing.assert_array_equal(getattr(again, f)[later], getattr(whole, f)[m:], f)
    # without the requests in flight the same arrivals would find the service empty
    alone = schedule(replace(part, **{f: getattr(part, f)[later] for f in (
        "arrival", "on_thread", "before_pool", "uses_db", "hold", "after_pool",
        "timeout_jitter", "keep_until")}), workers=40, connections=15, pool_timeout=2.0)
    assert not np.array_equal(alone.end, whole.end[m:])


def test_idle_connections_go_on_from_an_earlier_count() -> None:
    """A pool's open connections at a cut, handed on: the idle count after the cut is the
    one the whole history gives."""
    rng = np.random.default_rng(4)
    checkout = np.sort(rng.uniform(0, 1000, 4000))
    release = checkout + rng.lognormal(np.log(2.0), 1.0, 4000)
    at = np.linspace(0, 1200, 500)
    whole = idle_connections(checkout, release, 5, at)
    cut = 600.0
    opened = int(idle_connections(checkout, release, 5, np.array([cut]))[0]
                 + covering(checkout, release, np.array([cut]))[0])
    keep = release > cut  # what the earlier stretch hands on: the ones still out
    after = idle_connections(checkout[keep], release[keep], 5, at, opened, since=cut)
    np.testing.assert_array_equal(after[at >= cut], whole[at >= cut])
