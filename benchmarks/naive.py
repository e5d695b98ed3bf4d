"""Baseline (b): the naive remote-write encoder, one protobuf object per sample.

It is also the reference the fast encoder must equal byte for byte (tests use it)."""

from __future__ import annotations

from collections.abc import Sequence

from generator.model import Series
from replayer.remote_write import remote_pb2
from replayer.remote_write.encode import Piece


def naive_write_request(series: Sequence[Series], pieces: Sequence[Piece]) -> bytes:
    wr = remote_pb2.WriteRequest()
    for p in pieces:
        s = series[p.series]
        ts = wr.timeseries.add()
        for k, v in s.labels:
            ts.labels.add(name=k, value=v)
        for t, v in zip(s.t_ms[p.lo:p.hi].tolist(), s.values[p.lo:p.hi].tolist()):
            ts.samples.add(value=v, timestamp=t)
        e = s.exemplars
        for i in range(p.ex_lo, p.ex_hi):
            ex = ts.exemplars.add(value=float(e.value[i]), timestamp=int(e.t_ms[i]))
            ex.labels.add(name="span_id", value=bytes(e.span_id[i]).hex())
            ex.labels.add(name="trace_id", value=bytes(e.trace_id[i]).hex())
    return wr.SerializeToString()


def naive_loki_request(stream, lo: int, hi: int) -> bytes:  # type: ignore[no-untyped-def]
    """Baseline (b) for logs: one push_pb2 message object per entry."""
    from replayer.loki import push_pb2
    from replayer.loki.encode import label_string

    req = push_pb2.PushRequest()
    s = req.streams.add(labels=label_string(stream.labels))
    for i in range(lo, hi):
        e = s.entries.add(line=stream.lines[i])
        e.timestamp.seconds, e.timestamp.nanos = divmod(int(stream.t_ns[i]), 10**9)
        for k, v in stream.metadata[i]:
            e.structuredMetadata.add(name=k, value=v)
    return req.SerializeToString()


def _set_attr(kv, key, value) -> None:  # type: ignore[no-untyped-def]
    kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value


def naive_otlp_request(tables, batches) -> bytes:  # type: ignore[no-untyped-def]
    """Baseline (b) for traces: one opentelemetry-proto object per span and attribute."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    req = trace_service_pb2.ExportTraceServiceRequest()
    for b in batches:
        t = tables[b.table]
        rs = req.resource_spans.add()
        for k, v in t.resource:
            _set_attr(rs.resource.attributes.add(), k, v)
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = t.scope_name, t.scope_version
        ss.schema_url = t.scope_schema_url
        flags = t.span_flags()
        for i in range(b.lo, b.hi):
            sp = ss.spans.add(trace_id=t.trace_id[i].tobytes(), span_id=t.span_id[i].tobytes(),
                              name=t.name[i], kind=int(t.kind[i]),
                              start_time_unix_nano=int(t.start_ns[i]),
                              end_time_unix_nano=int(t.end_ns[i]))
            if t.parent_span_id[i].any():
                sp.parent_span_id = t.parent_span_id[i].tobytes()
            for k, v in t.attributes[i]:
                _set_attr(sp.attributes.add(), k, v)
            for e in t.events[i]:
                ev = sp.events.add(time_unix_nano=e.t_ns, name=e.name)
                for k, v in e.attributes:
                    _set_attr(ev.attributes.add(), k, v)
            if t.status_code[i] or t.status_message[i]:
                sp.status.code = int(t.status_code[i])
                sp.status.message = t.status_message[i]
            sp.flags = int(flags[i])
    return req.SerializeToString()


def sdk_export_spans(tables) -> int:  # type: ignore[no-untyped-def]
    """Baseline (c): what a user would otherwise write: the OpenTelemetry Python SDK creating
    the same spans and its OTLP exporter's encoder serialising them. Returns bytes made."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult as Result
    from opentelemetry.trace import SpanContext, TraceFlags

    made = [0]

    class Encode(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            made[0] += len(encode_spans(spans).SerializeToString())
            return Result.SUCCESS

    for t in tables:
        provider = TracerProvider(resource=Resource.create(dict(t.resource)),
                                  shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(Encode()))
        tracer = provider.get_tracer(t.scope_name, t.scope_version)
        for i in range(len(t)):
            parent = None
            if t.parent_span_id[i].any():
                ctx = SpanContext(int.from_bytes(t.trace_id[i].tobytes(), "big"),
                                  int.from_bytes(t.parent_span_id[i].tobytes(), "big"),
                                  is_remote=False, trace_flags=TraceFlags(1))
                parent = trace.set_span_in_context(trace.NonRecordingSpan(ctx))
            span = tracer.start_span(t.name[i], context=parent, kind=trace.SpanKind(t.kind[i] - 1),
                                     attributes=dict(t.attributes[i]),
                                     start_time=int(t.start_ns[i]))
            for e in t.events[i]:
                span.add_event(e.name, dict(e.attributes), timestamp=e.t_ns)
            span.end(end_time=int(t.end_ns[i]))
        provider.shutdown()
    return made[0]
