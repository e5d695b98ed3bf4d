"""card-processor: the upstream payment-service charges cards with, a service of its own.

``python -m live_app.card_processor`` (HOST, PORT; 8080 by default) serves

- ``POST /v1/charges``: a charge, answered 201 after about ``CARD_P50_MS`` (12 ms, a
  log-normal spread), or ``503 Service Unavailable`` (quickly) for a share of the calls in
  ``error_spike`` mode, or ever more slowly in ``upstream_latency`` mode (the median grows
  geometrically from its usual value to ``CARD_SLOW_MS`` over ``CARD_RAMP_SECONDS``);
- ``GET /metrics``: its own metrics (OpenTelemetry's FastAPI instrumentation, stable HTTP
  names, and the process collectors), ``GET /health``;
- ``GET/POST /incident``: its mode, switched from loopback (payment-service forwards the
  card-side modes of its own switch here) or with ``X-Incident-Token``.

Its traces go to the same OTLP endpoint as payment-service's, as ``service.name``
``card-processor``: a charge's server span is the child of payment-service's client span.
Handlers are async (``asyncio.sleep``): the processor is not the bottleneck being modelled,
its answer time is.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import random
import time
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .app import IncidentIn, switch_refused
from .settings import Settings, SettingsError
from .telemetry import card_telemetry

CARD_MODES = ("normal", "error_spike", "upstream_latency")
CARD_RESOURCE = ("service.name=card-processor,service.namespace=shop,service.version=2.3.0,"
                 "deployment.environment=demo")


@dataclass(frozen=True)
class CardSettings:
    p50_ms: float = 12.0  # median answer to a charge
    sigma: float = 0.35  # log-normal spread of the answer time (the generator's)
    error_ratio: float = 0.3  # error_spike: share of charges answered 503
    slow_ms: float = 2500.0  # upstream_latency: the median reached at the end of the ramp
    ramp_s: float = 60.0  # upstream_latency: time from the usual median to slow_ms
    mode: str = "normal"
    incident_token: str | None = None
    otlp_endpoint: str | None = None
    otlp_protocol: str = "grpc"

    def __post_init__(self) -> None:
        if self.mode not in CARD_MODES:
            raise SettingsError(f"CARD_MODE={self.mode!r} is not one of {', '.join(CARD_MODES)}")
        if not (self.p50_ms > 0 and self.slow_ms > 0 and self.sigma >= 0 and self.ramp_s >= 0):
            raise SettingsError("CARD_P50_MS and CARD_SLOW_MS must be > 0, CARD_SIGMA and "
                                "CARD_RAMP_SECONDS >= 0")
        if not 0.0 <= self.error_ratio <= 1.0:
            raise SettingsError("CARD_ERROR_RATIO must be between 0 and 1")

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> CardSettings:
        e = os.environ if env is None else env

        def num(key: str, default: float) -> float:
            raw = e.get(key) or ""
            try:
                return float(raw) if raw else default
            except ValueError:
                raise SettingsError(f"{key}={raw!r} is not a number") from None

        return CardSettings(
            p50_ms=num("CARD_P50_MS", 12.0), sigma=num("CARD_SIGMA", 0.35),
            error_ratio=num("CARD_ERROR_RATIO", 0.3), slow_ms=num("CARD_SLOW_MS", 2500.0),
            ramp_s=num("CARD_RAMP_SECONDS", 60.0), mode=e.get("CARD_MODE", "normal"),
            incident_token=e.get("INCIDENT_TOKEN") or None,
            otlp_endpoint=e.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            otlp_protocol=e.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"))


class Behaviour:
    """The mode and what it makes of the next charge: (seconds to answer, fails)."""

    def __init__(self, settings: CardSettings, rng: random.Random | None = None,
                 clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.settings, self.rng, self.clock = settings, rng or random.Random(), clock
        self.mode, self.since, self._t0 = "normal", time.time(), clock()
        self.set(settings.mode)

    def set(self, mode: str) -> str:
        if mode not in CARD_MODES:
            raise SettingsError(f"unknown card-processor mode {mode!r}; valid modes: "
                                f"{', '.join(CARD_MODES)}")
        if mode != self.mode:
            self.mode, self.since, self._t0 = mode, time.time(), self.clock()
        return mode

    def median_s(self) -> float:
        s = self.settings
        if self.mode != "upstream_latency":
            return s.p50_ms / 1e3
        done = 1.0 if s.ramp_s == 0 else min(1.0, (self.clock() - self._t0) / s.ramp_s)
        return s.p50_ms / 1e3 * (s.slow_ms / s.p50_ms) ** done

    def next_charge(self) -> tuple[float, bool]:
        s = self.settings
        if self.mode == "error_spike" and self.rng.random() < s.error_ratio:
            return self.rng.lognormvariate(math.log(0.004), 0.5), True  # shed, quickly
        return self.rng.lognormvariate(math.log(self.median_s()), s.sigma), False


def create_card_processor(settings: CardSettings | None = None,
                          rng: random.Random | None = None) -> FastAPI:
    settings = settings or CardSettings.from_env()
    tel = card_telemetry(Settings(otlp_endpoint=settings.otlp_endpoint,
                                  otlp_protocol=settings.otlp_protocol,
                                  resource_attributes=CARD_RESOURCE))
    behaviour = Behaviour(settings, rng)
    ids = itertools.count(1)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        tel.shutdown()

    app = FastAPI(title="card-processor", lifespan=lifespan)
    app.state.behaviour, app.state.telemetry = behaviour, tel

    @app.post("/v1/charges", status_code=201)
    async def charge(request: Request) -> Response:
        took, failed = behaviour.next_charge()
        await asyncio.sleep(took)
        if failed:
            return JSONResponse({"error": "overloaded, try again later"}, status_code=503,
                                headers={"Retry-After": "1"})
        body = await request.json()
        return JSONResponse({"id": f"ch_{next(ids):08d}", "status": "succeeded",
                             "amount": body.get("amount"), "currency": body.get("currency")},
                            status_code=201)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/incident")
    async def get_incident() -> dict[str, object]:
        return {"mode": behaviour.mode, "since": behaviour.since, "modes": list(CARD_MODES)}

    @app.post("/incident")
    async def set_incident(body: IncidentIn, request: Request) -> Response:
        refused = switch_refused(request, settings.incident_token, "the card-processor's mode")
        if refused is not None:
            return refused
        try:
            mode = behaviour.set(body.mode)
        except SettingsError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        logging.getLogger("card_processor").warning("card-processor mode set to %s", mode)
        return JSONResponse({"mode": mode})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(tel.registry), media_type=CONTENT_TYPE_LATEST)

    FastAPIInstrumentor.instrument_app(app, meter_provider=tel.meter_provider,
                                       tracer_provider=tel.tracer_provider,
                                       excluded_urls="/metrics,/health,/incident",
                                       exclude_spans=["receive", "send"])
    return app


def _quiet_h11() -> type:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class QuietH11(H11Protocol):
        """uvicorn's h11 protocol without access lines."""

        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            self.access_log = False

    return QuietH11


class EmbeddedCardProcessor:
    """The card processor served from a thread of another process, on a loopback port of
    its own choosing (payment-service starts one when ``CARD_PROCESSOR_URL`` is unset)."""

    def __init__(self, settings: CardSettings) -> None:
        import socket
        import threading

        import uvicorn

        self.app = create_card_processor(settings)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        port = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        # log_config None: configuring uvicorn's logging again would replace the handlers
        # the host app attached to uvicorn's loggers; and no access lines: uvicorn writes
        # them to the process-wide "uvicorn.access" logger, which the host app exports as
        # its own
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_config=None,
                                                    http=_quiet_h11(), lifespan="on"))
        self._thread = threading.Thread(target=self.server.run,
                                        kwargs={"sockets": [self._socket]},
                                        name="card-processor", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10.0
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the in-process card processor did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10.0)
        self._socket.close()


def main() -> None:
    import uvicorn

    uvicorn.run(create_card_processor(), host=os.environ.get("HOST", "127.0.0.1"),
                port=int(os.environ.get("PORT", "8080")))


if __name__ == "__main__":
    main()
