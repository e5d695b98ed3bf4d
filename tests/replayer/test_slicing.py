from __future__ import annotations

from replayer.slicing import slice_logs, slice_series, slice_spans
from replayer.timeshift import shift
from tests.conftest import cached_incident

END_NS = 1_795_778_400_000 * 1_000_000


def test_slices_partition_every_signal_exactly() -> None:
    inc = shift(cached_incident("slow_query"), END_NS)
    start_ms = END_NS // 10**6 - inc.duration_ms
    cuts = [start_ms, start_ms + 300_000, start_ms + 300_001, start_ms + 1_000_000,
            END_NS // 10**6 + 1]
    samples = lines = spans = exemplars = 0
    for lo, hi in zip(cuts, cuts[1:]):
        s = slice_series(inc.series, lo, hi)
        samples += sum(len(x) for x in s)
        exemplars += sum(len(x.exemplars) for x in s)
        assert all(lo <= x.t_ms[0] and x.t_ms[-1] < hi for x in s)
        lines += sum(len(x) for x in slice_logs(inc.log_streams, lo * 10**6, hi * 10**6))
        for t in slice_spans(inc.span_tables, lo * 10**6, hi * 10**6):
            assert ((t.end_ns >= lo * 10**6) & (t.end_ns < hi * 10**6)).all()
            spans += len(t)
    assert (samples, exemplars, lines, spans) == (inc.sample_count, inc.exemplar_count,
                                                  inc.log_line_count, inc.span_count)


def test_a_slice_of_spans_keeps_each_span_its_own_columns() -> None:
    """Every column of a sliced table belongs to the same spans (the OTLP flags too: a
    slice that kept the whole table's flags sent other spans' flags, or none at all), and
    the slice encodes to the same spans as the whole table."""
    import numpy as np

    from replayer.otlp.encode import SpanBatch, TraceEncoder
    from replayer.slicing import take_spans

    inc = shift(cached_incident("slow_query"), END_NS)
    for t in inc.span_tables:
        assert t.flags is not None
        idx = np.arange(1, len(t), 3)
        part = take_spans(t, idx)
        assert part.flags is not None and part.flags.shape == (len(idx),)
        for column in ("trace_id", "span_id", "start_ns", "end_ns", "kind", "flags"):
            assert (getattr(part, column) == getattr(t, column)[idx]).all(), column
        whole = TraceEncoder([t])
        alone = TraceEncoder([part])
        for k in (0, 7, len(idx) - 1):
            i = int(idx[k])
            assert alone.request([SpanBatch(0, k, k + 1)]) == whole.request(
                [SpanBatch(0, i, i + 1)])
