"""Traces to a real in-process gRPC server built on opentelemetry-proto's service stubs,
and over OTLP/HTTP against Tempo's captured answers."""

from __future__ import annotations

import random
import threading
from concurrent import futures

import grpc
import pytest
import responses
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from replayer.otlp.push import GrpcTraces, HttpTraces, push_traces
from replayer.report import SignalReport
from replayer.timeshift import shift
from replayer.transport import HttpTransport, RetryPolicy, TargetConfig
from tests.conftest import cached_incident
from tests.integration.prometheus_server import free_port
from tests.replayer.captures import capture

END_NS = 1_795_778_400_000 * 1_000_000


BATCH = 5000  # spans a request: well under gRPC's 4 MB default message size


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, fail_first: int = 0, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
                 rejected: int = 0) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.fail_first, self.code, self.rejected = fail_first, code, rejected
        self.lock = threading.Lock()

    def Export(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        with self.lock:
            if self.fail_first:
                self.fail_first -= 1
                context.abort(self.code, "try later")
            self.requests.append(request)
            self.metadata.append(dict(context.invocation_metadata()))
        resp = trace_service_pb2.ExportTraceServiceResponse()
        if self.rejected:
            resp.partial_success.rejected_spans = self.rejected
            resp.partial_success.error_message = "span too old"
        return resp


@pytest.fixture
def collector_server():  # type: ignore[no-untyped-def]
    started = []

    def start(collector: Collector, workers: int = 2) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
        port = free_port()
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        started.append(server)
        return f"http://127.0.0.1:{port}"

    yield start
    for server in started:
        server.stop(grace=None)


def _exporter(url: str, waits: list[float]) -> GrpcTraces:
    return GrpcTraces(TargetConfig(url, tenant="tenant-a", bearer_token="tok"),
                      policy=RetryPolicy(max_attempts=4), sleep=waits.append,
                      rng=random.Random(0))


def test_grpc_server_receives_every_span_with_tenant_metadata(collector_server) -> None:  # type: ignore[no-untyped-def]
    inc = shift(cached_incident("slow_query"), END_NS)
    collector = Collector()
    exporter = _exporter(collector_server(collector), [])
    exporter.check()
    report = SignalReport("traces", "spans")
    push_traces(exporter, inc.span_tables, report, max_spans=1500)
    exporter.close()
    assert not report.lost and report.accepted == inc.span_count
    got = {(sp.trace_id, sp.span_id, sp.name, sp.start_time_unix_nano, sp.end_time_unix_nano)
           for r in collector.requests for rs in r.resource_spans for ss in rs.scope_spans
           for sp in ss.spans}
    want = {(t.trace_id[i].tobytes(), t.span_id[i].tobytes(), t.name[i], int(t.start_ns[i]),
             int(t.end_ns[i])) for t in inc.span_tables for i in range(len(t))}
    assert got == want
    assert collector.metadata[0]["x-scope-orgid"] == "tenant-a"
    assert collector.metadata[0]["authorization"] == "Bearer tok"
    names = {rs.resource.attributes[2].value.string_value for r in collector.requests
             for rs in r.resource_spans}
    assert names == {"payment-service", "card-processor"}


class MeetingCollector(Collector):
    """The first ``n`` exports wait for one another: they meet only if they are on the
    wire at once (a sequential exporter breaks the barrier, and the test fails)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(n, timeout=20)
        self.calls = 0

    def Export(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        with self.lock:
            self.calls += 1
            meet = self.calls <= self.barrier.parties
        if meet:
            self.barrier.wait()
        return super().Export(request, context)


def test_exports_go_out_from_concurrent_lanes(collector_server) -> None:  # type: ignore[no-untyped-def]
    """--concurrency applies to traces: three exports are in flight at once, and every span
    arrives once."""
    inc = shift(cached_incident("slow_query"), END_NS)
    collector = MeetingCollector(3)
    url = collector_server(collector, workers=4)
    exporter = _exporter(url, [])
    report = SignalReport("traces", "spans")
    push_traces(exporter, inc.span_tables, report, max_spans=500, concurrency=3)
    exporter.close()
    assert not report.lost and report.accepted == inc.span_count
    spans = [sp.span_id for r in collector.requests for rs in r.resource_spans
             for ss in rs.scope_spans for sp in ss.spans]
    assert len(spans) == len(set(spans)) == inc.span_count


def test_grpc_unavailable_is_retried(collector_server) -> None:  # type: ignore[no-untyped-def]
    inc = shift(cached_incident("baseline"), END_NS)
    collector = Collector(fail_first=2)
    waits: list[float] = []
    report = SignalReport("traces", "spans")
    push_traces(_exporter(collector_server(collector), waits), inc.span_tables[:1], report,
                max_spans=BATCH)
    assert not report.lost and report.retries == 2 and len(waits) == 2
    assert report.accepted == len(inc.span_tables[0])


def test_grpc_invalid_argument_is_reported_not_retried(collector_server) -> None:  # type: ignore[no-untyped-def]
    inc = shift(cached_incident("baseline"), END_NS)
    collector = Collector(fail_first=1, code=grpc.StatusCode.INTERNAL)
    report = SignalReport("traces", "spans")
    push_traces(_exporter(collector_server(collector), []), inc.span_tables[:1], report,
                max_spans=BATCH)
    # the first request is refused and reported, not retried; the others go through
    assert report.rejected == {"gRPC INTERNAL: try later": BATCH}
    assert report.accepted == len(inc.span_tables[0]) - BATCH
    assert report.retries == 0


def test_partial_success_counts_as_rejected(collector_server) -> None:  # type: ignore[no-untyped-def]
    inc = shift(cached_incident("baseline"), END_NS)
    report = SignalReport("traces", "spans")
    collector = Collector(rejected=3)
    push_traces(_exporter(collector_server(collector), []), inc.span_tables[:1], report,
                max_spans=BATCH)
    requests = len(collector.requests)
    assert requests == -(-len(inc.span_tables[0]) // BATCH)
    assert report.rejected == {"partial success: span too old": 3 * requests} and report.lost


def test_unreachable_grpc_names_the_fix() -> None:
    from replayer.errors import TransportError

    exporter = GrpcTraces(TargetConfig(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(TransportError, match="--signals metrics,logs"):
        exporter.check(timeout_s=0.5)


@responses.activate
def test_http_path_with_tempos_real_answers() -> None:
    ok = capture("tempo_otlp_http_ok")["response"]
    bad = capture("tempo_otlp_http_bad_trace_id")["response"]
    url = "http://tempo.test:4318"
    responses.post(f"{url}/v1/traces", status=ok["status"], body=bytes.fromhex(ok["body_hex"]),
                   content_type=ok["content_type"])
    responses.post(f"{url}/v1/traces", status=bad["status"], body=bad["body"].encode("latin-1"))
    inc = shift(cached_incident("baseline"), END_NS)
    exporter = HttpTraces(HttpTransport(TargetConfig(url), sleep=lambda s: None))
    report = SignalReport("traces", "spans")
    # requests as large as the first table (this test is about the answers, not their sizes)
    push_traces(exporter, inc.span_tables, report, max_spans=len(inc.span_tables[0]),
                max_bytes=10**9)
    first = responses.calls[0].request
    assert first.headers["Content-Type"] == "application/x-protobuf"
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(first.body)
    first_spans = sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    assert 0 < first_spans <= len(inc.span_tables[0])
    assert report.accepted == first_spans
    assert report.rejected == {"HTTP 400: unmarshal: invalid TraceID length":
                               inc.span_count - first_spans}


@responses.activate
def test_a_load_sends_the_incidents_traces_first() -> None:
    """Tempo takes traces in any order: a load sends those that began from the ground
    truth's onset on first, so the incident is searchable while the calm start of the
    window is still being sent; then the earlier ones. Every span still goes once."""
    from replayer.load import LoadRequest, Targets, run_load
    from replayer.prometheus import PushOptions

    ok = capture("tempo_otlp_http_ok")["response"]
    url = "http://tempo.test:4318"
    responses.post(f"{url}/v1/traces", status=ok["status"], body=bytes.fromhex(ok["body_hex"]),
                   content_type=ok["content_type"])
    result = run_load(LoadRequest(
        "slow_query", duration_ms=1_800_000, end="2026-11-28T12:00:00Z", signals=("traces",),
        targets=Targets(tempo=TargetConfig(url), tempo_protocol="http"),
        push=PushOptions(concurrency=1)))  # one lane: the requests arrive in plan order
    onset_ns = result.start_ns + result.incident.truth.onset_ms * 1_000_000
    firsts = []
    for call in responses.calls:
        req = trace_service_pb2.ExportTraceServiceRequest.FromString(call.request.body)
        starts: dict[bytes, int] = {}
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    starts[sp.trace_id] = min(starts.get(sp.trace_id, sp.start_time_unix_nano),
                                              sp.start_time_unix_nano)
        firsts.append(min(starts.values()) >= onset_ns)
    assert firsts[0] and not firsts[-1]
    flips = sum(a != b for a, b in zip(firsts, firsts[1:]))
    assert flips == 1  # the incident's on, then the window's start up to the onset
    (report,) = result.reports
    assert report.accepted == result.incident.span_count and not report.rejected


def test_the_incidents_first_traces_go_in_a_small_first_request(collector_server) -> None:  # type: ignore[no-untyped-def]
    """With the onset given, the first request holds a quarter of a request's spans, all
    of traces that began from the onset on; every span still arrives once."""
    inc = shift(cached_incident("slow_query"), END_NS)
    onset = END_NS - inc.duration_ms * 1_000_000 + inc.truth.onset_ms * 1_000_000  # type: ignore[operator]
    collector = Collector()
    report = SignalReport("traces", "spans")
    push_traces(_exporter(collector_server(collector), []), inc.span_tables, report,
                max_spans=2000, first_ns=onset)
    assert not report.lost and report.accepted == inc.span_count
    spans = [[sp for rs in r.resource_spans for ss in rs.scope_spans for sp in ss.spans]
             for r in collector.requests]
    assert sum(map(len, spans)) == inc.span_count
    assert 400 < len(spans[0]) <= 500 and max(map(len, spans)) > 1900
    roots = [sp.start_time_unix_nano for sp in spans[0] if not sp.parent_span_id]
    assert roots and min(roots) >= onset
