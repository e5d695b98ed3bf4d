"""Spans of the sampled requests: FastAPI server span, SQLAlchemy ``connect`` and statements.

Timings come straight from the simulated request (pool wait is the ``connect`` span, the
statements are the SQL spans), so a server span's duration is exactly the value its
exemplar carries and the bucket it falls in.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .card import CARD_PROCESSOR_IP, Upstream, card_server_spans
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
from .resource import INSTRUMENTATION_VERSION, RESOURCE, SCHEMA_URL, resource_of
from .simulate import (
    ERR_CONNECT,
    ERR_DISK_FULL,
    ERR_GATEWAY,
    ERR_POOL_TIMEOUT,
    ERR_STATEMENT_TIMEOUT,
    GET_PAYMENT,
    POST_PAYMENT,
    ROUTES,
    Restart,
    TraceIds,
    Traffic,
)
from .texts import (
    INSERT_PAYMENT,
    SELECT_BY_ID,
    SELECT_BY_KEY,
    SELECT_BY_PK,
    SELECT_RECEIPT,
    connect_stacktrace,
    stacktrace,
)

SPAN_FLAGS_HAS_IS_REMOTE = 0x100
FRAUD_SCOPE, FRAUD_SPAN = "payment_service.routes", "fraud check"  # as live_app names them
CARD_ATTRS: Attributes = (("http.request.method", "POST"),
                          ("network.peer.address", CARD_PROCESSOR_IP),
                          ("network.peer.port", 8080),
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
                failures: dict[int, tuple[str, str]],
                restarts: tuple[Restart, ...] = (),
                upstream: Upstream | None = None) -> tuple[SpanTable, ...]:
    """Column by column: a fully traced hour is a quarter of a million spans. Each process
    of the window exports under its own resource (a deploy changes the version)."""
    rows = np.flatnonzero(traffic.sampled)
    tables = [_server_spans(traffic, ids, clients, failures, rows),
              _card_spans(traffic, ids, rows),
              _db_spans(traffic, ids, failures, rows),
              _fraud_spans(traffic, ids, rows)]
    if restarts:
        tables = [_of_era(t, traffic, ids, rows, era, resource_of(restarts, era))
                  for era in range(len(restarts) + 1) for t in tables]
    if upstream is not None:  # another service: its own resource, no restarts of its own
        tables.append(card_server_spans(traffic, ids, rows, upstream))
    return tuple(t for t in tables if len(t))  # a scope that wrote nothing is not exported


def _of_era(table: SpanTable, traffic: Traffic, ids: TraceIds, rows: np.ndarray, era: int,
            resource: Attributes) -> SpanTable:
    """The spans of ``table`` whose request the ``era``-th process served."""
    if len(table) == 0:
        return table
    # which sampled request each span belongs to: by its trace ID
    keys = ids.trace_id.view(np.dtype((np.void, 16))).reshape(-1)
    order = np.argsort(keys)
    mine = table.trace_id.view(np.dtype((np.void, 16))).reshape(-1)
    req = rows[order[np.searchsorted(keys[order], mine)]]
    k = np.flatnonzero(traffic.era[req] == era)
    pick = [int(i) for i in k.tolist()]
    return replace(
        table, resource=resource,
        **{f: getattr(table, f)[k] for f in ("trace_id", "span_id", "parent_span_id",
                                              "start_ns", "end_ns", "kind", "status_code")},
        name=tuple(table.name[i] for i in pick),
        status_message=tuple(table.status_message[i] for i in pick),
        attributes=tuple(table.attributes[i] for i in pick),
        events=tuple(table.events[i] for i in pick),
        flags=None if table.flags is None else table.flags[k])


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


def _n_plus_one_spans(traffic: Traffic, ids: TraceIds, k: np.ndarray, r: np.ndarray) -> tuple:
    """deploy_regression's lookups by primary key, one span each, between the SELECT and
    the INSERT. Their span IDs are derived from the SELECT's (the ID stream draws a fixed
    set per request)."""
    off = traffic.nplus_offset
    count = (off[r + 1] - off[r]).astype(np.int64)
    total = int(count.sum())
    owner = np.repeat(np.arange(r.shape[0]), count)
    flat = (np.repeat(off[r], count) + np.arange(total)
            - np.repeat(np.cumsum(count) - count, count)).astype(np.int64)
    step = (traffic.nplus_gap_s[flat].astype(np.float64) + traffic.nplus_s[flat]) * 1e9
    before = np.cumsum(step) - np.repeat(np.cumsum(np.bincount(owner, weights=step,
                                                               minlength=r.shape[0]))
                                          - np.bincount(owner, weights=step,
                                                        minlength=r.shape[0]), count) - step
    start = (traffic.select_end_ns[r][owner] + np.rint(
        before + traffic.nplus_gap_s[flat] * 1e9)).astype(np.int64)
    end = start + np.rint(traffic.nplus_s[flat].astype(np.float64) * 1e9).astype(np.int64)
    j = np.arange(total) - np.repeat(np.cumsum(count) - count, count) + 1
    base = ids.select[k][owner].copy().view(np.uint64).reshape(-1)
    sid = (base + j.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)).view(np.uint8)
    sid = sid.reshape(total, 8).copy()
    sid[~sid.any(axis=1), 7] = 1
    attrs = tuple(sorted((*DB_ATTRS, ("db.operation", "SELECT payments"),
                          ("db.statement", SELECT_BY_PK))))
    return (k[owner], sid, start, end, np.zeros(total, bool), ["SELECT payments"] * total,
            [""] * total, [attrs] * total, [()] * total)


def failed_at(traffic: Traffic, r: int) -> int:
    """When the request's exception was raised: the end of the step that failed."""
    err = int(traffic.error[r])
    if err == ERR_GATEWAY:
        return int(traffic.call_end_ns[r])
    if err in (ERR_POOL_TIMEOUT, ERR_CONNECT):
        return int(traffic.connect_end_ns[r])
    if err == ERR_DISK_FULL:
        return int(traffic.insert_end_ns[r])
    return int(traffic.select_end_ns[r])


def _db_spans(traffic: Traffic, ids: TraceIds, failures: dict[int, tuple[str, str]],
              rows: np.ndarray) -> SpanTable:
    """`connect`, `SELECT payments`, `INSERT payments` (and a leaking path's receipt
    `SELECT payments`), kept together by trace."""
    k = np.flatnonzero(traffic.used_db[rows])
    r = rows[k]
    err = traffic.error[r]
    pool_to, stmt_to = err == ERR_POOL_TIMEOUT, err == ERR_STATEMENT_TIMEOUT
    refused, disk_full = err == ERR_CONNECT, err == ERR_DISK_FULL
    sel = np.flatnonzero(~pool_to & ~refused)
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
    ref_type, ref_message = failures[ERR_CONNECT]
    failed = {ERR_POOL_TIMEOUT: (f"TimeoutError: {message}", exception_event(
        0, exc_type, message, connect_stacktrace(exc_type, message)).attributes),
        ERR_CONNECT: (f"OperationalError: {ref_message}", exception_event(
            0, ref_type, ref_message, connect_stacktrace(ref_type, ref_message,
                                                         refused=True)).attributes)}
    connect_events = [(SpanEvent("exception", int(t), failed[e][1]),) if e in failed else ()
                      for t, e in zip(traffic.connect_end_ns[r].tolist(), err.tolist())]
    stmt_message = failures[ERR_STATEMENT_TIMEOUT][1]
    disk_message = failures[ERR_DISK_FULL][1]
    parts: list[tuple] = [  # (request, span ids, start, end, error, name, message, attrs,
        # events)
        (k, ids.connect[k], traffic.connect_start_ns[r], traffic.connect_end_ns[r],
         pool_to | refused, ["connect"] * k.shape[0],
         [failed[e][0] if e in failed else "" for e in err.tolist()],
         [DB_ATTRS] * k.shape[0], connect_events),
        (k[sel], ids.select[k[sel]], traffic.select_start_ns[r[sel]],
         traffic.select_end_ns[r[sel]], stmt_to[sel], ["SELECT payments"] * sel.shape[0],
         [stmt_message if to else "" for to in stmt_to[sel].tolist()],
         [select_attrs[rt] for rt in traffic.route[r[sel]].tolist()], [()] * sel.shape[0]),
        (k[ins], ids.insert[k[ins]], traffic.insert_start_ns[r[ins]],
         traffic.insert_end_ns[r[ins]], disk_full[ins],
         ["INSERT payments"] * ins.shape[0],
         [disk_message if f else "" for f in disk_full[ins].tolist()],
         [insert_attrs] * ins.shape[0], [()] * ins.shape[0]),
        _n_plus_one_spans(traffic, ids, k, r),
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
