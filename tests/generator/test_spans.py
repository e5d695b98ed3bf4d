"""Spans and logs time like a real process: nothing exact to the nanosecond (issue 21)."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from generator.model import Incident
from tests.conftest import cached_incident, error_records


def _gaps(inc: Incident) -> list[int]:
    """Idle time between consecutive children of each server span."""
    children: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for t in inc.span_tables:
        for i in range(len(t)):
            parent = bytes(t.parent_span_id[i])
            if any(parent):
                children[parent].append((int(t.start_ns[i]), int(t.end_ns[i])))
    gaps = []
    for spans in children.values():
        spans.sort()
        gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:])]
    return gaps


def test_no_gap_between_spans_repeats_across_the_window(incident: Incident) -> None:
    gaps = _gaps(incident)
    assert len(gaps) > 1000
    value, count = Counter(gaps).most_common(1)[0]
    # at nanosecond resolution a few values meet by chance; a constant gap would be most
    assert count <= max(5, len(gaps) // 200), (value, count)
    assert len(set(gaps)) > 0.9 * len(gaps)
    assert min(gaps) >= 0, "siblings overlap"


def test_children_stay_inside_their_server_span(incident: Incident) -> None:
    servers = [t for t in incident.span_tables if t.scope_name.endswith(".fastapi")]
    bounds = {bytes(server.span_id[i]): (int(server.start_ns[i]), int(server.end_ns[i]))
              for server in servers for i in range(len(server))}
    for t in incident.span_tables:
        if t.scope_name.endswith(".fastapi"):
            continue
        for i in range(len(t)):
            start, end = bounds[bytes(t.parent_span_id[i])]
            assert start <= t.start_ns[i] <= t.end_ns[i] <= end


def test_error_lines_follow_the_exception_by_a_varying_delay() -> None:
    inc = cached_incident("error_spike")
    raised = {}
    for t in inc.span_tables:
        for i in range(len(t)):
            for e in t.events[i]:
                raised[bytes(t.trace_id[i]).hex()] = e.t_ns
    delays = np.array([t - raised[meta["trace_id"]] for t, _, meta in error_records(inc)])
    assert delays.size > 100 and delays.min() >= 0
    assert np.unique(delays).size > 0.9 * delays.size


def test_traceback_frames_quote_live_app_at_their_line_numbers() -> None:
    """The generated tracebacks name live_app's lines: each frame's number must still point
    at the code it quotes (an edit to live_app/app.py moves them)."""
    import re
    from pathlib import Path

    from generator import texts
    from generator.simulate import ERR_GATEWAY, ERR_POOL_TIMEOUT

    source = {"app.py": Path("live_app/app.py").read_text().splitlines()}
    traces = [texts.stacktrace(err, route, "x.Y", "m") for err in (ERR_GATEWAY, ERR_POOL_TIMEOUT)
              for route in (0, 1)]
    checked = 0
    for trace in traces:
        for file, line, code in re.findall(r'File "[^"]*/live_app/(\w+\.py)", line (\d+), in '
                                           r'\w+\n    (.*)\n', trace):
            assert source[file][int(line) - 1].strip() == code.strip(), (file, line, code)
            checked += 1
    assert checked >= 3


def test_the_index_fix_is_live_apps_statement() -> None:
    from pathlib import Path

    from generator.texts import CREATE_LOOKUP_INDEX
    from live_app.db import LOOKUP_INDEX

    source = Path("live_app/db.py").read_text()
    assert 'f"CREATE INDEX IF NOT EXISTS {LOOKUP_INDEX} ON payments "' in source
    assert '"(idempotency_key)"' in source
    assert CREATE_LOOKUP_INDEX == (f"CREATE INDEX IF NOT EXISTS {LOOKUP_INDEX} ON payments "
                                   "(idempotency_key)")
