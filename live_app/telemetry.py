"""Telemetry from real libraries, wired so the names match what the generator emits.

- Metrics: the OpenTelemetry SDK read by ``opentelemetry-exporter-prometheus`` on
  ``/metrics`` with ``OTEL_SEMCONV_STABILITY_OPT_IN=http`` (stable HTTP names), FastAPI and
  SQLAlchemy instrumentation, the pool metrics SQLAlchemy's instrumentation lacks (meter
  ``payment_service.db``), prometheus-fastapi-instrumentator's ``http_requests_total`` and
  prometheus_client's process/platform/gc collectors. One registry per app.
- Traces and logs: OTLP to ``OTEL_EXPORTER_OTLP_ENDPOINT``; nothing is exported when unset.
- Log lines carry ``trace_id``/``span_id`` (OTel logging format).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

# Stable HTTP semantic conventions, read by the instrumentation when it first loads.
os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")

from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: E402
from opentelemetry.instrumentation.logging import LoggingInstrumentor  # noqa: E402
from opentelemetry.metrics import Counter, Histogram, UpDownCounter  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from prometheus_client import (  # noqa: E402
    REGISTRY,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)

from .settings import Settings  # noqa: E402

LOG_FORMAT = ("%(asctime)s %(levelname)s [%(name)s] [%(filename)s:%(lineno)d] "
              "[trace_id=%(otelTraceID)s span_id=%(otelSpanID)s "
              "resource.service.name=%(otelServiceName)s trace_sampled=%(otelTraceSampled)s] "
              "- %(message)s")
EXPORTED_LOGGERS = ("payment_service", "uvicorn", "uvicorn.access")
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


def pool_name(engine_url: object) -> str:
    """The name SQLAlchemy's instrumentation gives a pool: driver://host:port/database."""
    url = engine_url
    return (f"{getattr(url, 'drivername', '') or ''}://{getattr(url, 'host', '') or ''}:"
            f"{getattr(url, 'port', '') or ''}/{getattr(url, 'database', '') or ''}")


def resource(settings: Settings) -> Resource:
    attrs: dict[str, str] = {}
    for pair in settings.resource_attributes.split(","):
        k, sep, v = pair.partition("=")
        if sep and k.strip():
            attrs[k.strip()] = v.strip()
    name = attrs.get("service.name", "payment-service")
    attrs.setdefault("service.instance.id", f"{name}-{os.getpid()}")
    return Resource.create(attrs)


@dataclass
class PoolMeters:
    pending: UpDownCounter
    timeouts: Counter
    wait: Histogram
    attrs: dict[str, str]


@dataclass
class Telemetry:
    registry: CollectorRegistry
    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    pool: PoolMeters
    collector: object
    log_provider: object = None
    log_handler: logging.Handler | None = None

    def export_logs(self) -> None:
        """(Re)attach the exporting handler; see ``attach_log_handler``."""
        if self.log_handler is not None:
            attach_log_handler(self.log_handler)

    def shutdown(self) -> None:
        attach_log_handler(None)
        if self.log_provider is not None:
            self.log_provider.shutdown()  # type: ignore[attr-defined]
        # the reader unregisters its collector from the global registry on shutdown
        self.registry.unregister(self.collector)  # type: ignore[arg-type]
        REGISTRY.register(self.collector)  # type: ignore[arg-type]
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


@dataclass
class CardTelemetry:
    """card-processor's own: metrics on its /metrics, traces over OTLP."""

    registry: CollectorRegistry
    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    collector: object

    def shutdown(self) -> None:
        self.registry.unregister(self.collector)  # type: ignore[arg-type]
        REGISTRY.register(self.collector)  # type: ignore[arg-type]
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


def _providers(settings: Settings, views: tuple[View, ...] = ()) -> tuple[
        Resource, CollectorRegistry, object, MeterProvider, TracerProvider]:
    """One registry, meter and tracer provider per app (the process collectors included);
    the app's lifespan shuts them down, no atexit hooks for apps built and dropped."""
    res = resource(settings)
    registry = CollectorRegistry()
    reader = PrometheusMetricReader()
    collector = _move_collector(reader, registry)
    mp = MeterProvider(resource=res, metric_readers=[reader], views=list(views),
                       shutdown_on_exit=False)
    tp = TracerProvider(resource=res, shutdown_on_exit=False)
    traces = settings.exporter("traces")
    if traces:
        tp.add_span_processor(BatchSpanProcessor(_span_exporter(*traces)))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return res, registry, collector, mp, tp


def card_telemetry(settings: Settings) -> CardTelemetry:
    _res, registry, collector, mp, tp = _providers(settings)
    return CardTelemetry(registry, mp, tp, collector)


def setup(settings: Settings, pool: str, capacity: int) -> Telemetry:
    wait_view = View(instrument_name="db.client.connection.wait_time",
                     aggregation=ExplicitBucketHistogramAggregation(WAIT_BUCKETS))
    res, registry, collector, mp, tp = _providers(settings, (wait_view,))
    log_provider = log_handler = None
    logs = settings.exporter("logs")
    if logs:
        log_provider, log_handler = _export_logs(*logs, res)
    meter = mp.get_meter("payment_service.db", "1.4.2")
    attrs = {"db.client.connection.pool.name": pool}
    meter.create_observable_gauge(
        "db.client.connection.max", callbacks=[lambda _o: [_obs(capacity, attrs)]],
        description="The maximum number of open connections allowed.")
    meters = PoolMeters(
        pending=meter.create_up_down_counter(
            "db.client.connection.pending_requests",
            description="The number of current pending requests for an open connection."),
        timeouts=meter.create_counter(
            "db.client.connection.timeouts",
            description="The number of connection timeouts that have occurred trying to "
                        "obtain a connection from the pool."),
        wait=meter.create_histogram(
            "db.client.connection.wait_time", unit="s",
            description="The time it took to obtain an open connection from the pool."),
        attrs=attrs)
    meters.pending.add(0, attrs)
    meters.timeouts.add(0, attrs)
    LoggingInstrumentor().instrument(set_logging_format=False, inject_trace_context=True,
                                     tracer_provider=tp)
    return Telemetry(registry, mp, tp, meters, collector, log_provider, log_handler)


def _obs(value: float, attrs: dict[str, str]):  # type: ignore[no-untyped-def]
    from opentelemetry.metrics import Observation

    return Observation(value, attrs)


def _move_collector(reader: PrometheusMetricReader, registry: CollectorRegistry) -> object:
    """The reader registers itself in the global registry; each app wants its own."""
    collector = getattr(reader, "_collector", None)
    if collector is None:
        raise RuntimeError("opentelemetry-exporter-prometheus changed: no _collector to move")
    REGISTRY.unregister(collector)
    registry.register(collector)
    return collector


def _span_exporter(endpoint: str, protocol: str, own: bool):  # type: ignore[no-untyped-def]
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(endpoint=endpoint if own else endpoint.rstrip("/") + "/v1/traces")


def _export_logs(endpoint: str, protocol: str, own: bool,
                 res: Resource) -> tuple[object, logging.Handler]:
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        exporter = OTLPLogExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    else:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (
            OTLPLogExporter as HttpLogExporter,
        )

        exporter = HttpLogExporter(endpoint=endpoint if own else endpoint.rstrip("/") +
                                   "/v1/logs")
    provider = LoggerProvider(resource=res, shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)
    attach_log_handler(handler)
    return provider, handler


def attach_log_handler(handler: logging.Handler | None) -> None:
    """Export the app's own loggers and uvicorn's (its access lines, its startup and shutdown
    lines: "uvicorn.error" propagates to "uvicorn"; neither reaches the root logger).

    Called again at startup: uvicorn's logging config, applied when a server is configured,
    replaces the handlers of its loggers."""
    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    for name in EXPORTED_LOGGERS:
        log = logging.getLogger(name)
        for old in [h for h in log.handlers if isinstance(h, LoggingHandler)]:
            log.removeHandler(old)  # one exporting handler per process (tests build many apps)
        if handler is not None:
            log.addHandler(handler)


def configure_logging() -> logging.Logger:
    log = logging.getLogger("payment_service.routes")
    if not any(getattr(h, "_replayer", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._replayer = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    return log

