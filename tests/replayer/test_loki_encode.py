"""Decode what we send with Loki's push.proto fields (and JSON) and compare exactly."""

from __future__ import annotations

import json

import cramjam
import pytest

from benchmarks.naive import naive_loki_request
from replayer.loki import push_pb2
from replayer.loki.encode import (
    StreamEncoder,
    compress,
    entry_costs,
    json_request,
    label_string,
    plan_batches,
    proto_request,
)
from replayer.timeshift import shift
from tests.conftest import cached_incident
from tests.replayer.captures import capture

END_NS = 1_795_778_400_000 * 1_000_000


@pytest.mark.parametrize("scenario", ["slow_query", "pool_exhaustion"])
def test_proto_bytes_equal_the_schema_and_decode_to_the_recording(scenario: str) -> None:
    inc = shift(cached_incident(scenario), END_NS)
    total = 0
    for b in plan_batches(inc.log_streams, 1000, 1 << 20):
        stream = inc.log_streams[b.stream]
        body = proto_request(stream, b.lo, b.hi)
        assert body == naive_loki_request(stream, b.lo, b.hi)
        req = push_pb2.PushRequest.FromString(bytes(cramjam.snappy.decompress_raw(
            compress(body))))
        (s,) = req.streams
        assert s.labels == label_string(stream.labels)
        for i, e in zip(range(b.lo, b.hi), s.entries):
            assert e.timestamp.seconds * 10**9 + e.timestamp.nanos == stream.t_ns[i]
            assert e.line == stream.lines[i]
            assert tuple((m.name, m.value) for m in e.structuredMetadata) == stream.metadata[i]
        total += b.entries
    assert total == inc.log_line_count


def test_lines_and_observed_times_carry_the_replayed_time() -> None:
    base = cached_incident("slow_query")
    inc = shift(base, END_NS)
    pg = next(s for s in inc.log_streams if dict(s.labels)["service_name"] == "postgres")
    assert pg.lines[0].startswith("2026-11-27 ") and " LOG:  duration: " in pg.lines[0]
    app = next(s for s in inc.log_streams if dict(s.labels)["service_name"] ==
               "payment-service")
    relative = next(s for s in base.log_streams if s.labels == app.labels)
    delta = END_NS - base.duration_ms * 1_000_000
    for i in (0, len(app) // 2, len(app) - 1):
        assert int(dict(app.metadata[i])["observed_timestamp"]) == \
            int(dict(relative.metadata[i])["observed_timestamp"]) + delta
        assert int(app.t_ns[i]) == int(relative.t_ns[i]) + delta
        # everything else is sent as generated
        assert {k: v for k, v in app.metadata[i] if k != "observed_timestamp"} == \
            {k: v for k, v in relative.metadata[i] if k != "observed_timestamp"}


def test_json_matches_the_captured_request_shape() -> None:
    inc = shift(cached_incident("slow_query"), END_NS)
    stream = inc.log_streams[0]
    body = json.loads(json_request(stream, 0, 3))
    sent = capture("loki_push_json_ok")["request"]["body"]
    assert body.keys() == sent.keys()
    assert body["streams"][0].keys() == sent["streams"][0].keys()
    row = body["streams"][0]["values"][0]
    assert row[0] == str(int(stream.t_ns[0])) and isinstance(row[0], str)
    assert row[1] == stream.lines[0]
    assert all(len(r) == (3 if stream.metadata[i] else 2)
               for i, r in enumerate(body["streams"][0]["values"]))


def test_label_string_escapes() -> None:
    assert label_string((("a", 'x"y'), ("b", "c\\d"))) == '{a="x\\"y", b="c\\\\d"}'


def test_batches_respect_limits_and_cover_everything() -> None:
    streams = cached_incident("slow_query").log_streams
    batches = list(plan_batches(streams, 700, 64 * 1024))
    assert all(b.entries <= 700 for b in batches)
    small = list(plan_batches(streams, 5000, 16 * 1024))
    for b in small:
        cost = entry_costs(streams[b.stream]) + 16
        assert b.entries == 1 or cost[b.lo:b.hi].sum() <= 16 * 1024
        if b.hi < len(streams[b.stream]):  # greedy: one more entry would not have fit
            assert cost[b.lo:b.hi + 1].sum() > 16 * 1024
    for si, s in enumerate(streams):
        mine = [b for b in batches if b.stream == si]
        assert mine[0].lo == 0 and mine[-1].hi == len(s)
        assert all(a.hi == b.lo for a, b in zip(mine, mine[1:]))


def test_edge_entries_equal_the_schema() -> None:
    """Empty lines and values, whole seconds, the epoch itself, non-ASCII text, varint
    boundaries: the vectorized heads must still be protobuf's bytes exactly."""
    import numpy as np

    from generator.model import LogStream

    lines = ("", "x" * 127, "y" * 128, "café ☕ done", "", "z" * 300, "plain", "")
    meta = ((), (("trace_id", "ab" * 16),), (("k", ""),), (("note", "naïve"),),
            (("a", "1"), ("b", "2")), (), (("span_id", "c" * 16),), ())
    t = np.array([0, 0, 1, 10**9, 5 * 10**9 + 1, 2**33 * 10**9 + 999_999_999,
                  1_795_778_400_123_456_789, 0], np.int64)
    stream = LogStream((("service_name", "ünï"),), np.sort(t), lines, meta)
    for lo in range(len(lines)):
        for hi in range(lo, len(lines) + 1):
            assert proto_request(stream, lo, hi) == naive_loki_request(stream, lo, hi), (lo, hi)


def test_entry_costs_count_utf8_bytes_of_lines_and_metadata() -> None:
    import numpy as np

    from generator.model import LogStream

    stream = LogStream((("a", "b"),), np.arange(3, dtype=np.int64), ("é", "", "abc"),
                       ((("k", "ü"),), (), (("trace_id", "ab"), ("x", ""))))
    assert entry_costs(stream).tolist() == [2 + 1 + 2, 0, 3 + 8 + 2 + 1]


@pytest.mark.parametrize("metadata", [
    ((("span_id", "a" * 16), ("trace_id", "b" * 32)),) * 4,  # one shape: by columns
    ((("k", "x"),), (("k", "yy"),), (("k", "z"),), (("k", ""),)),  # value lengths differ
    ((("a", "1"),), (("b", "2"),), (("a", "3"),), (("b", "4"),)),  # names differ
    ((("k", "é"),), (("k", "ü"),), (("k", "a"),), (("k", "b"),)),  # one length, not ASCII
    ((("k", "v"), ("l", "w")), (("k", "v"),), (), (("k", "v"), ("l", "w"))),  # pair counts
    # OTLP-ingested lines: the same names, one value's length varying, a line without
    # trace context among them, a non-ASCII value in a group
    ((("a", "1"), ("o", "12")), (("a", "é"), ("o", "1")), (("o", "123"),),
     (("a", "2"), ("o", "12"))),
    # two pair counts, and within one of them two sets of names
    ((("a", "1"), ("o", "2")), (("b", "1"), ("o", "2")), (("o", "3"),),
     (("a", "2"), ("o", "1"))),
    # most entries without metadata, one with
    ((), (("k", "v"),), (), ()),
    # a constant column but for one entry (equal pairs, not the same objects)
    ((("c", "x"), ("t", "1")), (("c", "x"), ("t", "2")), (("c", "y"), ("t", "3")),
     (("c", "x"), ("t", "4"))),
    # the common shape with outliers first and last
    ((("o", "1"),), (("c", "x"), ("t", "1")), (("c", "x"), ("t", "22")), ()),
])
def test_metadata_shapes_equal_the_schema(metadata) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from generator.model import LogStream

    stream = LogStream((("service_name", "s"),), np.arange(4, dtype=np.int64) + 10**18,
                       ("l1", "l2", "", "l4"), metadata)
    assert proto_request(stream, 0, 4) == naive_loki_request(stream, 0, 4)
    assert proto_request(stream, 1, 3) == naive_loki_request(stream, 1, 3)
    # one encoder for the whole stream serves every range, as the pusher uses it
    enc = StreamEncoder(stream)
    for lo in range(5):
        for hi in range(lo, 5):
            assert enc.request(lo, hi) == naive_loki_request(stream, lo, hi), (lo, hi)
    assert enc.costs.tolist() == _costs_by_definition(stream)


def _costs_by_definition(stream) -> list[int]:  # type: ignore[no-untyped-def]
    return [len(line.encode()) + sum(len(k.encode()) + len(v.encode()) for k, v in meta)
            for line, meta in zip(stream.lines, stream.metadata)]


def test_one_encoder_per_stream_equals_the_schema_across_mixed_shapes() -> None:
    """A payment-service-like stream: fifteen names on most lines, ten of them constant,
    one value of varying length, lines without trace context (fewer pairs) scattered among
    them; every batch boundary, including ones right before and after such a line."""
    import numpy as np

    from generator.model import LogStream

    rng = np.random.default_rng(7)
    const = tuple((f"c{j:02d}", f"value-{j}") for j in range(10))
    metadata, lines = [], []
    for i in range(300):
        if i % 37 == 5:
            metadata.append((("scope_name", "uvicorn.error"),))
        elif i % 53 == 0:
            metadata.append(())
        else:
            varying = (("observed", str(int(rng.integers(1, 10**int(rng.integers(1, 12)))))),
                       ("span_id", f"{i:016x}"), ("trace_id", f"{i * 7919:032x}"),
                       ("note", "é" if i % 11 == 0 else "e"))
            metadata.append(tuple(sorted(const + varying)))
        lines.append(f"line {i} " + "ü" * (i % 3))
    stream = LogStream((("service_name", "payment-service"),),
                       np.arange(300, dtype=np.int64) * 1_000_003 + 10**18, tuple(lines),
                       tuple(metadata))
    enc = StreamEncoder(stream)
    assert enc.costs.tolist() == _costs_by_definition(stream)
    edges = sorted({0, 300, *range(0, 300, 37), *range(4, 300, 37), *range(6, 300, 37),
                    *range(0, 300, 53), *range(1, 300, 53)})
    for lo, hi in zip(edges, edges[1:]):
        assert enc.request(lo, hi) == naive_loki_request(stream, lo, hi), (lo, hi)
    assert enc.request(0, 300) == naive_loki_request(stream, 0, 300)
    for b in plan_batches([stream], 40, 1 << 20):
        assert enc.request(b.lo, b.hi) == naive_loki_request(stream, b.lo, b.hi)


@pytest.mark.parametrize("kind", ["python", "postgres"])
def test_printed_times_render_as_the_program_prints_them(kind: str) -> None:
    """The prefix of every line at once equals the one-line rendering (datetime's
    strftime), at the epoch, at millisecond and day edges, and across 1970-2100."""
    import numpy as np

    from replayer.timeshift import render_prefix, render_prefixes

    rng = np.random.default_rng(5)
    t = np.concatenate([rng.integers(0, 4_102_444_800 * 10**9, 2000, dtype=np.int64),
                        np.array([0, 999_999, 1_000_000, 86_399_999_999_999,
                                  86_400 * 10**9, 951_782_400 * 10**9 - 1], np.int64)])
    assert render_prefixes(kind, t) == [render_prefix(kind, int(x)) for x in t]
    assert render_prefixes(None, t[:3]) == ["", "", ""]
    with pytest.raises(Exception, match="unknown log time_prefix"):
        render_prefixes("java", t[:1])
