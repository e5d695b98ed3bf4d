"""Ground truth: what happened, when, where it shows, and the queries that reveal it."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .model import FaultTruth, GroundTruth, Phase, RedHerringTruth
from .scenarios import PhasePlan, Scenario
from .simulate import (
    ERR_CONNECT,
    ERR_DISK_FULL,
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
CARD_SERVED_P99 = ('histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_'
                   'seconds_bucket{job="card-processor", http_route="/v1/charges"}[1m])))')
CARD_SERVED_503 = ('sum(rate(http_server_request_duration_seconds_count{job="card-processor", '
                   'http_response_status_code="503"}[1m]))')
IDLE_IN_TX = 'pg_stat_activity_count{datname="payments", state="idle in transaction"}'
MAX_TX = 'max(pg_stat_activity_max_tx_duration{datname="payments"})'
LOCK_WAITS = 'sum(pg_stat_activity_count{datname="payments", wait_event_type="Lock"})'
EXCLUSIVE_LOCKS = 'pg_locks_count{datname="payments", mode="accessexclusivelock"}'
OLDEST_BY_APP = ('max by (application_name, state) (pg_stat_activity_max_tx_duration{'
                 'datname="payments"})')
SESSIONS_BY_APP = ('sum by (application_name) (pg_stat_activity_count{datname="payments"})')
BACKENDS = ('sum(pg_stat_database_numbackends{job="postgres"}) / '
            'max(pg_settings_max_connections{job="postgres"})')
READS = 'rate(pg_stat_database_blks_read{datname="payments"}[5m])'
TEMP_BYTES = 'rate(pg_stat_database_temp_bytes{datname="payments"}[5m])'
HIT_RATIO = ('rate(pg_stat_database_blks_hit{datname="payments"}[5m]) / (rate(pg_stat_database_'
             'blks_hit{datname="payments"}[5m]) + rate(pg_stat_database_blks_read{datname='
             '"payments"}[5m]))')
LEDGER_SCANS = 'rate(pg_stat_user_tables_seq_scan{relname="ledger_entries"}[5m])'
P50_POST = P99_POST.replace("0.99", "0.5")
VERSIONS = 'count by (service_version) (target_info{job="payment-service"})'
STARTS = 'changes(process_start_time_seconds{job="payment-service"}[30m])'
INDEX_LOOKUPS_PER_REQ = ('sum(rate(pg_stat_user_tables_idx_scan{relname="payments"}[5m])) / '
                         'sum(rate(http_server_request_duration_seconds_count{job="payment-'
                         'service"}[5m]))')
RSS = 'process_resident_memory_bytes{job="payment-service"}'
UP = 'up{job="payment-service"}'
RESETS = 'resets(http_server_request_duration_seconds_count{job="payment-service"}[30m])'
DB_SIZE = 'deriv(pg_database_size_bytes{datname="payments"}[5m])'
INSERTED = 'rate(pg_stat_database_tup_inserted{datname="payments"}[1m])'
ERRORS_BY_ROUTE = ('sum by (http_route) (rate(http_server_request_duration_seconds_count{job='
                   '"payment-service", http_response_status_code=~"5.."}[1m]))')


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
         "metrics:card-processor's own http_server_request_duration_seconds",
         "traces:POST client spans to card-processor",
         "traces:card-processor POST /v1/charges server spans"),
        (("p99 of the card processor's answers", CARD_P99), ("p99 of POST /payment", P99_POST),
         ("requests in flight", ACTIVE), ("pool connections in use (calm)", POOL_USED),
         ("p99 card-processor serves a charge in", CARD_SERVED_P99)),
        (),
        (("slow calls to the card processor", '{ span.server.address = "card-processor" && '
          'kind = client && duration > 1s }'),
         ("slow charges, as card-processor served them", '{ resource.service.name = '
          '"card-processor" && name = "POST /v1/charges" && duration > 1s }'),
         ("slow payments", TRACEQL_POST + " && duration > 1s }"))),
    "upstream_errors": _Story(
        "the card processor answered 503 to about a third of the charges: POST /payment "
        "failed fast with PaymentGatewayError (HTTP 500) while the database and the pool "
        "stayed calm.",
        ("metrics:http_client_request_duration_seconds{server_address=\"card-processor\"}",
         "metrics:http_server_request_duration_seconds (5xx)", "metrics:http_requests_total",
         "logs:payment-service PaymentGatewayError",
         "metrics:card-processor's own http_server_request_duration_seconds (503)",
         "traces:POST /payment spans with error status",
         "traces:card-processor POST /v1/charges server spans (503)"),
        (("card processor answers by status", CARD_ERRORS), ("5xx ratio", ERROR_RATIO),
         ("p99 of POST /payment", P99_POST),
         ("503s card-processor served", CARD_SERVED_503)),
        (("gateway errors",
          '{service_name="payment-service"} | severity_text="ERROR" |= "PaymentGatewayError"'),),
        (("calls the card processor failed", '{ span.server.address = "card-processor" && '
          'kind = client && status = error }'),
         ("failed payments", TRACEQL_POST + " && status = error }"))),
    "lock_contention": _Story(
        "a migration (ALTER TABLE payments ADD COLUMN, run by alembic with no lock_timeout) "
        "queued for an ACCESS EXCLUSIVE lock behind an analyst's psql session idle in a "
        "transaction that had read payments; every statement of payment-service on payments "
        "queued behind the ALTER in the database, the pool's 15 connections filled with "
        "waiting sessions, then the worker threads, and requests waited out the pool timeout "
        "until the analyst's transaction ended and the ALTER ran in milliseconds.",
        ("metrics:pg_stat_activity_count{wait_event_type=\"Lock\"}",
         "metrics:pg_locks_count{mode=\"accessexclusivelock\"}",
         "metrics:pg_stat_activity_max_tx_duration", "metrics:db_client_connections_usage_"
         "connections", "metrics:http_server_request_duration_seconds",
         "logs:postgresql lock waits", "traces:SELECT payments spans waiting seconds"),
        (("sessions waiting on a lock", LOCK_WAITS), ("ACCESS EXCLUSIVE locks", EXCLUSIVE_LOCKS),
         ("oldest transaction by client", OLDEST_BY_APP), ("pool connections in use", POOL_USED),
         ("p99 of POST /payment", P99_POST)),
        (("lock waits logged by PostgreSQL",
          '{service_name="postgres"} |= "still waiting for"'),
         ("the ALTER that queued", '{service_name="postgres"} |= "AccessExclusiveLock"')),
        (("statements that waited", '{ resource.service.name = "payment-service" && name = '
          '"SELECT payments" && duration > 1s }'),)),
    "too_many_clients": _Story(
        "a batch export job (application_name batch-export) took every connection slot "
        "PostgreSQL keeps for ordinary roles; payment-service's pool replaced its "
        "connections as pool_recycle aged them, each new connection was refused ('remaining "
        "connection slots are reserved for non-replication superuser connections'), the pool "
        "drained and requests answered 500 with sqlalchemy.exc.OperationalError until the "
        "job ended.",
        ("metrics:pg_stat_activity_count{application_name=\"batch-export\"}",
         "metrics:pg_stat_database_numbackends", "metrics:http_server_request_duration_"
         "seconds (5xx)", "metrics:db_client_connections_usage_connections",
         "logs:postgresql FATAL connection slots", "logs:payment-service OperationalError",
         "traces:connect spans with OperationalError"),
        (("sessions by client", SESSIONS_BY_APP), ("backends of max_connections", BACKENDS),
         ("5xx ratio", ERROR_RATIO), ("pool connections in use", POOL_USED)),
        (("refused connections", '{service_name="postgres"} |= "connection slots are '
          'reserved"'),
         ("the service's errors", '{service_name="payment-service"} | severity_text="ERROR" '
          '|= "OperationalError"')),
        (("connections refused", '{ resource.service.name = "payment-service" && name = '
          '"connect" && status = error }'),
         ("failed payments", TRACEQL_POST + " && status = error }"))),
    "noisy_neighbour": _Story(
        "a finance dashboard (application_name metabase) ran heavy reports on ledger_entries "
        "back to back: parallel sequential scans read from disk and their sorts spilled "
        "gigabytes to temp files; every statement of payment-service got several times "
        "slower with unchanged plans, so its latency rose while the pool stayed within its "
        "limits.",
        ("metrics:pg_stat_database_blks_read", "metrics:pg_stat_database_temp_bytes",
         "metrics:pg_stat_user_tables_seq_scan{relname=\"ledger_entries\"}",
         "metrics:pg_stat_activity_count{application_name=\"metabase\"}",
         "metrics:http_server_request_duration_seconds", "logs:postgresql temporary files",
         "traces:every statement slower"),
        (("blocks read from disk", READS), ("temp bytes written", TEMP_BYTES),
         ("buffer cache hit ratio", HIT_RATIO), ("scans of ledger_entries", LEDGER_SCANS),
         ("sessions by client", SESSIONS_BY_APP), ("p50 of POST /payment", P50_POST)),
        (("the reports' temp files", '{service_name="postgres"} |= "temporary file"'),
         ("the reports", '{service_name="postgres"} |= "ledger_entries"')),
        (("slower inserts", '{ resource.service.name = "payment-service" && name = '
          '"INSERT payments" && duration > 8ms }'),)),
    "deploy_regression": _Story(
        "payment-service 1.5.0 was deployed (a restart: new pod, counters from zero) with an "
        "N+1 query: POST /payment loaded the card's recent payments one by one, about 8 more "
        "SELECTs by primary key a request; latency rose moderately with no errors, until the "
        "rollback to 1.4.2 (another restart).",
        ("metrics:target_info{service_version=\"1.5.0\"}",
         "metrics:process_start_time_seconds", "metrics:pg_stat_user_tables_idx_scan",
         "metrics:pg_stat_database_tup_fetched", "metrics:http_server_request_duration_seconds",
         "logs:uvicorn startup lines", "traces:many SELECT payments spans per request"),
        (("versions running", VERSIONS), ("process starts", STARTS),
         ("index lookups per request", INDEX_LOOKUPS_PER_REQ), ("p50 of POST /payment",
                                                                 P50_POST)),
        (("restarts", '{service_name="payment-service"} |= "Application startup complete"'),),
        (("requests of the new version", '{ resource.service.version = "1.5.0" && name = '
          '"POST /payment" }'),
         ("the N+1 lookups", '{ resource.service.name = "payment-service" && span.db.statement '
          '=~ ".*pk_1.*" }'))),
    "memory_leak": _Story(
        "a feature flag turned on a cache of payment responses that never evicts: "
        "payment-service's resident memory grew with every payment until the OOM killer "
        "stopped it at the container's limit; it restarted (counters from zero, requests in "
        "flight lost, a scrape may have failed) and grew again until the flag was turned off.",
        ("metrics:process_resident_memory_bytes", "metrics:process_start_time_seconds",
         "metrics:up", "metrics:http_server_request_duration_seconds (counter reset)",
         "logs:uvicorn startup lines"),
        (("resident memory", RSS), ("process starts", STARTS), ("scrapes", UP),
         ("counter resets", RESETS)),
        (("restarts", '{service_name="payment-service"} |= "Application startup complete"'),),
        (("POST /payment requests", TRACEQL_POST + " }"),)),
    "disk_full": _Story(
        "the database volume filled up: every INSERT into payments failed with 'could not "
        "extend file ... No space left on device', so POST /payment answered 500 "
        "(sqlalchemy.exc.OperationalError) while GET /payments/{id} still succeeded and the "
        "database stopped growing, until space was freed.",
        ("metrics:pg_database_size_bytes", "metrics:pg_stat_database_tup_inserted",
         "metrics:pg_stat_database_xact_rollback",
         "metrics:http_server_request_duration_seconds (5xx on POST only)",
         "logs:postgresql could not extend file", "logs:payment-service DiskFull",
         "traces:INSERT payments spans with error"),
        (("growth of the database", DB_SIZE), ("rows inserted", INSERTED),
         ("5xx by route", ERRORS_BY_ROUTE), ("5xx ratio", ERROR_RATIO)),
        (("the volume is full", '{service_name="postgres"} |= "No space left on device"'),
         ("the service's errors", '{service_name="payment-service"} | severity_text="ERROR" '
          '|= "DiskFull"')),
        (("failed inserts", '{ resource.service.name = "payment-service" && name = '
          '"INSERT payments" && status = error }'),)),
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


HERRING_SIGNS = {
    "deploy": "a restart onto a new service.version (target_info, process_start_time_seconds, "
              "a new service.instance.id stream and uvicorn startup records) that changes "
              "nothing",
    "scrape_gap": "up{job=\"postgres\"} = 0 and no pg_* samples for a while",
    "report_run": "one more sequential scan of payments by the reporting job",
}


def _dedupe(pairs: list) -> tuple:
    seen, out = set(), []
    for p in pairs:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return tuple(out)


def build_truth(scenario: Scenario, plan: PhasePlan | None, duration_ms: int,
                traffic: Traffic, ids: TraceIds, sample_ratio: float = 1.0,
                faults: tuple = (), herrings: tuple = ()) -> GroundTruth:
    """``faults``: (kind, realized plan) of every fault, the primary one first;
    ``herrings``: (RedHerring, realized start as a fraction)."""
    truth = _single_truth(scenario, plan, duration_ms, traffic, ids, sample_ratio)
    if len(faults) < 2 and not herrings:
        return truth
    listed = []
    extra = {f.kind: f for f in scenario.also}
    for i, (kind, p) in enumerate(faults):
        story = STORIES[kind]
        if i == 0 and scenario.fault != "none":
            who = (scenario.root_cause_component, scenario.root_cause_kind,
                   tuple(sorted(scenario.root_cause_identity.items())))
        else:
            f = extra[kind]
            who = (f.component, f.root_cause_kind, tuple(sorted(f.identity.items())))
        listed.append(FaultTruth(kind, *who, i == 0 and scenario.fault != "none",
                                 phases(p, duration_ms), story.summary, story.promql,
                                 story.logql, story.traceql))
    red = tuple(RedHerringTruth(h.kind, int(round(at * duration_ms)), int(round(
        at * duration_ms + (h.length_s if h.kind == "scrape_gap" else 1.2 if h.kind ==
                            "report_run" else 6.0) * 1000)), HERRING_SIGNS[h.kind])
        for h, at in herrings)
    if len(listed) < 2:
        return replace(truth, faults=tuple(listed), red_herrings=red)
    others = listed[1:]
    return replace(
        truth, summary=truth.summary + " At the same time: " + " ".join(
            f"{f.component} ({f.kind}): {f.summary}" for f in others),
        affected_signals=_dedupe(list(truth.affected_signals) + [
            a for f in others for a in STORIES[f.kind].affected]),
        promql=_dedupe(list(truth.promql) + [q for f in others for q in f.promql]),
        logql=_dedupe(list(truth.logql) + [q for f in others for q in f.logql]),
        traceql=_dedupe(list(truth.traceql) + [q for f in others for q in f.traceql]),
        faults=tuple(listed), red_herrings=red)


def _single_truth(scenario: Scenario, plan: PhasePlan | None, duration_ms: int,
                  traffic: Traffic, ids: TraceIds, sample_ratio: float) -> GroundTruth:
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
    if scenario.fault in ("too_many_clients", "disk_full"):
        mask &= traffic.error[rows] == (ERR_CONNECT if scenario.fault == "too_many_clients"
                                        else ERR_DISK_FULL)
    if scenario.fault == "deploy_regression":
        mask &= np.diff(traffic.nplus_offset)[rows] > 0
    chosen = pos[mask]
    latency = traffic.latency_s[rows[chosen]]
    order = np.lexsort((chosen, -latency)) if scenario.fault != "none" else np.arange(
        chosen.shape[0])
    return tuple(ids.hex_trace(int(i)) for i in chosen[order][:count])
