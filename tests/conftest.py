from __future__ import annotations

import functools

import pytest

from generator import generate
from generator.model import Incident

pytest_plugins = ["pytester"]

BUILT_IN = ("baseline", "slow_query", "pool_exhaustion", "connection_leak", "error_spike",
            "upstream_latency", "lock_contention", "too_many_clients", "noisy_neighbour",
            "deploy_regression", "memory_leak", "disk_full")


@functools.cache
def cached_incident(scenario: str, seed: int = 1) -> Incident:
    return generate(scenario, seed=seed)


@pytest.fixture(params=BUILT_IN)
def incident(request: pytest.FixtureRequest) -> Incident:
    return cached_incident(request.param)


def app_records(incident: Incident) -> list[tuple[int, str, dict[str, str]]]:
    """(time, line, structured metadata) of payment-service's OTLP log records."""
    return [(int(t), line, dict(meta)) for s in incident.log_streams
            if dict(s.labels).get("service_name") == "payment-service"
            for t, line, meta in zip(s.t_ns.tolist(), s.lines, s.metadata)]


def error_records(incident: Incident) -> list[tuple[int, str, dict[str, str]]]:
    return [r for r in app_records(incident) if r[2].get("severity_text") == "ERROR"]
