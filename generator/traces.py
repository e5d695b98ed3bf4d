"""Spans of the sampled requests: FastAPI server span, SQLAlchemy ``connect`` and statements.

Timings come straight from the simulated request (pool wait is the ``connect`` span, the
statements are the SQL spans), so a server span's duration is exactly the value its
exemplar carries and the bucket it falls in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .model import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_INTERNAL,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    STATUS_UNSET,
    Attributes,
    SpanEvent,
    SpanTable,
    frozen_array,
)
from .resource import INSTRUMENTATION_VERSION, RESOURCE, SCHEMA_URL
from .simulate import (
    ERR_GATEWAY,
    ERR_POOL_TIMEOUT,
    ERR_STATEMENT_TIMEOUT,
    GET_PAYMENT,
    POST_PAYMENT,
    ROUTES,
    TraceIds,
    Traffic,
)
from .texts import (
    INSERT_PAYMENT,
    SELECT_BY_ID,
    SELECT_BY_KEY,
    SELECT_RECEIPT,
    connect_stacktrace,
    stacktrace,
)

SPAN_FLAGS_HAS_IS_REMOTE = 0x100
FRAUD_SCOPE, FRAUD_SPAN = "payment_service.routes", "fraud check"  # as live_app names them
CARD_ATTRS: Attributes = (("http.request.method", "POST"),
                          ("network.protocol.version", "1.1"),
                          ("server.address", "card-processor"), ("server.port", 8080),
                          ("url.full", "http://card-processor:8080/v1/charges"))
# as opentelemetry-instrumentation-sqlalchemy writes them with the stable HTTP conventions
# opted in (server.* from the connection URL; db.operation on statements)
DB_ATTRS: Attributes = (("db.name", "payments"), ("db.system", "postgresql"),
                        ("db.user", "payments"), ("server.address", "postgres"),
                        ("server.port", 5432))


@dataclass(frozen=True)
class Clients:
    """Who sent each request (shared by access logs and server spans)."""

    address: tuple[str, ...]
    port: np.ndarray
    user_agent: tuple[str, ...]


def _table(scope: str, trace_id: np.ndarray, span_id: np.ndarray, parent: np.ndarray,
           start: np.ndarray, end: np.ndarray, kind: int, error: np.ndarray,
           name: list[str], message: list[str], attrs: list[Attributes],
           events: list[tuple[SpanEvent, ...]]) -> SpanTable:
    n = start.shape[0]
    return SpanTable(
        resource=RESOURCE, scope_name=scope, scope_version=INSTRUMENTATION_VERSION,
        trace_id=frozen_array(trace_id.reshape(n, 16), np.uint8),
        span_id=frozen_array(span_id.reshape(n, 8), np.uint8),
        parent_span_id=frozen_array(parent.reshape(n, 8), np.uint8),
        start_ns=frozen_array(start, np.int64), end_ns=frozen_array(end, np.int64),
        kind=frozen_array(np.full(n, kind), np.int8),
        status_code=frozen_array(np.where(error, STATUS_ERROR, STATUS_UNSET), np.int8),
        name=tuple(name), status_message=tuple(message), attributes=tuple(attrs),
        events=tuple(events), scope_schema_url=SCHEMA_URL,
        # what the Python SDK's exporter writes: the parent's remoteness is known (local)
        flags=frozen_array(np.full(n, SPAN_FLAGS_HAS_IS_REMOTE), np.uint32))


def exception_event(t_ns: int, exc_type: str, message: str, trace: str) -> SpanEvent:
    return SpanEvent("exception", t_ns, (
        ("exception.escaped", "False"), ("exception.message", message),
        ("exception.stacktrace", trace), ("exception.type", exc_type)))


def build_spans(traffic: Traffic, ids: TraceIds, clients: Clients,
                failures: dict[int, tuple[str, str]]) -> tuple[SpanTable, ...]:
    """Column by column: a fully traced hour is a quarter of a million spans."""
    rows = np.flatnonzero(traffic.sampled)
    tables = (_server_spans(traffic, ids, clients, failures, rows),
              _card_spans(traffic, ids, rows),
              _db_spans(traffic, ids, failures, rows),
              _fraud_spans(traffic, ids, rows))
    return tuple(t for t in tables if len(t))  # a scope that wrote nothing is not exported


def _fraud_spans(traffic: Traffic, ids: TraceIds, rows: np.ndarray) -> SpanTable:
    """The fraud check pool_exhaustion's deploy put inside the transaction: live_app wraps
    it in a span of its own (tracer ``payment_service.routes``), so its seconds are
    accounted for."""
    k = np.flatnonzero(traffic.fraud_end_ns[rows] > traffic.fraud_start_ns[rows])
    r = rows[k]
    table = _table(FRAUD_SCOPE, ids.trace_id[k], ids.fraud[k], ids.server[k],
                   traffic.fraud_start_ns[r], traffic.fraud_end_ns[r], SPAN_KIND_INTERNAL,
                   np.zeros(k.shape[0], bool), [FRAUD_SPAN] * k.shape[0], [""] * k.shape[0],
                   [()] * k.shape[0], [()] * k.shape[0])
    return replace(table, scope_version="", scope_schema_url="")


def _server_spans(traffic: Traffic, ids: TraceIds, clients: Clients,
                  failures: dict[int, tuple[str, str]], rows: np.ndarray) -> SpanTable:
    route, status = traffic.route[rows], traffic.status[rows]
    names = [f"{m} {r}" for m, r in ROUTES]
    # pairs that take a handful of values are made once and shared by every span
    method = [("http.request.method", m) for m, _ in ROUTES]
    http_route = [("http.route", r) for _, r in ROUTES]
    fixed_path = [("url.path", r) for _, r in ROUTES]
    codes = {st: ("http.response.status_code", st) for st in set(status.tolist())}
    error = {st: ("error.type", str(st)) for st in codes}
    address = {a: ("client.address", a) for a in set(clients.address)}
    agent = {a: ("user_agent.original", a) for a in set(clients.user_agent)}
    proto, s_addr, s_port = (("network.protocol.version", "1.1"),
                             ("server.address", "payment-service"), ("server.port", 8000))
    scheme = ("url.scheme", "http")
    attrs: list[Attributes] = []
    for r, rt, st, port, pid in zip(rows.tolist(), route.tolist(), status.tolist(),
                                    clients.port[rows].tolist(),
                                    traffic.payment_id[rows].tolist()):
        path = ("url.path", f"/payments/{pid}") if rt == GET_PAYMENT else fixed_path[rt]
        one = (address[clients.address[r]], ("client.port", port), method[rt], codes[st],
               http_route[rt], proto, s_addr, s_port, path, scheme,
               agent[clients.user_agent[r]])
        attrs.append((error[st], *one) if st >= 500 else one)
    events: list[tuple[SpanEvent, ...]] = [()] * rows.shape[0]
    for i in np.flatnonzero(status >= 500).tolist():
        r = int(rows[i])
        err, rt = int(traffic.error[r]), int(route[i])
        exc_type, message = failures[err]
        events[i] = (exception_event(failed_at(traffic, r), exc_type, message,
                                     stacktrace(err, rt, exc_type, message)),)
    # the instrumentation marks a 5xx server span ERROR without a description
    return _table("opentelemetry.instrumentation.fastapi", ids.trace_id, ids.server,
                  np.zeros((rows.shape[0], 8), np.uint8), traffic.start_ns[rows],
                  traffic.end_ns[rows], SPAN_KIND_SERVER, status >= 500,
                  [names[rt] for rt in route.tolist()], [""] * rows.shape[0], attrs, events)


def _card_spans(traffic: Traffic, ids: TraceIds, rows: np.ndarray) -> SpanTable:
    k = np.flatnonzero(traffic.called_card[rows])
    r = rows[k]
    failed = traffic.error[r] == ERR_GATEWAY
    attrs = {f: tuple(sorted((*CARD_ATTRS, ("http.response.status_code", 503 if f else 201))
                             + ((("error.type", "503"),) if f else ()))) for f in (False, True)}
    return _table("opentelemetry.instrumentation.httpx", ids.trace_id[k], ids.card[k],
                  ids.server[k], traffic.call_start_ns[r], traffic.call_end_ns[r],
                  SPAN_KIND_CLIENT, failed, ["POST"] * k.shape[0], [""] * k.shape[0],
                  [attrs[f] for f in failed.tolist()], [()] * k.shape[0])


def failed_at(traffic: Traffic, r: int) -> int:
    """When the request's exception was raised: the end of the step that failed."""
    err = int(traffic.error[r])
    if err == ERR_GATEWAY:
        return int(traffic.call_end_ns[r])
    if err == ERR_POOL_TIMEOUT:
        return int(traffic.connect_end_ns[r])
    return int(traffic.select_end_ns[r])


def _db_spans(traffic: Traffic, ids: TraceIds, failures: dict[int, tuple[str, str]],
              rows: np.ndarray) -> SpanTable:
    """`connect`, `SELECT payments`, `INSERT payments` (and a leaking path's receipt
    `SELECT payments`), kept together by trace."""
    k = np.flatnonzero(traffic.used_db[rows])
    r = rows[k]
    err = traffic.error[r]
    pool_to, stmt_to = err == ERR_POOL_TIMEOUT, err == ERR_STATEMENT_TIMEOUT
    sel = np.flatnonzero(~pool_to)
    ins = np.flatnonzero(traffic.insert_end_ns[r] > traffic.insert_start_ns[r])
    select_attrs = {rt: tuple(sorted((*DB_ATTRS, ("db.operation", "SELECT payments"),
                                      ("db.statement", st))))
                    for rt, st in ((POST_PAYMENT, SELECT_BY_KEY), (GET_PAYMENT, SELECT_BY_ID))}
    insert_attrs = tuple(sorted((*DB_ATTRS, ("db.operation", "INSERT payments"),
                                 ("db.statement", INSERT_PAYMENT))))
    rec = np.flatnonzero(traffic.receipt_end_ns[r] > traffic.receipt_start_ns[r])
    receipt_attrs = tuple(sorted((*DB_ATTRS, ("db.operation", "SELECT payments"),
                                  ("db.statement", SELECT_RECEIPT))))
    exc_type, message = failures[ERR_POOL_TIMEOUT]
    timeout_event = (exception_event(0, exc_type, message,
                                     connect_stacktrace(exc_type, message)),)
    connect_events = [(SpanEvent("exception", int(t), timeout_event[0].attributes),)
                      if to else () for t, to in zip(traffic.connect_end_ns[r].tolist(),
                                                      pool_to.tolist())]
    stmt_message = failures[ERR_STATEMENT_TIMEOUT][1]
    parts: list[tuple] = [  # (request, span ids, start, end, error, name, message, attrs,
        # events)
        (k, ids.connect[k], traffic.connect_start_ns[r], traffic.connect_end_ns[r], pool_to,
         ["connect"] * k.shape[0],
         [f"TimeoutError: {message}" if to else "" for to in pool_to.tolist()],
         [DB_ATTRS] * k.shape[0], connect_events),
        (k[sel], ids.select[k[sel]], traffic.select_start_ns[r[sel]],
         traffic.select_end_ns[r[sel]], stmt_to[sel], ["SELECT payments"] * sel.shape[0],
         [stmt_message if to else "" for to in stmt_to[sel].tolist()],
         [select_attrs[rt] for rt in traffic.route[r[sel]].tolist()], [()] * sel.shape[0]),
        (k[ins], ids.insert[k[ins]], traffic.insert_start_ns[r[ins]],
         traffic.insert_end_ns[r[ins]], np.zeros(ins.shape[0], bool),
         ["INSERT payments"] * ins.shape[0], [""] * ins.shape[0],
         [insert_attrs] * ins.shape[0], [()] * ins.shape[0]),
        (k[rec], ids.receipt[k[rec]], traffic.receipt_start_ns[r[rec]],
         traffic.receipt_end_ns[r[rec]], np.zeros(rec.shape[0], bool),
         ["SELECT payments"] * rec.shape[0], [""] * rec.shape[0],
         [receipt_attrs] * rec.shape[0], [()] * rec.shape[0]),
    ]
    which = np.concatenate([p[0] for p in parts])
    order = np.lexsort((np.concatenate([p[2] for p in parts]), which))

    def cat(j: int) -> np.ndarray:
        return np.concatenate([p[j] for p in parts])[order]

    def cat_list(j: int) -> list:
        joined = [x for p in parts for x in p[j]]
        return [joined[o] for o in order.tolist()]

    return _table("opentelemetry.instrumentation.sqlalchemy", ids.trace_id[which[order]],
                  cat(1), ids.server[which[order]], cat(2), cat(3), SPAN_KIND_CLIENT, cat(4),
                  cat_list(5), cat_list(6), cat_list(7), cat_list(8))
