from __future__ import annotations

import functools

import pytest

from generator import generate
from generator.model import Incident

pytest_plugins = ["pytester"]

BUILT_IN = ("baseline", "slow_query", "pool_exhaustion", "error_spike")


@functools.cache
def cached_incident(scenario: str, seed: int = 1) -> Incident:
    return generate(scenario, seed=seed)


@pytest.fixture(params=BUILT_IN)
def incident(request: pytest.FixtureRequest) -> Incident:
    return cached_incident(request.param)
