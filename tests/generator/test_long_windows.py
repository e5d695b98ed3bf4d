"""Long windows span by span (generator/chunks.py): same bytes for the same window, and
nothing in the data shows where one span ends."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from generator import SCENARIOS, estimate_memory, generate
from generator.chunks import SPAN_MS, SPANNED_FROM_MS, Spans, generate_spans, spanned
from generator.model import Incident

HOUR_MS = 3_600_000


def _joined(spans: Spans) -> tuple[dict, dict, list[Incident]]:
    """Every series of the window, its spans' samples in order; family types; the spans."""
    t: dict = defaultdict(list)
    v: dict = defaultdict(list)
    parts = list(spans)
    for inc in parts:
        for s in inc.series:
            t[s.labels].append(s.t_ms)
            v[s.labels].append(s.values)
    kinds = {f.name: f.type for f in parts[-1].families}
    return ({k: np.concatenate(x) for k, x in t.items()},
            {k: np.concatenate(x) for k, x in v.items()}, [kinds, parts])  # type: ignore[list-item]


def _cumulative(name: str, kinds: dict[str, str]) -> bool:
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if name.endswith(suffix) and kinds.get(name[:-len(suffix)]) == "histogram":
            name = name[:-len(suffix)]
    return kinds.get(name) in ("counter", "histogram")


@pytest.fixture(scope="module")
def spanned_windows() -> dict[str, tuple]:
    """Each built-in scenario over 12 h in spans of 1 h: the incident (its phases are
    fractions of the window) runs across several span boundaries. connection_leak queues
    236,854 requests by its 9th hour (the model's queue for threads has no bound): past
    what a load lets a span hand on (test_a_queue_without_bound_stops...), allowed here,
    where the hand-over itself is what is tested."""
    import generator.chunks as chunks

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(chunks, "MAX_IN_FLIGHT", 10_000_000)
        for name in SCENARIOS:
            sp = generate_spans(name, 2, 12 * HOUR_MS, 30_000, span_ms=HOUR_MS)
            out[name] = (sp, *_joined(sp))
    return out


def test_same_window_same_bytes() -> None:
    a = list(generate_spans("connection_leak", 3, 6 * HOUR_MS, 15_000, span_ms=HOUR_MS))
    b = list(generate_spans("connection_leak", 3, 6 * HOUR_MS, 15_000, span_ms=HOUR_MS))
    assert len(a) == len(b) == 6
    for x, y in zip(a, b):
        assert [s.labels for s in x.series] == [s.labels for s in y.series]
        for s1, s2 in zip(x.series, y.series):
            assert s1.t_ms.tobytes() == s2.t_ms.tobytes()
            assert s1.values.tobytes() == s2.values.tobytes()
    c = list(generate_spans("connection_leak", 4, 6 * HOUR_MS, 15_000, span_ms=HOUR_MS))
    assert any(s1.values.tobytes() != s2.values.tobytes()
               for s1, s2 in zip(a[3].series, c[3].series))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scrape_once_in_order(spanned_windows: dict, scenario: str) -> None:
    sp, t, v, (kinds, parts) = spanned_windows[scenario]
    grid = np.arange(0, sp.duration_ms + 1, sp.step_ms)
    for labels, tm in t.items():
        assert np.all(np.diff(tm) > 0), (scenario, labels)  # no scrape twice, in order
        assert np.isin(tm, grid).all()
    up = [tm for labels, tm in t.items() if dict(labels).get("__name__") == "up"]
    assert up and all(tm.shape == grid.shape for tm in up)  # `up` at every scrape
    # the spans' own samples lie between their first scrape (exclusive, but the first span)
    # and their last
    for (lo, hi), inc in zip(sp.bounds(), parts):
        for s in inc.series:
            assert s.t_ms.size == 0 or (s.t_ms.min() >= lo and s.t_ms.max() <= hi)
            if lo:
                assert s.t_ms.size == 0 or s.t_ms.min() > lo


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_no_seam_where_a_span_ends(spanned_windows: dict, scenario: str) -> None:
    """At the scrapes next to a span boundary, no series moves more than it does anywhere
    else in the window: a counter that restarted from its base, a gauge whose state was
    rebuilt from empty (a queue, leaked connections, a pool's open connections, a noise
    level) would jump there. Counters are compared by their increase, gauges by value."""
    sp, t, v, (kinds, parts) = spanned_windows[scenario]
    bounds = np.array([lo for lo, _ in sp.bounds()][1:], np.int64)
    # a phase of the incident that begins right at a boundary moves the data there for
    # its own reason (a lock taken, a deploy): those boundaries are not looked at
    marks = np.array([p.start_ms for p in parts[0].truth.phases], np.int64)
    bounds = bounds[np.abs(bounds[:, None] - marks[None, :]).min(axis=1) > 2 * sp.step_ms]
    assert bounds.size >= 8
    near = np.concatenate([bounds, bounds + sp.step_ms])
    seams = []
    for labels, tm in t.items():
        name = dict(labels)["__name__"]
        vals = v[labels]
        if _cumulative(name, kinds):
            step = np.diff(vals)
            if dict(labels)["job"] != "payment-service":  # its own restarts reset it
                assert (step >= -1e-9).all(), (name, labels)
            moved, at = np.abs(np.diff(step)), tm[2:]
        else:
            moved, at = np.abs(np.diff(vals)), tm[1:]
        at_seam = np.isin(at, near)
        if not at_seam.any() or at_seam.all():
            continue
        worst, usual = float(moved[at_seam].max()), float(moved[~at_seam].max())
        if worst > 1.5 * usual + 1e-6:
            seams.append((name, dict(labels), worst, usual))
    assert not seams, seams[:5]


def test_a_spanned_window_holds_the_incident(spanned_windows: dict) -> None:
    """slow_query's scans show in its spans as in a whole window: the sequential scans of
    payments rise from the onset on, and each reads the rows the table holds then."""
    sp, t, v, (kinds, parts) = spanned_windows["slow_query"]
    truth = parts[0].truth
    assert truth.onset_ms is not None
    key = next(k for k in t if dict(k)["__name__"] == "pg_stat_user_tables_seq_scan"
               and dict(k)["relname"] == "payments")
    scans, tm = v[key], t[key]
    before = np.diff(scans[tm < truth.onset_ms]).mean()
    during = np.diff(scans[(tm > truth.onset_ms) & (tm < truth.onset_ms + HOUR_MS)]).mean()
    assert during > 20 * before
    rows_key = tuple((a, "pg_stat_user_tables_seq_tup_read" if a == "__name__" else b)
                     for a, b in key)
    live_key = tuple((a, "pg_stat_user_tables_n_live_tup" if a == "__name__" else b)
                     for a, b in key)
    read, live = np.diff(v[rows_key]), v[live_key][1:]
    # a whole number of scans each step, each of every row there then (the counted scans
    # also count the parallel workers that joined in: at most three per scan)
    whole = read / live
    assert np.allclose(whole, np.round(whole)) and (whole > 0).any()
    counted = np.diff(scans)
    assert (np.round(whole) <= counted).all() and (counted <= 3 * np.round(whole) + 1e-9).all()


def test_leaked_connections_outlive_their_span(spanned_windows: dict) -> None:
    """connection_leak: the connections kept since hours before stay checked out across
    every boundary until the fix (no span starts with an empty pool)."""
    sp, t, v, (kinds, parts) = spanned_windows["connection_leak"]
    key = next(k for k in t if dict(k)["__name__"] == "db_client_connections_usage_connections"
               and dict(k)["state"] == "used")
    used, tm = v[key], t[key]
    plan = parts[0].truth
    assert plan.onset_ms is not None
    full = used >= 10
    assert full.sum() > 60  # the pool was held full for hours
    bounds = [lo for lo, _ in sp.bounds()][1:]
    for b in bounds:
        i = int(np.searchsorted(tm, b))
        if full[i - 2:i].all():
            assert full[i:i + 2].all(), b


def test_spans_differ_from_one_another_not_copies(spanned_windows: dict) -> None:
    """Each span draws its own traffic: no two spans repeat a series' increments."""
    sp, t, v, (kinds, parts) = spanned_windows["baseline"]
    key = next(k for k in t if dict(k)["__name__"] == "http_requests_total"
               and dict(k)["handler"] == "/payment")
    per_span = [np.diff(v[key][(t[key] > lo) & (t[key] <= hi)]) for lo, hi in sp.bounds()]
    assert len({p.tobytes() for p in per_span}) == len(per_span)


def test_which_windows_go_span_by_span_and_their_memory_estimate() -> None:
    day = 86_400_000
    assert not spanned(SPANNED_FROM_MS, ("metrics",))
    assert spanned(SPANNED_FROM_MS + 15_000, ("metrics",))
    assert not spanned(100 * day, ("metrics", "logs"))
    # a spanned window needs what one span needs, whatever its length
    hundred = estimate_memory("slow_query", 100 * day, None, None, ("metrics",))
    ten = estimate_memory("slow_query", 10 * day, None, None, ("metrics",))
    one_span = estimate_memory("slow_query", SPAN_MS)
    assert hundred == ten == one_span
    whole = estimate_memory("slow_query", 100 * day, None, None, ("metrics", "logs"))
    assert whole[0] > 50 * hundred[0]


def test_a_span_is_a_window_of_whole_steps() -> None:
    from generator import ScenarioError

    # a step that does not divide six hours: the spans are the whole steps that fit
    odd = generate_spans("slow_query", 1, 37_100 * 7_000, 7_000)  # 3 days and a bit
    assert odd.span_ms == SPAN_MS - SPAN_MS % 7_000
    assert all(lo % 7_000 == 0 and hi % 7_000 == 0 for lo, hi in odd.bounds())
    assert odd.bounds()[-1][1] == odd.duration_ms
    with pytest.raises(ScenarioError, match="whole number of steps"):
        generate_spans("slow_query", 1, 3 * 86_400_000, 15_000, span_ms=20_000)
    with pytest.raises(ScenarioError, match="seed"):
        generate_spans("slow_query", -1, 3 * 86_400_000)


def test_first_span_opens_like_a_whole_window() -> None:
    """The first span warms up before the window as generate() does: the service is
    running when the window opens (requests in flight, a pool with connections)."""
    first = next(iter(generate_spans("baseline", 1, 3 * HOUR_MS, 15_000, span_ms=HOUR_MS)))
    whole = generate("baseline", 1, HOUR_MS, 15_000, signals=("metrics",))
    names = {s.name for s in whole.series}
    assert {s.name for s in first.series} == names
    cpu = next(s for s in first.iter_series("process_cpu_seconds_total")
               if s.label("job") == "payment-service")
    assert cpu.values[0] > 40  # a process that ran before the window


def test_a_queue_without_bound_stops_the_spans_with_the_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """lock_contention over 12 h queues tens of thousands of requests behind the lock (the
    model's queue for threads has no bound): past the limit of what a span hands on, the
    spans stop, after the last one that could be generated, with the reason and the fix."""
    import generator.chunks as chunks
    from generator import ScenarioError

    monkeypatch.setattr(chunks, "MAX_IN_FLIGHT", 5_000)
    got = []
    with pytest.raises(ScenarioError, match=r"(?s)requests in flight at once .* fix: a shorter "
                                            r"--duration") as err:
        for inc in generate_spans("lock_contention", 2, 12 * HOUR_MS, 30_000,
                                  span_ms=HOUR_MS):
            got.append(inc)
    assert 0 < len(got) < 12
    assert f"the first {len(got)} of 12 spans were" in str(err.value)


@pytest.mark.parametrize("scenario", sorted(set(SCENARIOS) - {"connection_leak",
                                                              "too_many_clients"}))
def test_the_limits_hold_across_spans(spanned_windows: dict, scenario: str) -> None:
    """The realism rules of test_physics.py, on the published series of a spanned window:
    a thread waits for a connection or holds one, the pool never goes over its size, and a
    request waiting or holding is one in flight. (connection_leak and too_many_clients
    need their traces to correct the gauges, which a spanned window does not build.)"""
    from generator.scenarios import KNOB_DEFAULTS

    sp, t, v, (kinds, parts) = spanned_windows[scenario]

    def app(name: str, **labels: str) -> np.ndarray:
        found = [v[k] for k in v if dict(k)["__name__"] == name
                 and dict(k)["job"] == "payment-service"
                 and all(dict(k).get(a) == b for a, b in labels.items())]
        assert found, name
        n = min(len(f) for f in found)  # a series of one process only is shorter
        return np.sum([f[-n:] for f in found], axis=0)

    active = app("http_server_active_requests")
    pending = app("db_client_connection_pending_requests")
    used = app("db_client_connections_usage_connections", state="used")
    n = min(active.size, pending.size, used.size)
    active, pending, used = active[-n:], pending[-n:], used[-n:]
    pool = sp.knobs["pool_size"] + sp.knobs["max_overflow"]
    assert used.max() <= pool
    assert np.all(pending + used <= active)
    assert np.all(pending <= KNOB_DEFAULTS["worker_threads"] - used)
