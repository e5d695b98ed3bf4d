"""Decode what we send with opentelemetry-proto and compare with the recording exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from benchmarks.naive import naive_otlp_request
from replayer.otlp.encode import TraceEncoder, plan_batches
from replayer.timeshift import shift
from tests.conftest import cached_incident

END_NS = 1_795_778_400_000 * 1_000_000


def _value(v):  # type: ignore[no-untyped-def]
    kind = v.WhichOneof("value")
    return getattr(v, kind)


@pytest.mark.parametrize("scenario", ["slow_query", "pool_exhaustion"])
def test_bytes_equal_opentelemetry_proto(scenario: str) -> None:
    tables = list(shift(cached_incident(scenario), END_NS).span_tables)
    enc = TraceEncoder(tables)
    for batches in list(plan_batches(tables, 700))[:6]:
        assert enc.request(batches) == naive_otlp_request(tables, batches)


def test_decoded_spans_equal_the_recording() -> None:
    inc = shift(cached_incident("pool_exhaustion"), END_NS)
    enc = TraceEncoder(inc.span_tables)
    seen = 0
    for batches in plan_batches(inc.span_tables, 1000):
        req = trace_service_pb2.ExportTraceServiceRequest.FromString(enc.request(batches))
        assert len(req.resource_spans) == len(batches)
        for b, rs in zip(batches, req.resource_spans):
            t = inc.span_tables[b.table]
            assert [(kv.key, _value(kv.value)) for kv in rs.resource.attributes] == list(
                t.resource)
            assert rs.scope_spans[0].scope.name == t.scope_name
            assert rs.scope_spans[0].schema_url == t.scope_schema_url
            # instrumentation libraries name their semconv schema; the app's own tracer not
            assert (t.scope_schema_url != "") == t.scope_name.startswith(
                "opentelemetry.instrumentation.")
            # the SDK says whether each span's parent is remote: local within a service,
            # remote for card-processor's spans (their parent is payment-service's call)
            remote = dict(t.resource)["service.name"] == "card-processor"
            for i, sp in zip(range(b.lo, b.hi), rs.scope_spans[0].spans):
                assert sp.flags == (0x300 if remote else 0x100) == t.span_flags()[i]
                assert sp.trace_id == t.trace_id[i].tobytes()
                assert sp.span_id == t.span_id[i].tobytes()
                assert sp.start_time_unix_nano == t.start_ns[i]
                assert sp.end_time_unix_nano == t.end_ns[i]
                assert sp.kind == t.kind[i] and sp.status.code == t.status_code[i]
                assert tuple((kv.key, _value(kv.value)) for kv in sp.attributes) == \
                    t.attributes[i]
                seen += 1
    assert seen == inc.span_count
    errors = [sp for b in plan_batches(inc.span_tables, 10**9) for sp in
              trace_service_pb2.ExportTraceServiceRequest.FromString(
                  enc.request(b)).resource_spans[0].scope_spans[0].spans
              if sp.status.code == trace_pb2.Status.STATUS_CODE_ERROR]
    assert errors and errors[0].events[0].name == "exception"


def test_batches_cover_every_span_once() -> None:
    tables = cached_incident("slow_query").span_tables
    batches = [b for group in plan_batches(tables, 333) for b in group]
    assert all(sum(b.spans for b in g) <= 333 for g in plan_batches(tables, 333))
    for ti, t in enumerate(tables):
        covered = sorted((b.lo, b.hi) for b in batches if b.table == ti)
        assert covered[0][0] == 0 and covered[-1][1] == len(t)
        assert all(a[1] == b[0] for a, b in zip(covered, covered[1:]))


def _traces_of(tables, group):  # type: ignore[no-untyped-def]
    return {bytes(tables[b.table].trace_id[i]) for b in group for i in range(b.lo, b.hi)}


def test_each_request_holds_whole_traces_in_time_order() -> None:
    """Every span of a trace goes in one request (Tempo then holds the whole trace when it
    arrives), and the requests follow the traces' start: the incident's traces become
    searchable while the rest of the window is still being sent."""
    tables = cached_incident("slow_query").span_tables
    assert len(tables) > 2  # server, client and database spans: a trace spans tables
    groups = list(plan_batches(tables, 500))
    assert all(sum(b.spans for b in g) <= 500 for g in groups)
    owner: dict[bytes, int] = {}
    for gi, g in enumerate(groups):
        assert len({b.table for b in g}) > 1  # each request draws on several tables
        for tid in _traces_of(tables, g):
            assert owner.setdefault(tid, gi) == gi, "a trace was split across requests"
    # the traces of a later request began no earlier than the last of an earlier one's
    starts = _trace_starts(tables)
    spans = [(min(starts[t] for t in _traces_of(tables, g)),
              max(starts[t] for t in _traces_of(tables, g))) for g in groups]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def _trace_starts(tables):  # type: ignore[no-untyped-def]
    starts: dict[bytes, int] = {}
    for t in tables:
        for tid, st in zip(t.trace_id, t.start_ns.tolist()):
            key = bytes(tid)
            starts[key] = min(starts.get(key, st), st)
    return starts


@pytest.mark.parametrize("first_spans", [None, 120])
def test_the_traces_from_first_ns_on_go_first_then_the_ones_before(
        first_spans: int | None) -> None:
    """... and with ``first_spans``, the first request is that small, the others not."""
    tables = cached_incident("slow_query").span_tables
    starts = _trace_starts(tables)
    first = sorted(starts.values())[len(starts) * 2 // 3]
    groups = list(plan_batches(tables, 500, first_ns=first, first_spans=first_spans))
    assert sum(b.spans for g in groups for b in g) == sum(len(t) for t in tables)
    sizes = [sum(b.spans for b in g) for g in groups]
    assert 490 <= max(sizes[1:]) <= 500
    assert 0 < sizes[0] <= (first_spans or 500) and sizes[0] > (first_spans or 500) - 20
    lo_hi = [(min(starts[t] for t in _traces_of(tables, g)),
              max(starts[t] for t in _traces_of(tables, g))) for g in groups]
    after = [i for i, (lo, _) in enumerate(lo_hi) if lo >= first]
    assert after == list(range(len(after))) and 0 < len(after) < len(groups)
    assert all(hi < first for _, hi in lo_hi[len(after):])  # then the earlier ones
    for part in (lo_hi[:len(after)], lo_hi[len(after):]):  # each in time order
        assert all(a[1] <= b[0] for a, b in zip(part, part[1:]))
    owner: dict[bytes, int] = {}
    for gi, g in enumerate(groups):
        for tid in _traces_of(tables, g):
            assert owner.setdefault(tid, gi) == gi
    assert len(owner) == len(starts)


def test_a_trace_larger_than_a_request_goes_alone() -> None:
    tables = cached_incident("slow_query").span_tables
    big = max(range(len(tables)), key=lambda i: len(tables[i]))
    per_trace = max(np.unique(tables[big].trace_id, axis=0, return_counts=True)[1])
    groups = list(plan_batches(tables, int(per_trace) - 1 if per_trace > 1 else 1))
    total = sum(b.spans for g in groups for b in g)
    assert total == sum(len(t) for t in tables)
    for g in groups:
        traces = _traces_of(tables, g)
        assert len(traces) == 1 or sum(b.spans for b in g) <= max(per_trace - 1, 1)


def test_tables_out_of_trace_order_go_table_by_table() -> None:
    """A hand-made recording whose spans are not in order of their trace's start is still
    sent whole, each span once, a table at a time."""
    t = cached_incident("slow_query").span_tables[0]
    rev = dataclasses.replace(t, **{f: getattr(t, f)[::-1] for f in (
        "trace_id", "span_id", "parent_span_id", "start_ns", "end_ns", "kind", "status_code",
        "name", "status_message", "attributes", "events")})
    groups = list(plan_batches([rev], 100))
    assert [(b.lo, b.hi) for g in groups for b in g] == [
        (lo, min(lo + 100, len(rev))) for lo in range(0, len(rev), 100)]


def test_a_request_never_outgrows_a_grpc_message() -> None:
    """too_many_clients' error spans each carry a stack trace: 2000 of them are over the
    4 MiB a gRPC server takes by default (Tempo refused them: 'received message larger than
    max'). Requests are cut until each fits, and every span is still sent once."""
    from replayer.otlp.encode import TraceEncoder, plan_batches
    from replayer.otlp.push import MAX_REQUEST_BYTES, within

    tables = cached_incident("too_many_clients").span_tables
    enc = TraceEncoder(tables)
    sizes, spans, cut = [], 0, 0
    for batches in plan_batches(tables, 2000):
        whole = len(enc.request(batches))
        pieces = within(enc, batches, MAX_REQUEST_BYTES)
        cut += len(pieces) > 1 and whole > MAX_REQUEST_BYTES
        sizes += [len(body) for _, body in pieces]
        spans += sum(b.spans for bs, _ in pieces for b in bs)
    assert cut >= 1  # the incident does hold requests that needed cutting
    assert max(sizes) <= MAX_REQUEST_BYTES
    assert spans == sum(len(t) for t in tables)


def test_edge_spans_equal_opentelemetry_proto_for_every_range() -> None:
    """IDs and times ending in zero bytes, times near the epoch, every attribute type by
    columns (strings of varying size and non-ASCII, ints negative and past 32 bits,
    bools, floats with 0.0 and -0.0, a column mixing types), attribute lists of several
    lengths and names, events, statuses, flags: byte for byte what opentelemetry-proto
    writes, for every range of spans."""
    from generator.model import SpanEvent, SpanTable

    n = 12
    rng = np.random.default_rng(3)
    trace = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    span = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    parent = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    trace[::3, -1] = span[::2, -1] = parent[1::3, -1] = 0  # rows ending in zero bytes
    parent[::4] = 0  # roots
    start = np.array([0, 1, 255, 256, 2**32, 2**40, 10**18, 1_795_778_400_000_000_000,
                      7, 8, 9, 10], np.int64)
    end = start + np.array([0, 1, 2, 2**8, 2**16, 5, 6, 7, 8, 9, 10, 2**56], np.int64)
    attrs = []
    for i in range(n):
        if i == 4:
            attrs.append((("only", "one"),))
        elif i == 5:
            attrs.append(())
        elif i in (6, 7):  # same count as the rest, other names
            attrs.append((("a", i), ("b", "x"), ("c", True), ("d", 0.5), ("e", "é")))
        else:
            attrs.append((("http.route", "/p" + "ä" * (i % 3) + "x" * (i * 20)),
                          ("port", [-1, 0, 127, 128, 2**31, 2**40, -2**63, 5, 6, 7][i % 10]),
                          ("ok", i % 2 == 0), ("ratio", [0.0, -0.0, 1.5][i % 3]),
                          ("mixed", [1, True, "1"][i % 3])))
    events = tuple((SpanEvent("exception", int(start[i]) + 1, (("exception.type", "E"),
                                                               ("n", i))),)
                   if i % 5 == 0 else () for i in range(n))
    table = SpanTable(
        resource=(("service.name", "s"),), scope_name="x", scope_version="1",
        trace_id=trace, span_id=span, parent_span_id=parent, start_ns=start, end_ns=end,
        kind=np.array([i % 6 for i in range(n)], np.int8),
        status_code=np.array([i % 3 for i in range(n)], np.int8),
        name=tuple("" if i == 2 else f"span-{i % 4}" for i in range(n)),
        status_message=tuple("boom" if i % 3 == 2 else "" for i in range(n)),
        attributes=tuple(attrs), events=events,
        flags=np.array([0, 0x100, 0x300, 0x1] * 3, np.uint32))
    from replayer.otlp.encode import SpanBatch

    enc = TraceEncoder([table])
    for lo in range(n + 1):
        for hi in range(lo, n + 1):
            batch = [SpanBatch(0, lo, hi)]
            assert enc.request(batch) == naive_otlp_request([table], batch), (lo, hi)


def test_chunked_writers_equal_opentelemetry_proto_going_forward_and_back(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A table is read a chunk of rows at a time: requests that go forward through it, then
    back to its start (the traces before the onset go last), across chunk edges, give the
    same bytes as protobuf's own classes."""
    import replayer.otlp.encode as encode

    monkeypatch.setattr(encode, "CHUNK_SPANS", 37)
    monkeypatch.setattr(encode, "FIRST_CHUNK_SPANS", 3)  # chunks of 3, 12, 37, 37, ...
    tables = list(shift(cached_incident("pool_exhaustion"), END_NS).span_tables)
    starts = _trace_starts(tables)
    first = sorted(starts.values())[len(starts) // 2]
    enc = TraceEncoder(tables)
    plan = list(plan_batches(tables, 9, first_ns=first))
    chunks: dict[int, list[tuple[int, int]]] = {}
    for batches in plan[:60] + plan[-60:]:
        assert enc.request(batches) == naive_otlp_request(tables, batches)
        for table, (lo, hi, _) in enc._writers.items():
            if not chunks.get(table) or chunks[table][-1] != (lo, hi):
                chunks.setdefault(table, []).append((lo, hi))
    assert any(lo > 0 for lo, _, _ in enc._writers.values())  # chunks were taken
    # a table's first chunk holds about what the first request asks of it, and they grow
    sizes = [hi - lo for lo, hi in max(chunks.values(), key=len)]
    assert sizes[0] <= 9 and max(sizes) == 37 and sizes[:3] == sorted(sizes[:3]), sizes
