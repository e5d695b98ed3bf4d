"""Ground truth: what happened, when, where it shows, and the queries that reveal it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import GroundTruth, Phase
from .scenarios import PhasePlan, Scenario
from .simulate import (
    ERR_GATEWAY,
    ERR_POOL_TIMEOUT,
    POST_PAYMENT,
    SLOW_KEEP_RATIO,
    SLOW_TRACE_S,
    TraceIds,
    Traffic,
)
from .texts import SELECT_RECEIPT

P99_POST = ('histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_'
            'bucket{job="payment-service", http_route="/payment", http_request_method="POST"}'
            '[1m])))')
ERROR_RATIO = ('(sum(rate(http_server_request_duration_seconds_count{job="payment-service", '
               'http_response_status_code=~"5.."}[1m])) or vector(0)) / '
               'sum(rate(http_server_request_duration_seconds_count{job="payment-service"}[1m]))')
POOL_USED = 'db_client_connections_usage_connections{job="payment-service", state="used"}'
SEQ_SCANS = 'rate(pg_stat_user_tables_seq_scan{relname="payments"}[1m])'
POOL_TIMEOUTS = 'rate(db_client_connection_timeouts_total{job="payment-service"}[1m])'
POOL_PENDING = 'db_client_connection_pending_requests{job="payment-service"}'
CARD_ERRORS = ('sum by (http_response_status_code) (rate(http_client_request_duration_seconds_'
               'count{job="payment-service", server_address="card-processor"}[1m]))')
CARD_P99 = ('histogram_quantile(0.99, sum by (le) (rate(http_client_request_duration_seconds_'
            'bucket{job="payment-service", server_address="card-processor"}[1m])))')
ACTIVE = 'sum(http_server_active_requests{job="payment-service"})'
IDLE_IN_TX = 'pg_stat_activity_count{datname="payments", state="idle in transaction"}'
MAX_TX = 'max(pg_stat_activity_max_tx_duration{datname="payments"})'


def phases(plan: PhasePlan | None, duration_ms: int) -> tuple[Phase, ...]:
    """The phases of one realized plan; a fault that steps has no onset or recovery ramp,
    so those phases are left out (the onset time is the peak's start then)."""
    if plan is None:
        return (Phase("baseline", 0, duration_ms),)
    cut = [int(round(f * duration_ms)) for f in (0.0, plan.onset, plan.peak, plan.recovery,
                                                  plan.recovered, 1.0)]
    names = ("baseline", "onset", "peak", "recovery", "baseline")
    return tuple(Phase(n, a, b) for n, a, b in zip(names, cut, cut[1:]) if b > a)


TRACEQL_POST = '{ resource.service.name = "payment-service" && name = "POST /payment"'


@dataclass(frozen=True)
class _Story:
    """What each fault kind looks like: the words and queries of its ground truth."""

    summary: str
    affected: tuple[str, ...]
    promql: tuple[tuple[str, str], ...]
    logql: tuple[tuple[str, str], ...]  # before the example-trace query
    traceql: tuple[tuple[str, str], ...]


STORIES = {
    "slow_query": _Story(
        "payments SELECT by idempotency_key became a sequential scan (index missing); POST "
        "/payment latency rose from milliseconds to seconds and the connection pool saturated.",
        ("metrics:http_server_request_duration_seconds", "metrics:pg_stat_user_tables_seq_scan",
         "metrics:db_client_connections_usage_connections", "logs:postgresql duration lines",
         "traces:SELECT payments spans"),
        (("p99 of POST /payment", P99_POST), ("seq scans on payments", SEQ_SCANS),
         ("pool connections in use", POOL_USED), ("5xx ratio", ERROR_RATIO)),
        (("slow statements logged by PostgreSQL", '{service_name="postgres"} |= "duration:"'),),
        (("slow SELECT spans", '{ resource.service.name = "payment-service" && name = '
          '"SELECT payments" && duration > 500ms }'),
         ("slow POST /payment requests", TRACEQL_POST + " && duration > 1s }"))),
    "connection_hold": _Story(
        "POST /payment held database connections open for seconds through a slow fraud check "
        "inside its transaction; the QueuePool (5 + 10) "
        "stayed at 15 used, the worker threads filled with requests waiting for a "
        "connection, and those that waited past the 2 s pool timeout failed with "
        "sqlalchemy.exc.TimeoutError (HTTP 500).",
        ("metrics:db_client_connections_usage_connections",
         "metrics:db_client_connection_timeouts_total",
         "metrics:http_server_request_duration_seconds", "metrics:pg_stat_activity_count",
         "logs:payment-service QueuePool errors", "traces:fraud check spans",
         "traces:connect spans with TimeoutError"),
        (("pool connections in use", POOL_USED), ("requests waiting for a connection",
                                                  POOL_PENDING),
         ("pool timeouts", POOL_TIMEOUTS),
         ("5xx ratio", ERROR_RATIO), ("idle in transaction", IDLE_IN_TX),
         ("p99 of POST /payment", P99_POST)),
        (("QueuePool timeouts",
          '{service_name="payment-service"} | severity_text="ERROR" |= "QueuePool limit"'),),
        (("the slow call inside the transaction", '{ resource.service.name = '
          '"payment-service" && name = "fraud check" && duration > 1s }'),
         ("pool checkouts that timed out", '{ resource.service.name = "payment-service" && '
          'name = "connect" && status = error }'))),
    "connection_leak": _Story(
        "a code path shipped by a deploy read the receipt after each committed payment in a "
        "new transaction and never returned the connection (one payment in a few hundred): "
        "used connections and idle-in-transaction sessions climbed step by step with the "
        "oldest transaction's age, until all 15 were leaked and every request waited out the "
        "pool timeout and failed with sqlalchemy.exc.TimeoutError (HTTP 500); the fix ended "
        "the leaked sessions.",
        ("metrics:db_client_connections_usage_connections", "metrics:pg_stat_activity_count",
         "metrics:pg_stat_activity_max_tx_duration",
         "metrics:db_client_connection_timeouts_total",
         "logs:payment-service QueuePool errors",
         "traces:SELECT payments receipt spans after the INSERT"),
        (("pool connections in use", POOL_USED), ("idle in transaction", IDLE_IN_TX),
         ("oldest transaction", MAX_TX), ("pool timeouts", POOL_TIMEOUTS),
         ("5xx ratio", ERROR_RATIO)),
        (("QueuePool timeouts",
          '{service_name="payment-service"} | severity_text="ERROR" |= "QueuePool limit"'),),
        (("the leaking receipt lookups", '{ resource.service.name = "payment-service" && '
          'span.db.statement = "' + SELECT_RECEIPT + '" }'),
         ("pool checkouts that timed out", '{ resource.service.name = "payment-service" && '
          'name = "connect" && status = error }'))),
    "upstream_latency": _Story(
        "the card processor slowed from ~12 ms to seconds a charge (no errors): POST /payment "
        "waited on it before taking a database connection, so its latency followed while "
        "the connection pool and PostgreSQL stayed calm and the worker threads filled with "
        "requests waiting on the call.",
        ("metrics:http_client_request_duration_seconds{server_address=\"card-processor\"}",
         "metrics:http_server_request_duration_seconds", "metrics:http_server_active_requests",
         "traces:POST client spans to card-processor"),
        (("p99 of the card processor's answers", CARD_P99), ("p99 of POST /payment", P99_POST),
         ("requests in flight", ACTIVE), ("pool connections in use (calm)", POOL_USED)),
        (),
        (("slow calls to the card processor", '{ span.server.address = "card-processor" && '
          'kind = client && duration > 1s }'),
         ("slow payments", TRACEQL_POST + " && duration > 1s }"))),
    "upstream_errors": _Story(
        "the card processor answered 503 to about a third of the charges: POST /payment "
        "failed fast with PaymentGatewayError (HTTP 500) while the database and the pool "
        "stayed calm.",
        ("metrics:http_client_request_duration_seconds{server_address=\"card-processor\"}",
         "metrics:http_server_request_duration_seconds (5xx)", "metrics:http_requests_total",
         "logs:payment-service PaymentGatewayError",
         "traces:POST /payment spans with error status"),
        (("card processor answers by status", CARD_ERRORS), ("5xx ratio", ERROR_RATIO),
         ("p99 of POST /payment", P99_POST)),
        (("gateway errors",
          '{service_name="payment-service"} | severity_text="ERROR" |= "PaymentGatewayError"'),),
        (("calls the card processor failed", '{ span.server.address = "card-processor" && '
          'kind = client && status = error }'),
         ("failed payments", TRACEQL_POST + " && status = error }"))),
    "none": _Story(
        "healthy traffic; no incident.", (),
        (("p99 of POST /payment", P99_POST), ("5xx ratio", ERROR_RATIO)), (),
        (("POST /payment requests", TRACEQL_POST + " }"),)),
}


def sampling_policy(ratio: float) -> tuple[tuple[str, str], ...]:
    """The trace sampling the incident's traces went through, as the ground truth says it."""
    if ratio >= 1.0:
        return (("policy", "all"),)
    return (("errors", "all"), ("other_ratio", repr(float(ratio))), ("policy", "tail"),
            ("slow_ratio", repr(SLOW_KEEP_RATIO)), ("slower_than_s", repr(SLOW_TRACE_S)))


def build_truth(scenario: Scenario, plan: PhasePlan | None, duration_ms: int,
                traffic: Traffic, ids: TraceIds, sample_ratio: float = 1.0) -> GroundTruth:
    ph = phases(plan, duration_ms)
    peak = next((p for p in ph if p.name == "peak"), None)
    examples = _examples(scenario, traffic, ids, peak)
    example_logql = (("access lines of one example trace",
                      '{service_name="payment-service"} | trace_id="' + examples[0] + '"')
                     if examples else ("access lines", '{service_name="payment-service"}'))
    story = STORIES[scenario.fault]
    return GroundTruth(
        summary=story.summary, root_cause_component=scenario.root_cause_component,
        root_cause_kind=scenario.root_cause_kind,
        onset_ms=None if plan is None else int(round(plan.onset * duration_ms)),
        peak_ms=_at(ph, "peak"),
        recovery_ms=None if plan is None else int(round(plan.recovery * duration_ms)),
        phases=ph,
        affected_signals=story.affected, example_trace_ids=examples, promql=story.promql,
        logql=story.logql + (example_logql,), traceql=story.traceql,
        root_cause_identity=tuple(sorted(scenario.root_cause_identity.items())),
        trace_sampling=sampling_policy(sample_ratio))


def _at(ph: tuple[Phase, ...], name: str) -> int | None:
    return next((p.start_ms for p in ph if p.name == name), None)


def _examples(scenario: Scenario, traffic: Traffic, ids: TraceIds,
              peak: Phase | None, count: int = 5) -> tuple[str, ...]:
    rows = np.flatnonzero(traffic.sampled)
    pos = np.arange(rows.shape[0])
    mask = traffic.route[rows] == POST_PAYMENT
    if peak is not None:
        t = traffic.start_ns[rows] // 1_000_000
        mask &= (t >= peak.start_ms) & (t < peak.end_ms)
    if scenario.fault == "connection_hold":
        mask &= traffic.error[rows] == ERR_POOL_TIMEOUT
    if scenario.fault == "upstream_errors":
        mask &= traffic.error[rows] == ERR_GATEWAY
    if scenario.fault == "connection_leak":  # the requests that leaked
        mask &= traffic.receipt_end_ns[rows] > traffic.receipt_start_ns[rows]
    chosen = pos[mask]
    latency = traffic.latency_s[rows[chosen]]
    order = np.lexsort((chosen, -latency)) if scenario.fault != "none" else np.arange(
        chosen.shape[0])
    return tuple(ids.hex_trace(int(i)) for i in chosen[order][:count])
