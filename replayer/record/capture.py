"""`replayer capture`: record a live app directly, with no Prometheus, Loki or Tempo.

A built-in OTLP receiver (gRPC and HTTP/protobuf, traces and logs, on loopback by default)
takes what the app's OpenTelemetry SDK exports, and a scraper reads its Prometheus
``/metrics`` at a fixed interval. With ``--incident-url`` the app's incident mode is read
at every scrape, and the switches become the recording's ground truth.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import grpc
import numpy as np
import requests
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from generator.logs import LOKI_INDEXED_RESOURCE, loki_name
from generator.model import (
    GroundTruth,
    Incident,
    Labels,
    LogStream,
    MetricFamily,
    Phase,
    Series,
    frozen_array,
    make_labels,
)

from .assemble import example_traces, recorded_incident, span_tables

NS_PER_MS = 1_000_000
ROOT_CAUSES = {"slow_query": ("postgres", "slow_query"),
               "pool_exhaustion": ("payment-service", "connection_pool_exhaustion"),
               "connection_leak": ("payment-service", "connection_leak"),
               "error_spike": ("card-processor", "upstream_errors")}


class Sink:
    """What the receivers got, thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.resource_spans: list = []  # type: ignore[type-arg]
        self.resource_logs: list = []  # type: ignore[type-arg]
        self.requests = 0

    def traces(self, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self.lock:
            self.resource_spans.extend(req.resource_spans)
            self.requests += 1

    def logs(self, req: logs_service_pb2.ExportLogsServiceRequest) -> None:
        with self.lock:
            self.resource_logs.extend(req.resource_logs)
            self.requests += 1


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def Export(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        self.sink.traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def Export(self, request, context):  # type: ignore[no-untyped-def] # noqa: N802
        self.sink.logs(request)
        return logs_service_pb2.ExportLogsServiceResponse()


def _http_handler(sink: Sink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if "json" in (self.headers.get("Content-Type") or ""):
                self._answer(415, b"this receiver takes OTLP protobuf only")
                return
            try:
                if self.path == "/v1/traces":
                    sink.traces(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                    answer = trace_service_pb2.ExportTraceServiceResponse()
                elif self.path == "/v1/logs":
                    sink.logs(logs_service_pb2.ExportLogsServiceRequest.FromString(body))
                    answer = logs_service_pb2.ExportLogsServiceResponse()
                else:
                    self._answer(404, b"not found")
                    return
            except DecodeError as exc:
                self._answer(400, f"cannot decode the request: {exc}".encode())
                return
            self._answer(200, answer.SerializeToString(), "application/x-protobuf")

        def _answer(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None  # quiet: the capture prints its own summary

    return Handler


class Receiver:
    """OTLP over gRPC and HTTP; ``None`` for an address turns that listener off."""

    def __init__(self, grpc_addr: str | None, http_addr: str | None) -> None:
        self.sink = Sink()
        self.grpc_server = self.http_server = None
        self.grpc_port = self.http_port = 0
        if grpc_addr:
            self.grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
                _Traces(self.sink), self.grpc_server)
            logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(self.sink),
                                                                    self.grpc_server)
            self.grpc_port = self.grpc_server.add_insecure_port(grpc_addr)
            if not self.grpc_port:
                raise OSError(f"cannot listen for OTLP gRPC on {grpc_addr}")
        if http_addr:
            host, _, port = http_addr.rpartition(":")
            self.http_server = ThreadingHTTPServer((host, int(port)), _http_handler(self.sink))
            self.http_port = self.http_server.server_address[1]

    def __enter__(self) -> Receiver:
        if self.grpc_server:
            self.grpc_server.start()
        if self.http_server:
            threading.Thread(target=self.http_server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.grpc_server:
            self.grpc_server.stop(grace=2).wait()
        if self.http_server:
            self.http_server.shutdown()
            self.http_server.server_close()


_JOB_TARGET = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)=(https?://.+)$")


def scrape_target(entry: str, default_job: str) -> tuple[str, str]:
    """``job=URL`` scrapes URL as its own job; a bare URL is scraped as ``default_job``."""
    m = _JOB_TARGET.match(entry)
    return (m.group(1), m.group(2)) if m else (default_job, entry)


@dataclass
class Scraper:
    """Reads Prometheus text from ``urls`` (each ``URL`` or ``job=URL``) and keeps every
    sample, as Prometheus would."""

    urls: Sequence[str]
    job: str
    samples: dict[Labels, tuple[list[int], list[float]]] = field(default_factory=dict)
    families: dict[str, MetricFamily] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    session: requests.Session = field(default_factory=requests.Session)

    def scrape(self, t_ms: int) -> None:
        for entry in self.urls:
            job, url = scrape_target(entry, self.job)
            instance = urlparse(url).netloc
            up = 1.0
            try:
                try:
                    resp = self.session.get(url, timeout=5)
                except requests.ConnectionError:
                    # a kept-alive connection the server closed as we reused it (uvicorn
                    # drops idle ones after 5 s, a common scrape interval): once more, anew
                    resp = self.session.get(url, timeout=5)
                resp.raise_for_status()
                self._parse(resp.text, t_ms, instance, job)
            except (requests.RequestException, ValueError) as exc:
                up = 0.0
                self.failures.append(f"scrape of {url} at {t_ms} failed: {exc}")
            self._add(make_labels({"__name__": "up", "job": job, "instance": instance}),
                      t_ms, up)

    def _parse(self, text: str, t_ms: int, instance: str, job: str) -> None:
        for family in text_string_to_metric_families(text):
            kind = family.type if family.type != "unknown" else "untyped"
            # prometheus_client's parser names every counter sample `<name>_total`; a
            # counter exposed without the suffix (postgres_exporter 0.11's pg_stat_database
            # columns) is stored by Prometheus as written
            bare = kind == "counter" and f"# TYPE {family.name} counter" in text
            self.families.setdefault(family.name, MetricFamily(
                family.name + ("_total" if kind == "counter" and not bare else ""),
                family.type, family.documentation, family.unit or ""))
            for s in family.samples:
                name = s.name
                if bare and name == family.name + "_total":
                    name = family.name
                labels = {k: v for k, v in s.labels.items() if v != ""}  # as a scrape stores
                labels.update({"__name__": name, "job": job, "instance": instance})
                self._add(make_labels(labels), t_ms, float(s.value))

    def _add(self, labels: Labels, t_ms: int, value: float) -> None:
        ts, vs = self.samples.setdefault(labels, ([], []))
        ts.append(t_ms)
        vs.append(value)


def _any_value(v) -> str:  # type: ignore[no-untyped-def]
    """An OTLP AnyValue as Loki stores it in a label or structured metadata."""
    kind = v.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind in ("int_value", "double_value", "string_value"):
        return str(getattr(v, kind))
    if kind == "bytes_value":
        return v.bytes_value.hex()
    raise ValueError(f"OTLP {kind} attribute: Loki flattens these; capture has no rule for "
                     "them yet")


def log_streams(resource_logs: list, start_ns: int) -> list[LogStream]:  # type: ignore[type-arg]
    """OTLP logs as Loki 3's OTLP ingestion stores them (checked against Loki 3.4.2): the
    resource attributes Loki indexes are the stream labels, the body is the line, and the
    other resource attributes, the scope name, severity, trace context, flags, observed time
    and every record attribute are structured metadata, names with dots made underscores.
    Times are relative to ``start_ns`` (``observed_timestamp`` too)."""
    rows: dict[Labels, list[tuple[int, str, tuple]]] = {}
    for rl in resource_logs:
        attrs = {kv.key: _any_value(kv.value) for kv in rl.resource.attributes}
        labels = make_labels({loki_name(k): v for k, v in attrs.items()
                              if k in LOKI_INDEXED_RESOURCE} or
                             {"service_name": "unknown_service"})
        res_meta = [(loki_name(k), v) for k, v in attrs.items()
                    if k not in LOKI_INDEXED_RESOURCE]
        for sl in rl.scope_logs:
            scope = [("scope_name", sl.scope.name)] if sl.scope.name else []
            if sl.scope.version:
                scope.append(("scope_version", sl.scope.version))
            for rec in sl.log_records:
                t = rec.time_unix_nano or rec.observed_time_unix_nano
                meta = dict(res_meta + scope)
                meta.update((loki_name(kv.key), _any_value(kv.value)) for kv in rec.attributes)
                if rec.severity_number:
                    meta["severity_number"] = str(rec.severity_number)
                if rec.severity_text:
                    meta["severity_text"] = rec.severity_text
                if rec.flags:
                    meta["flags"] = str(rec.flags)
                if rec.observed_time_unix_nano:
                    meta["observed_timestamp"] = str(rec.observed_time_unix_nano - start_ns)
                if any(rec.trace_id):
                    meta["trace_id"] = rec.trace_id.hex()
                if any(rec.span_id):
                    meta["span_id"] = rec.span_id.hex()
                rows.setdefault(labels, []).append(
                    (t - start_ns, _any_value(rec.body), tuple(sorted(meta.items()))))
    out = []
    for labels in sorted(rows):
        items = sorted(rows[labels], key=lambda r: r[0])
        out.append(LogStream(labels, frozen_array([r[0] for r in items], np.int64),
                             tuple(r[1] for r in items), tuple(r[2] for r in items), None))
    return out


def truth_from_modes(modes: list[tuple[int, str]], duration_ms: int,
                     tables: list) -> GroundTruth | None:  # type: ignore[type-arg]
    """Phases from the app's own incident switches (time relative, mode)."""
    spans = [(t, m) for t, m in modes]
    bad = [(t, m) for t, m in spans if m != "normal"]
    if not bad:
        return None
    onset, mode = bad[0]
    recovery = next((t for t, m in spans if t > onset and m == "normal"), None)
    end = recovery if recovery is not None else duration_ms
    phases = [Phase("baseline", 0, onset), Phase("peak", onset, end)]
    if recovery is not None:
        phases.append(Phase("baseline", recovery, duration_ms))
    component, kind = ROOT_CAUSES.get(mode, ("payment-service", mode))
    return GroundTruth(
        summary=f"captured from live_app: incident mode {mode!r} switched on at {onset} ms"
                + (f" and off at {recovery} ms" if recovery is not None else ""),
        root_cause_component=component, root_cause_kind=kind, onset_ms=onset, peak_ms=onset,
        recovery_ms=recovery, phases=tuple(p for p in phases if p.end_ms > p.start_ms),
        affected_signals=(), example_trace_ids=example_traces(tables), promql=(), logql=(),
        traceql=(), trace_sampling=(("policy", "all"),))  # the app's SDK samples everything


@dataclass(frozen=True)
class CaptureOptions:
    duration_s: float
    scrape_urls: tuple[str, ...] = ()
    interval_s: float = 15.0
    job: str = "payment-service"
    grpc_addr: str | None = "127.0.0.1:4317"
    http_addr: str | None = "127.0.0.1:4318"
    drain_s: float = 6.0  # keep receiving after the end: SDKs export in batches
    incident_url: str | None = None
    name: str = "captured"
    postgres_log: str | None = None  # a PostgreSQL server log to take the window's lines from
    extra_source: tuple[tuple[str, str], ...] = ()


_PG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC (\[\d+\] \S+:.*)$")


def postgres_streams(text: str, start_ms: int, end_ms: int) -> list[LogStream]:
    """Lines of a PostgreSQL log (``log_line_prefix = '%m [%p] '``) inside the window, as
    the generator writes them: the time goes to the entry and the prefix is re-rendered at
    replay (``time_prefix = "postgres"``)."""
    rows: dict[str, list[tuple[int, str]]] = {}
    for raw in text.splitlines():
        m = _PG_LINE.match(raw)
        if not m:
            continue
        when = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(
            tzinfo=dt.timezone.utc)
        t_ms = int(round(when.timestamp() * 1000))
        if not start_ms <= t_ms <= end_ms:
            continue
        severity = m.group(2).split("]", 1)[1].split(":", 1)[0].strip()
        level = "error" if severity in ("ERROR", "FATAL", "PANIC") else "info"
        rows.setdefault(level, []).append(((t_ms - start_ms) * NS_PER_MS, m.group(2)))
    out = []
    for level in sorted(rows):
        items = sorted(rows[level], key=lambda r: r[0])
        out.append(LogStream(make_labels({"service_name": "postgres", "level": level}),
                             frozen_array([r[0] for r in items], np.int64),
                             tuple(r[1] for r in items), tuple(() for _ in items), "postgres"))
    return out


def run_capture(opts: CaptureOptions, clock: Callable[[], float] = time.time,
                sleep: Callable[[float], None] = time.sleep,
                ready: Callable[[Receiver], None] | None = None) -> tuple[Incident, list[str]]:
    """Capture until ``duration_s`` has passed (or Ctrl-C); returns the incident and the
    problems met (failed scrapes)."""
    scraper = Scraper(opts.scrape_urls, opts.job)
    modes: list[tuple[int, str]] = []
    problems: list[str] = []
    stopped = ""
    with Receiver(opts.grpc_addr, opts.http_addr) as receiver:
        if ready:
            ready(receiver)
        start_ms = int(clock() * 1000)
        end_ms = start_ms + int(opts.duration_s * 1000)
        tick = start_ms
        try:
            while tick <= end_ms:
                wait = tick / 1000 - clock()
                if wait > 0:
                    sleep(wait)
                now_ms = int(clock() * 1000)
                scraper.scrape(now_ms)
                if opts.incident_url:
                    _read_mode(opts.incident_url, now_ms, start_ms, modes, problems)
                tick += int(opts.interval_s * 1000)
            end_ms = int(clock() * 1000)
            sleep(opts.drain_s)
        except KeyboardInterrupt:  # a choice, not a loss: the recording just ends here
            end_ms = int(clock() * 1000)
            stopped = "Ctrl-C"
    problems += scraper.failures
    series = [Series(ls, frozen_array(np.array(ts, np.int64) - start_ms, np.int64),
                     frozen_array(vs, np.float64))
              for ls, (ts, vs) in sorted(scraper.samples.items())]
    tables = list(span_tables(receiver.sink.resource_spans, start_ms * NS_PER_MS))
    streams = log_streams(receiver.sink.resource_logs, start_ms * NS_PER_MS)
    if opts.postgres_log:
        try:
            with open(opts.postgres_log, encoding="utf-8", errors="replace") as f:
                streams += postgres_streams(f.read(), start_ms, end_ms)
        except OSError as exc:
            problems.append(f"reading the PostgreSQL log {opts.postgres_log} failed: {exc}")
    source = {"kind": "captured from a live app", "scrape": " ".join(opts.scrape_urls),
              "otlp_grpc": f"127.0.0.1:{receiver.grpc_port}" if receiver.grpc_port else "",
              "otlp_http": f"127.0.0.1:{receiver.http_port}" if receiver.http_port else "",
              "incident_modes": " ".join(f"{t}:{m}" for t, m in modes),
              "stopped_by": stopped, **dict(opts.extra_source)}
    incident = recorded_incident(opts.name, start_ms, end_ms, series,
                                 sorted(scraper.families.values(), key=lambda f: f.name),
                                 streams, tables, {k: v for k, v in source.items() if v},
                                 {"promql": "", "logql": "", "traceql": ""})
    truth = truth_from_modes(modes, end_ms - start_ms, tables)
    if truth is not None:
        from dataclasses import replace

        incident = replace(incident, truth=truth)
    return incident, problems


def _read_mode(url: str, now_ms: int, start_ms: int, modes: list[tuple[int, str]],
               problems: list[str]) -> None:
    """Note a change of mode. When the app says since when its mode holds (live_app's
    ``since``: null while the switch is under way, a time once the fault is in place or
    gone), that is the time; otherwise the poll's."""
    try:
        body = requests.get(url, timeout=5).json()
        mode = body["mode"]
    except (requests.RequestException, ValueError, KeyError) as exc:
        problems.append(f"reading the incident mode from {url} failed: {exc}")
        return
    if modes and modes[-1][1] == mode:
        return
    since = body.get("since")
    if "since" in body and since is None:  # still switching (an index dropped or built)
        return
    t_ms = now_ms
    if isinstance(since, (int, float)):
        t_ms = min(max(int(since * 1000), start_ms), now_ms)
    t_ms -= start_ms
    if modes:
        t_ms = max(t_ms, modes[-1][0])
    modes.append((t_ms, mode))
