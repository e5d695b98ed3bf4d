"""Push traces to Tempo (or any OTLP receiver) over gRPC (4317) or HTTP/protobuf (4318).

Request bytes come from :mod:`replayer.otlp.encode`; this module only moves them. Retries:
gRPC UNAVAILABLE / RESOURCE_EXHAUSTED / DEADLINE_EXCEEDED / ABORTED and HTTP 429 / 5xx,
with the same backoff policy as the other signals. A ``partial_success`` in the answer is
counted as rejected spans.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlparse

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from generator.model import SpanTable

from ..errors import AuthError, TransportError, UsageError
from ..pipeline import send_lanes
from ..report import SignalReport
from ..transport import AUTH_FIX, HttpTransport, RetryPolicy, TargetConfig, WaitNotices
from ..wire import read_fields
from .encode import HTTP_HEADERS, SpanBatch, TraceEncoder, plan_batches

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
HTTP_PATH = "v1/traces"
RETRY_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED})


@dataclass(frozen=True)
class Answer:
    ok: bool
    rejected_spans: int
    reason: str
    retries: int


def _partial(body: bytes) -> tuple[int, str]:
    try:
        resp = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    except DecodeError:
        return 0, "the receiver's answer is not an ExportTraceServiceResponse"
    ps = resp.partial_success
    return int(ps.rejected_spans), ps.error_message


class GrpcTraces:
    """One channel, kept open; bytes in, :class:`Answer` out."""

    def __init__(self, target: TargetConfig, policy: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None,
                 notify: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        url = urlparse(target.url if "://" in target.url else "http://" + target.url)
        if not url.hostname or not url.port:
            raise UsageError(f"--tempo-url {target.url!r}: gRPC needs host:port, e.g. "
                             "http://localhost:4317")
        address = f"{url.hostname}:{url.port}"
        if url.scheme == "https":
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(target.ca_file),
                private_key=_read(target.client_cert[1]) if target.client_cert else None,
                certificate_chain=_read(target.client_cert[0]) if target.client_cert else None)
            self.channel = grpc.secure_channel(address, creds)
        else:
            self.channel = grpc.insecure_channel(address)
        self.call = self.channel.unary_unary(EXPORT_METHOD, request_serializer=None,
                                             response_deserializer=None)
        self.metadata = [(k.lower(), v) for k, v in target.auth_headers().items()]
        if target.basic_auth:
            import base64

            token = base64.b64encode(":".join(target.basic_auth).encode()).decode()
            self.metadata.append(("authorization", f"Basic {token}"))
        self.target = target
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.waiting = WaitNotices(notify, clock)
        self.sleep, self.rng = sleep, rng or random.Random()
        self.cancelled = threading.Event()

    def check(self, timeout_s: float = 5.0) -> None:
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise TransportError(
                f"cannot reach Tempo (OTLP gRPC) at {self.target.url}; start it, point "
                "--tempo-url / TEMPO_URL at it, or leave traces out with --signals "
                "metrics,logs") from None

    def export(self, body: bytes) -> Answer:
        attempt = 0
        started = self.clock()
        while True:
            try:
                answer = self.call(body, metadata=self.metadata, timeout=self.target.timeout_s)
            except grpc.RpcError as err:
                code = err.code()
                wait = self.policy.backoff(attempt, None, self.rng)
                left = self.policy.deadline_s - (self.clock() - started)
                if code in RETRY_CODES and self.policy.more(attempt) and wait <= left \
                        and not self.cancelled.is_set():
                    self.waiting.say(self.target.url, f"gRPC {code.name}", left)
                    if self.sleep is time.sleep:
                        self.cancelled.wait(wait)  # Ctrl-C ends the wait at once
                    else:
                        self.sleep(wait)
                    attempt += 1
                    continue
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    raise AuthError(f"OTLP gRPC {self.target.url}: {code.name} "
                                    f"({err.details()}): the server wants authentication.\n"
                                    + AUTH_FIX) from None
                return Answer(False, 0, f"gRPC {code.name}: {err.details()}", attempt)
            rejected, message = _partial(answer)
            return Answer(True, rejected, message, attempt)

    def cancel(self) -> None:
        """Ctrl-C: no more retries; a request on the wire ends by itself."""
        self.cancelled.set()

    def close(self) -> None:
        self.channel.close()


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


class HttpTraces:
    def __init__(self, transport: HttpTransport) -> None:
        self.transport = transport
        self.cancelled = transport.cancelled

    def check(self) -> None:
        return None  # an OTLP/HTTP receiver has no status endpoint; the first POST tells

    def export(self, body: bytes) -> Answer:
        resp, retries = self.transport.post(HTTP_PATH, body, HTTP_HEADERS)
        if 200 <= resp.status < 300:
            rejected, message = _partial(resp.raw or b"")
            return Answer(True, rejected, message, retries)
        reason = _status_message(resp.raw or b"") or resp.body.strip()[:200]
        return Answer(False, 0, f"HTTP {resp.status}: {reason}", retries)

    def cancel(self) -> None:
        self.transport.cancel()

    def close(self) -> None:
        self.transport.close()


def _status_message(body: bytes) -> str:
    """The message (field 2) of a ``google.rpc.Status`` body, as OTLP/HTTP errors carry it;
    empty when the body is not one (the caller then shows the text)."""
    try:
        fields = read_fields(body)
    except ValueError:
        return ""
    for number, value in fields:
        if number == 2 and isinstance(value, bytes):
            return value.decode("utf-8", "replace")
    return ""


# gRPC servers refuse a message over 4 MiB unless configured otherwise (Tempo's and the
# Collector's OTLP receivers among them): a request stays under this, whatever its spans
# carry (an error span's exception event holds a whole stack trace)
MAX_REQUEST_BYTES = 3_500_000


def push_traces(exporter: GrpcTraces | HttpTraces, tables: Sequence[SpanTable],
                report: SignalReport, max_spans: int = 2000,
                progress: Callable[[SignalReport], None] | None = None,
                max_bytes: int = MAX_REQUEST_BYTES, concurrency: int = 1,
                first_ns: int | None = None) -> None:
    """Export ``tables`` in requests of ``max_spans``, from ``concurrency`` lanes taking
    the requests in turn (Tempo assembles a trace from requests in any order): whole
    traces, the ones that began from ``first_ns`` on first (see ``plan_batches``)."""
    encoder = TraceEncoder(tables)
    report.sent += sum(len(t) for t in tables)
    lanes = max(1, concurrency)

    def encode(batches: list[SpanBatch]) -> list[tuple[list[SpanBatch], bytes]]:
        return within(encoder, batches, max_bytes)

    def send(_: list[SpanBatch], body: list[tuple[list[SpanBatch], bytes]]) -> None:
        for batches, request in body:
            _send(exporter, request, batches, report)

    # the incident's first traces in a small request: encoded, sent and written sooner
    plan = plan_batches(tables, max_spans, first_ns,
                        first_spans=None if first_ns is None else max_spans // 4)
    send_lanes(((i % lanes, b) for i, b in enumerate(plan)), lanes,
               encode, send, progress and (lambda: progress(report)),
               on_interrupt=exporter.cancel, halted=exporter.cancelled)


def within(encoder: TraceEncoder, batches: list[SpanBatch],
           max_bytes: int) -> list[tuple[list[SpanBatch], bytes]]:
    """``batches`` as requests of at most ``max_bytes`` each: a request over it is cut in
    two by spans, again until each fits (a single span over it goes alone)."""
    body = encoder.request(batches)
    total = sum(b.spans for b in batches)
    if len(body) <= max_bytes or total <= 1:
        return [(batches, body)]
    half, first, second = total // 2, [], []
    for b in batches:
        take = min(b.spans, max(half, 0))
        if take:
            first.append(SpanBatch(b.table, b.lo, b.lo + take))
        if take < b.spans:
            second.append(SpanBatch(b.table, b.lo + take, b.hi))
        half -= take
    return within(encoder, first, max_bytes) + within(encoder, second, max_bytes)


def _send(exporter: GrpcTraces | HttpTraces, body: bytes, batches: list[SpanBatch],
          report: SignalReport) -> None:
    spans = sum(b.spans for b in batches)
    answer = exporter.export(body)
    report.count_request(answer.retries)
    if answer.ok:
        report.add(accepted=spans - answer.rejected_spans, rejected=answer.rejected_spans,
                   reason=f"partial success: {answer.reason}")
    else:
        report.add(rejected=spans, reason=answer.reason)
