"""Laying a relative incident in absolute time: spans and their events."""

from __future__ import annotations

from replayer.timeshift import shift, start_ns_for
from tests.conftest import cached_incident

END_NS = 1_795_778_400_000 * 1_000_000


def test_spans_and_their_events_move_by_the_window_start() -> None:
    """Every span's times and every event's time move by the same delta; spans without
    events keep none; the relative incident is left as it was."""
    inc = cached_incident("error_spike")
    delta = start_ns_for(inc, END_NS)
    before = [[[e.t_ns for e in evs] for evs in t.events] for t in inc.span_tables]
    moved = shift(inc, END_NS, parts=("traces",)).span_tables
    with_events = 0
    for t, m, times in zip(inc.span_tables, moved, before):
        assert (m.start_ns == t.start_ns + delta).all() and (m.end_ns == t.end_ns + delta).all()
        assert len(m.events) == len(t.events)
        for evs, mevs, ts in zip(t.events, m.events, times):
            assert [e.t_ns for e in mevs] == [x + delta for x in ts]
            assert [(e.name, e.attributes) for e in mevs] == [(e.name, e.attributes)
                                                               for e in evs]
            assert [e.t_ns for e in evs] == ts  # the original is untouched
            with_events += bool(evs)
    assert 0 < with_events < sum(len(t) for t in moved)  # both kinds were there
