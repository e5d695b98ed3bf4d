"""card-processor as a service of its own: its side of every charge payment-service makes.

live_app's card processor (``live_app/card_processor.py``) is a FastAPI service with the
OpenTelemetry FastAPI instrumentation and the Prometheus process collectors; a charge is a
server span (the child of payment-service's httpx client span) and a sample of its
``http_server_request_duration_seconds``. Its answer time is most of the client's: the
client span adds the connection's share (writing the request, reading the answer) around
it. In upstream_latency and upstream_errors this is where the fault is, so the root cause
has telemetry of its own.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace

import numpy as np

from .model import Attributes, SpanTable, frozen_array
from .queue import covering
from .resource import INSTRUMENTATION_VERSION, SCHEMA_URL
from .series import SeriesBuilder
from .simulate import ERR_GATEWAY, TraceIds, Traffic

CARD_JOB = {"job": "card-processor", "instance": "card-processor:8080"}
CARD_RESOURCE: Attributes = (
    ("deployment.environment", "demo"),
    ("service.instance.id", "card-processor-5c7d9b8f4-q8w2m"),
    ("service.name", "card-processor"),
    ("service.namespace", "shop"),
    ("service.version", "2.3.0"),
    ("telemetry.sdk.language", "python"),
    ("telemetry.sdk.name", "opentelemetry"),
    ("telemetry.sdk.version", "1.45.2"),
)
FASTAPI = {"otel_scope_name": "opentelemetry.instrumentation.fastapi",
           "otel_scope_version": INSTRUMENTATION_VERSION, "otel_scope_schema_url": SCHEMA_URL}
PAYMENT_SERVICE_IP = "10.0.2.14"  # the pod payment-service's charges come from
CARD_PROCESSOR_IP = "10.0.6.9"  # the card processor's pod, where the client connects
KEEPALIVE = 24  # pooled connections httpx keeps to the processor (their client ports)
# bodies as live_app's processor writes them: {"id": "ch_…", "status": "succeeded", …} and
# {"error": "overloaded, try again later"}; the request is payment-service's JSON charge
RESPONSE_BYTES = {201: 77, 503: 39}
REQUEST_BYTES = 38
SPAN_MASK = np.frombuffer(bytes.fromhex("5ac3e1977d2b4f06"), np.uint8)
SPAN_FLAGS_HAS_IS_REMOTE_PARENT = 0x100 | 0x200  # its parent came over the wire


@dataclass(frozen=True)
class Upstream:
    """Every charge as the card processor served it (rows of the requests that called)."""

    rows: np.ndarray  # traffic rows, ascending
    start_ns: np.ndarray
    end_ns: np.ndarray
    status: np.ndarray  # 201 or 503


def upstream_calls(traffic: Traffic, rng: np.random.Generator) -> Upstream:
    rows = np.flatnonzero(traffic.called_card)
    start, end = traffic.call_start_ns[rows], traffic.call_end_ns[rows]
    took = end - start
    # the request reaching the server, and its answer reaching the client: a fraction of
    # a millisecond on a kept-alive connection, never more than the call itself
    lead = np.minimum(rng.lognormal(np.log(450e3), 0.4, rows.shape[0]), 0.3 * took)
    tail = np.minimum(rng.lognormal(np.log(250e3), 0.4, rows.shape[0]), 0.2 * took)
    status = np.where(traffic.error[rows] == ERR_GATEWAY, 503, 201)
    return Upstream(rows, (start + lead).astype(np.int64), (end - tail).astype(np.int64),
                    status)


def card_metrics(b: SeriesBuilder, up: Upstream, rng: np.random.Generator) -> None:
    """The card processor's /metrics (job card-processor): its server histogram, body
    sizes, in-flight charges, and its process."""
    from .metrics import _duration_histogram, _fixed_size_histogram

    idx = b.index(up.end_ns)
    codes, key = np.unique(up.status, return_inverse=True)
    combos = []
    for code in codes.tolist():
        labels = {**CARD_JOB, **FASTAPI, "http_request_method": "POST",
                  "http_route": "/v1/charges", "http_response_status_code": str(code),
                  "url_scheme": "http", "network_protocol_version": "1.1"}
        if code >= 500:
            labels["error_type"] = str(code)
        combos.append(labels)
    name = "http_server_request_duration_seconds"
    took = (up.end_ns - up.start_ns) / 1e9
    counts = _duration_histogram(b, name, key, combos, took, idx)
    for ci, code in enumerate(codes.tolist()):
        _fixed_size_histogram(b, "http_server_response_body_size_bytes", combos[ci],
                              counts[ci], RESPONSE_BYTES[code])
        _fixed_size_histogram(b, "http_server_request_body_size_bytes", combos[ci],
                              counts[ci], REQUEST_BYTES)
    at_ns = b.t_ms * 1_000_000
    b.add("http_server_active_requests", {**CARD_JOB, **FASTAPI, "http_request_method": "POST",
                                          "url_scheme": "http"},
          covering(up.start_ns, up.end_ns, at_ns).astype(np.float64))
    n = b.n
    # its process: async handlers, so CPU per charge, not per second waited
    cpu = 12.4 + np.cumsum(np.concatenate([[0.0], rng.gamma(4.0, 0.0008, n - 1)])) + \
        b.counter(idx, np.full(idx.shape[0], 0.0011))
    b.add("process_cpu_seconds_total", CARD_JOB, np.floor(cpu * 100.0) / 100.0)
    in_flight = covering(up.start_ns, up.end_ns, at_ns).astype(np.float64)
    rss = 58.2e6 + 9_000.0 * in_flight + rng.normal(0.0, 0.08e6, n)
    b.add("process_resident_memory_bytes", CARD_JOB, np.round(rss / 4096.0) * 4096.0)
    b.add("process_virtual_memory_bytes", CARD_JOB, b.const(241_172_480.0))
    b.add("process_open_fds", CARD_JOB, 9.0 + np.minimum(in_flight + 4, KEEPALIVE))
    b.add("process_max_fds", CARD_JOB, b.const(1048576))
    # started days before the window (stored relative to the window start)
    b.add("process_start_time_seconds", CARD_JOB, b.const(-3.9 * 86400))
    b.add("python_info", {**CARD_JOB, "implementation": "CPython", "major": "3", "minor": "11",
                          "patchlevel": "7", "version": "3.11.7"}, b.const(1))
    b.add("target_info", {**CARD_JOB, **{k.replace(".", "_"): str(v) for k, v in
                                         CARD_RESOURCE}}, b.const(1))
    b.add("up", CARD_JOB, b.const(1))


def server_span_ids(client: np.ndarray) -> np.ndarray:
    """The server span's ID, derived from the client span's (no draw from the ID stream):
    a fixed XOR keeps them unique; an all-zero result (invalid) gets a last byte of 1."""
    out = np.bitwise_xor(client, SPAN_MASK)
    out[~out.any(axis=1), 7] = 1
    return out


def card_server_spans(traffic: Traffic, ids: TraceIds, rows: np.ndarray,
                      up: Upstream) -> SpanTable:
    """card-processor's server span of each traced charge."""
    from .traces import _table

    k = np.flatnonzero(traffic.called_card[rows])
    at = np.searchsorted(up.rows, rows[k])
    status = up.status[at]
    parent = ids.card[k]
    port = 41000 + (parent[:, 0].astype(np.int64) % KEEPALIVE) * 37
    fixed: Attributes = (("client.address", PAYMENT_SERVICE_IP), ("http.request.method", "POST"),
             ("http.route", "/v1/charges"), ("network.protocol.version", "1.1"),
             ("server.address", "card-processor:8080"), ("server.port", 8080),
             ("url.path", "/v1/charges"), ("url.scheme", "http"),
             ("user_agent.original", "python-httpx/0.28.1"))
    # every span's names are those of one of two shapes (an error.type or none): each
    # shape's name order is found once, and each span's pairs put in it
    ok = fixed + (("client.port", 0), ("http.response.status_code", 0))
    failed = ok + (("error.type", ""),)
    in_order = {len(x): operator.itemgetter(*sorted(range(len(x)), key=x.__getitem__))
                for x in (ok, failed)}
    attrs: list[Attributes] = [
        in_order[len(fixed) + 2 + (st >= 500)](
            fixed + (("client.port", p), ("http.response.status_code", st))
            + ((("error.type", str(st)),) if st >= 500 else ()))
        for p, st in zip(port.tolist(), status.tolist())]
    table = _table("opentelemetry.instrumentation.fastapi", ids.trace_id[k],
                   server_span_ids(parent), parent, up.start_ns[at], up.end_ns[at], 2,
                   status >= 500, ["POST /v1/charges"] * k.shape[0], [""] * k.shape[0],
                   attrs, [()] * k.shape[0])  # a 503 it answers is no exception
    return replace(table, resource=CARD_RESOURCE, flags=frozen_array(
        np.full(k.shape[0], SPAN_FLAGS_HAS_IS_REMOTE_PARENT), np.uint32))
