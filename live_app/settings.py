"""Configuration, read from the environment once, at the edge, into a frozen object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

MODES = ("normal", "slow_query", "pool_exhaustion", "connection_leak", "error_spike",
         "upstream_latency", "lock_contention", "too_many_clients", "noisy_neighbour")
# modes that are the card processor's: payment-service forwards them to it
CARD_SIDE = ("error_spike", "upstream_latency")
# modes that need PostgreSQL: the fault is PostgreSQL's own (its locks, its slots, its
# disk and CPUs shared with another client)
POSTGRES_MODES = ("lock_contention", "too_many_clients", "noisy_neighbour")
DEFAULT_RESOURCE = ("service.name=payment-service,service.namespace=shop,service.version=1.4.2,"
                    "deployment.environment=demo")


class SettingsError(ValueError):
    """A setting is not valid; the message names it and what would be."""


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///./payments.db"
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout_s: float = 30.0
    incident_mode: str = "normal"
    incident_token: str | None = None
    # payments the table holds at least (seeded at startup): what a sequential scan reads
    # once slow_query has dropped the lookup index
    seed_rows: int = 0
    error_ratio: float = 0.3  # share of charges the card processor fails in error_spike mode
    # the card processor's base URL; unset: payment-service runs one in-process on loopback
    card_processor_url: str | None = None
    # pool_exhaustion: the slow call inside each payment's transaction (its median; a
    # log-normal spread, sigma 0.3, as the generator's fraud check)
    hold_s: float = 2.5
    leak_ratio: float = 0.05  # connection_leak: share of payments that leak a connection
    # SQLAlchemy's pool_recycle: a pooled connection older than this is replaced at its
    # next checkout (-1: never, SQLAlchemy's default); too_many_clients bites through it
    pool_recycle_s: float = -1.0
    otlp_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT; None: export nothing
    otlp_protocol: str = "grpc"
    # per-signal overrides (OTEL_EXPORTER_OTLP_{TRACES,LOGS}_{ENDPOINT,PROTOCOL}): traces to
    # Tempo over gRPC and logs to Loki's OTLP/HTTP endpoint, for example
    otlp_traces_endpoint: str | None = None
    otlp_traces_protocol: str | None = None
    otlp_logs_endpoint: str | None = None
    otlp_logs_protocol: str | None = None
    resource_attributes: str = DEFAULT_RESOURCE

    def __post_init__(self) -> None:
        if self.incident_mode not in MODES:
            raise SettingsError(f"INCIDENT_MODE={self.incident_mode!r} is not one of "
                                f"{', '.join(MODES)}")
        if not (0.0 <= self.leak_ratio <= 1.0 and 0.0 <= self.error_ratio <= 1.0):
            raise SettingsError("LEAK_RATIO and ERROR_SPIKE_RATIO must be between 0 and 1")
        if self.hold_s < 0 or self.seed_rows < 0:
            raise SettingsError("POOL_HOLD_SECONDS and SEED_ROWS must be >= 0")
        if self.pool_size < 1 or self.max_overflow < 0 or self.pool_timeout_s <= 0:
            raise SettingsError("POOL_SIZE must be >= 1, POOL_MAX_OVERFLOW >= 0 and "
                                "POOL_TIMEOUT > 0")
        for key, value in (("", self.otlp_protocol), ("TRACES_", self.otlp_traces_protocol),
                           ("LOGS_", self.otlp_logs_protocol)):
            if value is not None and value not in ("grpc", "http/protobuf"):
                raise SettingsError(f"OTEL_EXPORTER_OTLP_{key}PROTOCOL={value!r}: use grpc "
                                    "or http/protobuf")

    def exporter(self, signal: str) -> tuple[str, str, bool] | None:
        """(endpoint, protocol, per-signal) for ``traces`` or ``logs``; None: export nothing.

        A per-signal HTTP endpoint is the full URL; the shared one gets /v1/<signal>."""
        own = self.otlp_traces_endpoint if signal == "traces" else self.otlp_logs_endpoint
        proto = self.otlp_traces_protocol if signal == "traces" else self.otlp_logs_protocol
        if own:
            return own, proto or self.otlp_protocol, True
        if self.otlp_endpoint:
            return self.otlp_endpoint, proto or self.otlp_protocol, False
        return None

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> Settings:
        e = os.environ if env is None else env

        def num(key: str, default: float, cast: type = float) -> float:
            raw = e.get(key)
            if raw is None or raw == "":
                return default
            try:
                return cast(raw)
            except ValueError:
                raise SettingsError(f"{key}={raw!r} is not a number") from None

        return Settings(
            database_url=e.get("DATABASE_URL", Settings.database_url),
            pool_size=int(num("POOL_SIZE", 5, int)),
            max_overflow=int(num("POOL_MAX_OVERFLOW", 10, int)),
            pool_timeout_s=num("POOL_TIMEOUT", 30.0),
            incident_mode=e.get("INCIDENT_MODE", "normal"),
            incident_token=e.get("INCIDENT_TOKEN") or None,
            seed_rows=int(num("SEED_ROWS", 0, int)),
            error_ratio=num("ERROR_SPIKE_RATIO", 0.3),
            card_processor_url=e.get("CARD_PROCESSOR_URL") or None,
            hold_s=num("POOL_HOLD_SECONDS", 2.5),
            leak_ratio=num("LEAK_RATIO", 0.05),
            pool_recycle_s=num("POOL_RECYCLE_SECONDS", -1.0),
            otlp_endpoint=e.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            otlp_protocol=e.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            otlp_traces_endpoint=e.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None,
            otlp_traces_protocol=e.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or None,
            otlp_logs_endpoint=e.get("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") or None,
            otlp_logs_protocol=e.get("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL") or None,
            resource_attributes=",".join(x for x in (DEFAULT_RESOURCE,
                                                     e.get("OTEL_RESOURCE_ATTRIBUTES", ""))
                                         if x),
        )
