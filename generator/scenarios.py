"""Named scenarios, declared as data, in one explicit registry.

A scenario is a fault kind, the times of its phases (as fractions of the window, so the
same incident can be laid over 30 minutes or 2 hours) and knobs. Knobs are validated
here, once, so the simulation can trust them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np


class ScenarioError(ValueError):
    """A scenario name or knob is not valid; the message says what would be."""


# Every knob, with its default and its valid range. Scenarios override defaults.
KNOB_DEFAULTS: Mapping[str, float] = MappingProxyType(
    {
        "rps_post_payment": 8.0,  # POST /payment, requests per second
        "rps_get_payment": 5.0,  # GET /payments/{id}
        "rps_health": 0.2,  # GET /health (a probe every 5 s)
        "app_p50_ms": 9.0,  # request handling outside the database
        "app_sigma": 0.45,  # log-normal sigma of handling time
        "select_p50_ms": 2.2,  # SELECT payments by idempotency key, indexed
        "select_peak_ms": 1500.0,  # the same SELECT at peak when the index is gone
        "insert_p50_ms": 1.6,
        "query_sigma": 0.35,
        "hold_extra_peak_ms": 0.0,  # extra time a transaction holds its connection at peak
        "card_p50_ms": 12.0,  # the card processor's answer to a charge (HTTP call)
        "card_peak_ms": 0.0,  # its median answer at the peak of upstream_latency (0: as usual)
        "worker_threads": 40,  # anyio's thread pool that runs FastAPI's sync endpoints
        "pool_size": 5,
        "max_overflow": 10,
        "pool_timeout_s": 30.0,
        "statement_timeout_ms": 0,  # PostgreSQL statement_timeout; 0 = off
        "log_min_duration_statement_ms": 250,  # as infra/ and live_app's local PostgreSQL
        # 1: every request traced, as live_app exports them; below 1 a collector tail-samples:
        # every error, a quarter of the requests over 1 s, and this share of the rest
        "trace_sample_ratio": 1.0,
        "not_found_ratio": 0.02,  # GET /payments/{id} answering 404
        "error_ratio_peak": 0.0,  # share of POST /payment the card processor fails at peak
        # share of POST /payment whose code path keeps its connection (connection_leak)
        "leak_ratio_peak": 0.0,
        # every statement's time at peak, as a multiple of its usual time (noisy_neighbour)
        "statement_slowdown_peak": 1.0,
        "max_connections": 100,  # PostgreSQL max_connections (3 of them reserved)
        # seconds after which SQLAlchemy replaces a pooled connection (pool_recycle); 0: never
        "pool_recycle_s": 0.0,
        # single-row SELECTs a POST /payment of the regressed version adds (N+1), on average
        "n_plus_one_peak": 0.0,
        # memory a payment leaves behind in a cache that never evicts (memory_leak)
        "leak_kb_per_payment": 0.0,
        "memory_limit_mb": 512.0,  # the container's memory limit: the OOM killer acts there
        "restart_s": 6.0,  # from a process stopping to the new one answering
        # slow_query's fix: the CREATE INDEX that restores the index holds a SHARE lock on
        # payments this long, and writes wait for it (0: the index is back at once)
        "index_build_s": 1.0,
    }
)

_INT_KNOBS = frozenset({"worker_threads", "pool_size", "max_overflow", "statement_timeout_ms",
                        "log_min_duration_statement_ms", "max_connections"})
_RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "index_build_s": (0.0, 600.0),
        "rps_post_payment": (0.0, 5000.0),
        "rps_get_payment": (0.0, 5000.0),
        "rps_health": (0.0, 100.0),
        "app_p50_ms": (0.1, 60000.0),
        "app_sigma": (0.0, 3.0),
        "select_p50_ms": (0.01, 600000.0),
        "select_peak_ms": (0.01, 600000.0),
        "insert_p50_ms": (0.01, 600000.0),
        "query_sigma": (0.0, 3.0),
        "hold_extra_peak_ms": (0.0, 600000.0),
        "card_p50_ms": (0.1, 60000.0),
        "card_peak_ms": (0.0, 600000.0),
        "worker_threads": (1, 10000),
        "pool_size": (1, 1000),
        "max_overflow": (0, 1000),
        "pool_timeout_s": (0.1, 3600.0),
        "statement_timeout_ms": (0, 3600000),
        "log_min_duration_statement_ms": (0, 3600000),
        "trace_sample_ratio": (0.0, 1.0),
        "not_found_ratio": (0.0, 1.0),
        "error_ratio_peak": (0.0, 1.0),
        "leak_ratio_peak": (0.0, 1.0),
        "statement_slowdown_peak": (1.0, 1000.0),
        "max_connections": (20, 10000),
        "pool_recycle_s": (0.0, 86400.0),
        "n_plus_one_peak": (0.0, 500.0),
        "leak_kb_per_payment": (0.0, 100000.0),
        "memory_limit_mb": (160.0, 1048576.0),
        "restart_s": (0.5, 600.0),
    }
)

FAULT_KINDS = ("none", "slow_query", "connection_hold", "upstream_errors", "connection_leak",
               "upstream_latency", "lock_contention", "too_many_clients", "noisy_neighbour",
               "deploy_regression", "memory_leak", "disk_full")


@dataclass(frozen=True)
class PhasePlan:
    """Phase boundaries as fractions of the window: baseline until ``onset``, ramp to
    ``peak``, hold until ``recovery``, ramp down until ``recovered``.

    These are the nominal times. The seed moves the incident: the onset is drawn within
    ``onset_range`` and each phase's length is stretched by up to ``stretch`` either way
    (:meth:`realize`), so no two seeds share an onset and nothing in the window lines up
    with it by construction. The ground truth records the times that were drawn."""

    onset: float
    peak: float
    recovery: float
    recovered: float
    onset_jump: float = 0.0  # severity reached the moment the fault starts (a deploy, a
    # dropped index: real faults start at an instant; 1.0 is a step)
    onset_range: tuple[float, float] | None = None
    stretch: float = 0.0

    def __post_init__(self) -> None:
        points = (self.onset, self.peak, self.recovery, self.recovered)
        if not all(0.0 <= p <= 1.0 for p in points) or list(points) != sorted(points):
            raise ScenarioError(f"phase fractions must rise within [0, 1], got {points}")
        lo, hi = self.onset_range or (self.onset, self.onset)
        if not 0.0 <= lo <= hi <= 1.0 or not 0.0 <= self.stretch < 1.0:
            raise ScenarioError(f"onset range {self.onset_range} must lie within [0, 1] and "
                                f"the stretch {self.stretch} within [0, 1)")

    def realize(self, rng: np.random.Generator) -> PhasePlan:
        """The times of one seed: the onset drawn in its range, lengths stretched."""
        lo, hi = self.onset_range or (self.onset, self.onset)
        onset = float(lo + (hi - lo) * rng.random())
        lengths = np.diff([self.onset, self.peak, self.recovery, self.recovered])
        lengths = lengths * (1.0 + self.stretch * (2.0 * rng.random(3) - 1.0))
        marks = np.minimum(onset + np.cumsum(lengths), 1.0)
        return PhasePlan(onset, float(marks[0]), float(marks[1]), float(marks[2]),
                         self.onset_jump)


@dataclass(frozen=True)
class Fault:
    """One more fault of a scenario with several (the primary one is the scenario's own
    ``fault``): its kind, what it is in the data, and its own phases."""

    kind: str
    component: str
    root_cause_kind: str
    phases: PhasePlan
    identity: Mapping[str, str] = field(default_factory=dict)


RED_HERRING_KINDS = ("deploy", "scrape_gap", "report_run")


@dataclass(frozen=True)
class RedHerring:
    """Something that happens in the window, shows in the data and causes nothing:
    ``deploy`` (payment-service restarts on a new version that changes nothing),
    ``scrape_gap`` (the postgres exporter's scrapes fail for ``length_s``), ``report_run``
    (the reporting job scans payments once more, by hand). ``at`` is a fraction of the
    window, drawn in ``at_range`` when one is given."""

    kind: str
    at: float
    at_range: tuple[float, float] | None = None
    length_s: float = 30.0
    version: str = "1.4.3"  # a deploy's new version

    def realize(self, rng: np.random.Generator) -> float:
        lo, hi = self.at_range or (self.at, self.at)
        return float(lo + (hi - lo) * rng.random())


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    fault: str  # one of FAULT_KINDS
    root_cause_component: str
    root_cause_kind: str
    phases: PhasePlan | None
    # how the root cause shows up in the data: Prometheus labels, span and resource
    # attributes, Loki labels that name it (so a guess can be matched without an alias)
    root_cause_identity: Mapping[str, str] = field(default_factory=dict)
    knobs: Mapping[str, float] = field(default_factory=dict)
    default_duration_s: int = 1800
    default_step_s: int = 15
    # the live_app incident mode that does the same fault for real ("": generator only)
    live_mode: str = ""
    also: tuple[Fault, ...] = ()  # faults beside the primary one, each with its own phases
    red_herrings: tuple[RedHerring, ...] = ()
    source: str = ""  # the file it was read from ("": built in)

    def fault_kinds(self) -> tuple[str, ...]:
        primary = () if self.fault == "none" else (self.fault,)
        return primary + tuple(f.kind for f in self.also)

    def resolve_knobs(self, overrides: Mapping[str, object] | None = None) -> dict[str, float]:
        """Defaults, then the scenario's knobs, then ``overrides``; all validated."""
        merged: dict[str, float] = dict(KNOB_DEFAULTS)
        merged.update(self.knobs)
        for key, raw in (overrides or {}).items():
            merged[key] = _parse_knob(key, raw)
        for key, value in merged.items():
            _check_range(key, value)
        return merged


def _parse_knob(key: str, raw: object) -> float:
    if key not in KNOB_DEFAULTS:
        hint = difflib.get_close_matches(key, KNOB_DEFAULTS, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ScenarioError(
            f"unknown knob {key!r}{extra}; valid knobs: {', '.join(sorted(KNOB_DEFAULTS))}"
        )
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ScenarioError(f"knob {key!r} needs a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        low, high = _RANGES[key]
        raise ScenarioError(f"knob {key!r} needs a finite number in [{low}, {high}], "
                            f"got {raw!r}")
    if key in _INT_KNOBS:
        if value != int(value):
            raise ScenarioError(f"knob {key!r} needs a whole number, got {raw!r}")
        return int(value)
    return value


def _check_range(key: str, value: float) -> None:
    low, high = _RANGES[key]
    if not (low <= value <= high) or value != value:
        raise ScenarioError(f"knob {key!r}={value!r} is out of range [{low}, {high}]")


_REGISTRY: dict[str, Scenario] = {}


def _register(scenario: Scenario) -> Scenario:
    if scenario.fault not in FAULT_KINDS:
        raise ScenarioError(f"fault {scenario.fault!r} is not one of {FAULT_KINDS}")
    scenario.resolve_knobs()  # fail at import if a built-in scenario is malformed
    _REGISTRY[scenario.name] = scenario
    return scenario


_register(
    Scenario(
        name="baseline",
        description="Healthy payment-service traffic: log-normal latency, no incident.",
        fault="none",
        root_cause_component="none",
        root_cause_kind="none",
        phases=None,
    )
)
_register(
    Scenario(
        name="slow_query",
        description=(
            "A migration drops the index on payments.idempotency_key: the SELECT behind "
            "POST /payment turns into a sequential scan, from ~2 ms to seconds; the "
            "connection pool fills (Little's law) and requests wait in line for a "
            "connection, slow but answered (none waits out the 30 s pool timeout at the "
            "default rate)."
        ),
        fault="slow_query",
        root_cause_component="postgres",
        root_cause_kind="missing_index",
        root_cause_identity={"job": "postgres", "server.address": "postgres",
                             "service_name": "postgres", "relname": "payments"},
        # DROP INDEX takes effect at once (a step); the fix is a plain CREATE INDEX (as
        # live_app's): writes wait for it (index_build_s), then the scans in flight drain
        phases=PhasePlan(onset=0.33, peak=0.34, recovery=0.70, recovered=0.71,
                         onset_jump=1.0, onset_range=(0.22, 0.45), stretch=0.25),
        live_mode="slow_query",
    )
)
_register(
    Scenario(
        name="pool_exhaustion",
        description=(
            "A deploy makes POST /payment call a slow fraud check (a span of its own) inside "
            "its open transaction: connections are held for seconds, the QueuePool (5 + 10) is "
            "pinned at 15, the 40 worker threads fill with waiters, and requests that wait "
            "past the 2 s pool timeout fail with 'QueuePool limit ... timeout 2.00'."
        ),
        fault="connection_hold",
        root_cause_component="payment-service",
        root_cause_kind="connection_pool_exhaustion",
        root_cause_identity={"job": "payment-service", "service.name": "payment-service",
                             "service_name": "payment-service"},
        # a deploy switches the slow call on at once; the rollback rolls out within seconds
        phases=PhasePlan(onset=0.33, peak=0.34, recovery=0.66, recovered=0.67,
                         onset_jump=1.0, onset_range=(0.22, 0.45), stretch=0.25),
        # the service fails fast: with 40 worker threads in front of 15 connections a waiter
        # can never queue long enough for a 30 s timeout, so the team set 2 s
        knobs={"hold_extra_peak_ms": 2500.0, "pool_timeout_s": 2.0},
        live_mode="pool_exhaustion",
    )
)

_register(
    Scenario(
        name="connection_leak",
        description=(
            "A deploy ships a code path that, after a payment committed, reads the receipt "
            "in a new transaction and never returns the connection: one POST /payment in a "
            "few hundred leaks one. Idle-in-transaction sessions and the pool's used "
            "connections climb step by step, the oldest transaction ages, and once all 15 "
            "are leaked every request waits out the 30 s pool timeout and fails, until the "
            "fix rolls out and the leaked sessions end."
        ),
        fault="connection_leak",
        root_cause_component="payment-service",
        root_cause_kind="connection_leak",
        root_cause_identity={"job": "payment-service", "service.name": "payment-service",
                             "service_name": "payment-service"},
        # the leaking deploy is a step; the fix ends every leaked session at once
        phases=PhasePlan(onset=0.25, peak=0.26, recovery=0.8, recovered=0.81,
                         onset_jump=1.0, onset_range=(0.15, 0.3), stretch=0.15),
        knobs={"leak_ratio_peak": 0.004},
        live_mode="connection_leak",
    )
)

_register(
    Scenario(
        name="upstream_latency",
        description=(
            "The card processor slows down (no errors): its answer to a charge goes from "
            "~12 ms to seconds. POST /payment makes that call before it takes a database "
            "connection, so its latency follows while the pool and PostgreSQL stay calm; the "
            "worker threads fill with requests waiting on the call."
        ),
        fault="upstream_latency",
        root_cause_component="card-processor",
        root_cause_kind="upstream_latency",
        root_cause_identity={"server.address": "card-processor",
                             "server_address": "card-processor"},
        phases=PhasePlan(onset=0.33, peak=0.40, recovery=0.66, recovered=0.70,
                         onset_jump=0.5, onset_range=(0.22, 0.45), stretch=0.25),
        knobs={"card_peak_ms": 2500.0},
        live_mode="upstream_latency",
    )
)

_register(
    Scenario(
        name="error_spike",
        description=(
            "The card processor starts answering 503 to about a third of the charges: "
            "POST /payment fails fast with PaymentGatewayError (HTTP 500), the database "
            "stays calm."
        ),
        fault="upstream_errors",
        root_cause_component="card-processor",
        root_cause_kind="upstream_errors",
        root_cause_identity={"server.address": "card-processor",
                             "server_address": "card-processor"},
        phases=PhasePlan(onset=0.33, peak=0.36, recovery=0.66, recovered=0.70,
                         onset_jump=0.8, onset_range=(0.22, 0.45), stretch=0.25),
        knobs={"error_ratio_peak": 0.35},
        live_mode="error_spike",
    )
)

_register(
    Scenario(
        name="lock_contention",
        description=(
            "A migration (ALTER TABLE payments ADD COLUMN, application_name alembic, no "
            "lock_timeout) asks for an ACCESS EXCLUSIVE lock while an analyst's psql session "
            "sits idle in a transaction that read payments: the ALTER waits, and every "
            "statement on payments queues behind it in the database. PostgreSQL logs the "
            "lock waits, the pool fills with connections that wait, then the worker threads, "
            "and requests time out at the pool, until the analyst's session ends."
        ),
        fault="lock_contention",
        root_cause_component="alembic",
        root_cause_kind="lock_contention",
        root_cause_identity={"job": "postgres", "service_name": "postgres",
                             "application_name": "alembic", "relname": "payments"},
        # the ALTER queues at an instant; when the old transaction ends it runs in
        # milliseconds and everything behind it goes: steps, a few minutes apart
        phases=PhasePlan(onset=0.33, peak=0.34, recovery=0.42, recovered=0.43,
                         onset_jump=1.0, onset_range=(0.22, 0.45), stretch=0.3),
        live_mode="lock_contention",
    )
)
_register(
    Scenario(
        name="too_many_clients",
        description=(
            "A batch export job (application_name batch-export) starts with a pool of its own "
            "and takes every connection slot PostgreSQL has left for ordinary roles. "
            "payment-service recycles its pooled connections every 5 minutes; each one it "
            "replaces is refused ('remaining connection slots are reserved ...'), its pool "
            "drains, and POST and GET answer 500 with OperationalError until the job ends."
        ),
        fault="too_many_clients",
        root_cause_component="batch-export",
        root_cause_kind="connection_slots_exhausted",
        root_cause_identity={"job": "postgres", "service_name": "postgres",
                             "application_name": "batch-export"},
        phases=PhasePlan(onset=0.3, peak=0.31, recovery=0.7, recovered=0.71,
                         onset_jump=1.0, onset_range=(0.18, 0.38), stretch=0.2),
        knobs={"pool_recycle_s": 300.0},
        live_mode="too_many_clients",
    )
)
_register(
    Scenario(
        name="noisy_neighbour",
        description=(
            "An analyst's dashboard (application_name metabase) runs heavy reports on "
            "ledger_entries: sequential scans that read from disk and sorts that spill to temp "
            "files. Every statement of payment-service gets slower (not one in particular, "
            "and with the same plans); the pool stays within its limits."
        ),
        fault="noisy_neighbour",
        root_cause_component="metabase",
        root_cause_kind="noisy_neighbour",
        root_cause_identity={"job": "postgres", "service_name": "postgres",
                             "application_name": "metabase", "relname": "ledger_entries"},
        phases=PhasePlan(onset=0.3, peak=0.33, recovery=0.66, recovered=0.68,
                         onset_jump=0.6, onset_range=(0.2, 0.42), stretch=0.25),
        knobs={"statement_slowdown_peak": 7.0},
        live_mode="noisy_neighbour",
    )
)
_register(
    Scenario(
        name="deploy_regression",
        description=(
            "A deploy of payment-service 1.5.0 (a restart: new process, counters from zero) "
            "ships an N+1 query: POST /payment loads the card's recent payments one by one, "
            "about 8 more SELECTs a request. Latency rises moderately, nothing fails; the "
            "rollback to 1.4.2 is another restart."
        ),
        fault="deploy_regression",
        root_cause_component="payment-service",
        root_cause_kind="deploy_regression",
        root_cause_identity={"job": "payment-service", "service.name": "payment-service",
                             "service_name": "payment-service", "service.version": "1.5.0",
                             "service_version": "1.5.0"},
        phases=PhasePlan(onset=0.3, peak=0.31, recovery=0.72, recovered=0.73,
                         onset_jump=1.0, onset_range=(0.2, 0.4), stretch=0.2),
        knobs={"n_plus_one_peak": 8.0},
    )
)
_register(
    Scenario(
        name="memory_leak",
        description=(
            "A feature flag turns on a cache of payment responses that never evicts: "
            "payment-service's resident memory grows with every payment until the OOM killer "
            "stops it at the container's 512 MiB limit. The process restarts (a scrape may "
            "fail, counters start from zero, requests in flight are lost) and the cycle "
            "begins again until the flag is turned off. Generator only."
        ),
        fault="memory_leak",
        root_cause_component="payment-service",
        root_cause_kind="memory_leak",
        root_cause_identity={"job": "payment-service", "service.name": "payment-service",
                             "service_name": "payment-service"},
        phases=PhasePlan(onset=0.2, peak=0.21, recovery=0.92, recovered=0.93,
                         onset_jump=1.0, onset_range=(0.12, 0.24), stretch=0.1),
        knobs={"leak_kb_per_payment": 60.0},
    )
)
_register(
    Scenario(
        name="disk_full",
        description=(
            "The database volume fills up: every INSERT into payments fails with 'could not "
            "extend file ... No space left on device', so POST /payment answers 500 while "
            "GET /payments/{id} still succeeds, and the database stops growing, until space "
            "is freed. Generator only."
        ),
        fault="disk_full",
        root_cause_component="postgres",
        root_cause_kind="disk_full",
        root_cause_identity={"job": "postgres", "service_name": "postgres",
                             "datname": "payments"},
        phases=PhasePlan(onset=0.33, peak=0.34, recovery=0.6, recovered=0.61,
                         onset_jump=1.0, onset_range=(0.22, 0.45), stretch=0.25),
    )
)

SCENARIOS: Mapping[str, Scenario] = MappingProxyType(_REGISTRY)


def get_scenario(name: str) -> Scenario:
    """The registered scenario ``name``, or the scenario file at that path (``.toml``);
    unknown names list the valid ones."""
    if name.endswith(".toml"):
        from .specfile import load_scenario_file

        return load_scenario_file(name)
    try:
        return SCENARIOS[name]
    except KeyError:
        close = difflib.get_close_matches(name, SCENARIOS, n=1)
        extra = f" (did you mean {close[0]!r}?)" if close else ""
        raise ScenarioError(
            f"unknown scenario {name!r}{extra}; valid scenarios: {', '.join(sorted(SCENARIOS))}"
        ) from None
