"""`replayer record`: read a window out of Prometheus, Loki and Tempo into a recording."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from generator.model import Incident

from ..errors import TransportError
from ..transport import HttpTransport, TargetConfig
from .assemble import recorded_incident, span_tables
from .loki import record_loki
from .prometheus import record_prometheus
from .tempo import all_spans, record_tempo

NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class RecordRequest:
    start_ms: int
    end_ms: int
    signals: tuple[str, ...] = ("metrics", "logs", "traces")
    prometheus: TargetConfig = field(default_factory=lambda: TargetConfig(
        "http://localhost:9090"))
    loki: TargetConfig = field(default_factory=lambda: TargetConfig("http://localhost:3100"))
    tempo: TargetConfig = field(default_factory=lambda: TargetConfig("http://localhost:3200"))
    matchers: tuple[str, ...] = ('{job=~".+"}',)
    logql: str = '{service_name=~".+"}'
    traceql: str = "{ }"
    trace_limit: int = 1000
    name: str = "recorded"


@dataclass
class RecordReport:
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    requests: int = 0

    @property
    def complete(self) -> bool:
        return not self.problems


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def run_record(req: RecordRequest,
               now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.timezone.utc),
               ) -> tuple[Incident, RecordReport]:
    """Read what can be read; every gap is a problem in the report (non-zero exit)."""
    if req.end_ms <= req.start_ms:
        raise ValueError("the window must end after it starts")
    report = RecordReport()
    series, families, streams, tables = [], [], [], []
    source = {"kind": "recorded from a live stack", "recorded_at": now().isoformat(
        timespec="seconds").replace("+00:00", "Z"), "window_start": _iso(req.start_ms),
        "window_end": _iso(req.end_ms)}
    if "metrics" in req.signals:
        source.update(prometheus=req.prometheus.url, match=" ".join(req.matchers))
        try:
            with _client(req.prometheus) as t:
                prom = record_prometheus(t, req.matchers, req.start_ms, req.end_ms)
            series, families = prom.series, prom.families
            report.problems += prom.problems
            report.requests += prom.requests
        except TransportError as exc:
            report.problems.append(f"metrics: {exc}")
        report.counts["series"] = len(series)
        report.counts["samples"] = sum(len(s) for s in series)
    if "logs" in req.signals:
        source.update(loki=req.loki.url, logql=req.logql)
        try:
            with _client(req.loki) as t:
                loki = record_loki(t, req.logql, req.start_ms * NS_PER_MS, req.end_ms * NS_PER_MS)
            streams = loki.streams
            report.problems += loki.problems
            report.requests += loki.requests
        except TransportError as exc:
            report.problems.append(f"logs: {exc}")
        report.counts["log_lines"] = sum(len(s) for s in streams)
    if "traces" in req.signals:
        source.update(tempo=req.tempo.url, traceql=req.traceql)
        try:
            with _client(req.tempo) as t:
                tempo = record_tempo(t, req.traceql, req.start_ms // 1000,
                                     -(-req.end_ms // 1000), req.trace_limit)
            tables = list(span_tables(tempo.resource_spans, req.start_ms * NS_PER_MS))
            report.problems += tempo.problems
            report.requests += tempo.requests
            report.counts["traces"] = len(tempo.trace_ids) - len(tempo.missing)
            report.counts["spans"] = all_spans(tempo.resource_spans)
        except TransportError as exc:
            report.problems.append(f"traces: {exc}")
    incident = recorded_incident(
        req.name, req.start_ms, req.end_ms, series, families, streams, tables, source,
        {"promql": "\n".join(req.matchers), "logql": req.logql, "traceql": req.traceql})
    return incident, report


class _client:
    def __init__(self, target: TargetConfig) -> None:
        self.t = HttpTransport(target)

    def __enter__(self) -> HttpTransport:
        return self.t

    def __exit__(self, *exc: object) -> None:
        self.t.close()
