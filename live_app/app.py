"""The ASGI app: ``uvicorn live_app.app:app``. Routes, incident switch, /metrics."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal
from time import perf_counter

import httpx
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.trace import Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator
from prometheus_fastapi_instrumentator import metrics as instrumentator_metrics
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from . import db
from .incidents import IncidentState
from .settings import CARD_SIDE, MODES, Settings, SettingsError
from .telemetry import PoolMeters, configure_logging, pool_name, setup


class PaymentIn(BaseModel):
    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2,
                            description="Amount to charge, greater than 0")
    currency: str = Field(default="EUR", pattern="^[A-Z]{3}$")
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=64)


class IncidentIn(BaseModel):
    mode: str


class PaymentGatewayError(RuntimeError):
    """The card processor refused to answer (error_spike mode)."""


@contextmanager
def acquire(engine: db.Engine, meters: PoolMeters,
            kept: Callable[[Connection], bool] = lambda _c: False) -> Iterator[Connection]:
    """A pooled connection, with the pool metrics SQLAlchemy's instrumentation lacks; it
    goes back on exit unless ``kept`` says a (leaking) code path kept it."""
    meters.pending.add(1, meters.attrs)
    started = perf_counter()
    try:
        conn = engine.connect()
    except sqlalchemy.exc.TimeoutError:
        meters.timeouts.add(1, meters.attrs)
        raise
    finally:
        meters.pending.add(-1, meters.attrs)
        meters.wait.record(perf_counter() - started, meters.attrs)
    try:
        yield conn
    finally:
        if not kept(conn):
            conn.close()


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    engine = db.make_engine(settings)
    capacity = settings.pool_size + settings.max_overflow
    tel = setup(settings, pool_name(engine.url), capacity)
    SQLAlchemyInstrumentor().instrument(engine=engine, meter_provider=tel.meter_provider,
                                        tracer_provider=tel.tracer_provider)
    log, tracer = configure_logging(), tel.tracer_provider.get_tracer("payment_service.routes")
    rng = random.Random()
    state: dict[str, IncidentState] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        db.create_schema(engine, settings.seed_rows)
        tel.export_logs()
        state["card"] = _app.state.card = card = CardClient.start(settings, tel)
        state["incident"] = IncidentState(engine, settings.incident_mode)
        if settings.incident_mode in CARD_SIDE:
            await asyncio.to_thread(card.switch, settings.incident_mode)
        yield
        state["incident"].close()
        card.close()
        # SQLAlchemyInstrumentor is a process-wide singleton: release this engine so the
        # next app in the same process (tests) can be instrumented again
        SQLAlchemyInstrumentor().uninstrument()
        tel.shutdown()
        engine.dispose()

    app = FastAPI(title="payment-service", lifespan=lifespan)
    app.state.engine, app.state.settings, app.state.telemetry = engine, settings, tel

    def fail(request: Request, exc: Exception) -> Response:
        """Log the failure as the generator prints it, mark the span, answer 500."""
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path)
        exc_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
        span = trace.get_current_span()
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc)))
        log.error("%s %s failed: %s: %s", request.method, path, exc_type, exc, exc_info=exc)
        return PlainTextResponse("Internal Server Error", status_code=500)

    @app.post("/payment")
    def create_payment(body: PaymentIn, request: Request) -> Response:
        mode = state["incident"].mode
        key = body.idempotency_key or uuid.uuid4().hex
        try:
            # the card processor, over HTTP: PaymentGatewayError unless it charged the card
            state["card"].charge(body.amount, body.currency, key)
            incident = state["incident"]
            with acquire(engine, tel.pool, incident.holds) as conn:
                with conn.begin():
                    existing = db.find_by_key(conn, key)
                    if existing is not None:
                        pid, status, amount = existing
                    else:
                        pid = db.insert_payment(conn, key, body.amount, body.currency)
                        status, amount = "captured", body.amount
                    if mode == "pool_exhaustion":  # a slow call made inside the transaction
                        with tracer.start_as_current_span("fraud check"):
                            time.sleep(settings.hold_s * rng.lognormvariate(0.0, 0.3))
                if mode == "connection_leak" and rng.random() < settings.leak_ratio:
                    incident.leak(conn, pid)
        except (sqlalchemy.exc.SQLAlchemyError, PaymentGatewayError) as exc:
            return fail(request, exc)
        return JSONResponse({"id": pid, "status": status, "amount": str(amount),
                             "currency": body.currency, "idempotency_key": key})

    @app.get("/payments/{payment_id}")
    def read_payment(payment_id: int, request: Request) -> Response:
        try:
            with acquire(engine, tel.pool) as conn:
                found = db.get_payment(conn, payment_id)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            return fail(request, exc)
        if found is None:
            return JSONResponse({"detail": f"payment {payment_id} not found"}, status_code=404)
        return JSONResponse(found)

    # Operational endpoints are async: they run on the event loop, not in the 40-thread
    # pool that payment requests can fill, so probes and scrapes answer during an incident.
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/incident")
    async def get_incident() -> dict[str, object]:
        incident = state["incident"]
        return {"mode": incident.mode, "since": incident.since, "modes": list(MODES)}

    @app.post("/incident")
    async def set_incident(body: IncidentIn, request: Request) -> Response:
        refused = switch_refused(request, settings.incident_token, "the incident mode")
        if refused is not None:
            return refused
        try:
            # the switch may wait on the pool (taking or returning connections): it runs on
            # asyncio's own executor, not in the worker threads an incident can fill
            if body.mode in MODES:  # the card side first: its faults are the processor's
                await asyncio.to_thread(state["card"].switch, body.mode)
            mode = await asyncio.to_thread(state["incident"].set, body.mode)
        except SettingsError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        except CardSwitchError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=502)
        logging.getLogger("payment_service.incident").warning("incident mode set to %s", mode)
        return JSONResponse({"mode": mode})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(tel.registry), media_type=CONTENT_TYPE_LATEST)

    Instrumentator(should_group_status_codes=True, excluded_handlers=["/metrics"],
                   registry=tel.registry).add(
        instrumentator_metrics.requests(registry=tel.registry)).instrument(app)
    # The ASGI `http receive` / `http send` spans are left out, as production setups of
    # this stack commonly do: for a sync endpoint they time nothing the server span and its
    # children do not, and they would more than double the spans stored per request.
    FastAPIInstrumentor.instrument_app(app, meter_provider=tel.meter_provider,
                                       tracer_provider=tel.tracer_provider,
                                       excluded_urls="/metrics",
                                       exclude_spans=["receive", "send"])
    return app


class CardSwitchError(RuntimeError):
    """The card processor did not take the mode it was asked to switch to."""


class CardClient:
    """payment-service's client of the card processor: one httpx client, instrumented by
    OpenTelemetry (client spans, ``http.client.request.duration``).

    With ``CARD_PROCESSOR_URL`` unset, the card processor runs in this process on a
    loopback port (its own app, telemetry and ``service.name``), so a lone payment-service
    still charges cards over HTTP."""

    def __init__(self, url: str, tel: object, embedded: object = None,
                 timeout_s: float = 10.0, token: str | None = None) -> None:
        self.url, self.embedded, self.token = url.rstrip("/"), embedded, token
        self.client = httpx.Client(timeout=timeout_s, limits=httpx.Limits(
            max_connections=100, max_keepalive_connections=100))
        HTTPXClientInstrumentor.instrument_client(
            self.client, tracer_provider=tel.tracer_provider,  # type: ignore[attr-defined]
            meter_provider=tel.meter_provider)  # type: ignore[attr-defined]

    @staticmethod
    def start(settings: Settings, tel: object) -> CardClient:
        if settings.card_processor_url:
            return CardClient(settings.card_processor_url, tel, token=settings.incident_token)
        from .card_processor import CardSettings, EmbeddedCardProcessor

        embedded = EmbeddedCardProcessor(CardSettings(
            error_ratio=settings.error_ratio, otlp_endpoint=settings.otlp_traces_endpoint or
            settings.otlp_endpoint, otlp_protocol=settings.otlp_traces_protocol or
            settings.otlp_protocol, incident_token=settings.incident_token))
        return CardClient(embedded.url, tel, embedded, token=settings.incident_token)

    def charge(self, amount: Decimal, currency: str, key: str) -> None:
        try:
            r = self.client.post(f"{self.url}/v1/charges", headers={"Idempotency-Key": key},
                                 json={"amount": str(amount), "currency": currency})
        except httpx.HTTPError as exc:
            raise PaymentGatewayError(f"card-processor unreachable: {exc}") from exc
        if r.status_code >= 400:
            raise PaymentGatewayError(f"card-processor answered {r.status_code} "
                                      f"{r.reason_phrase}")

    def switch(self, mode: str) -> None:
        """Put the card processor in the card side of ``mode`` (``normal`` for the others)."""
        card_mode = mode if mode in CARD_SIDE else "normal"
        try:  # an operator's call, not traffic: no client span, not in the client metrics
            # across containers the processor sees payment-service's address, not loopback
            r = httpx.post(f"{self.url}/incident", json={"mode": card_mode}, timeout=10.0,
                           headers={"X-Incident-Token": self.token} if self.token else None)
        except httpx.HTTPError as exc:
            raise CardSwitchError(f"the card processor at {self.url} could not be switched "
                                  f"to {card_mode}: {exc}") from exc
        if r.status_code != 200:
            raise CardSwitchError(f"the card processor at {self.url} refused mode "
                                  f"{card_mode}: {r.status_code} {r.text[:200]}")

    def close(self) -> None:
        self.client.close()
        if self.embedded is not None:
            self.embedded.stop()  # type: ignore[attr-defined]


def __getattr__(name: str) -> FastAPI:
    # `uvicorn live_app.app:app` builds the app from the environment on first access, so
    # importing this module (tests do) creates no engine and no database file.
    if name == "app":
        built = globals().get("_app")
        if built is None:
            built = globals()["_app"] = create_app()
        return built
    raise AttributeError(name)


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _host_name(request: Request) -> str:
    """The name in the Host header, without its port (``[::1]:8000`` -> ``::1``)."""
    host = request.headers.get("host", "")
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def switch_refused(request: Request, token: str | None, what: str) -> Response | None:
    """403 unless a switch carries the incident token, or comes from loopback addressed to a
    loopback name (payment-service's and card-processor's switches alike).

    The Host check stops DNS rebinding: a web page whose name the attacker points at
    127.0.0.1 reaches this port from the user's browser, from loopback, but with its own
    name in Host."""
    if token and request.headers.get("X-Incident-Token") == token:
        return None
    if _loopback(request):
        if _host_name(request).lower() in LOOPBACK_NAMES:
            return None
        given = request.headers.get("host")
        return JSONResponse({"detail": f"switching {what} from loopback needs a loopback Host "
                             f"(localhost, 127.0.0.1 or [::1]), not {given!r}; or send the "
                             "X-Incident-Token header matching INCIDENT_TOKEN"},
                            status_code=403)
    return JSONResponse({"detail": f"switching {what} is allowed from loopback, or with the "
                         "X-Incident-Token header matching INCIDENT_TOKEN"}, status_code=403)
