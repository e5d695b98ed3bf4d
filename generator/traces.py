"""Spans of the sampled requests: FastAPI server span, SQLAlchemy ``connect`` and statements.

Timings come straight from the simulated request (pool wait is the ``connect`` span, the
statements are the SQL spans), so a server span's duration is exactly the value its
exemplar carries and the bucket it falls in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import (
    SPAN_KIND_CLIENT,
    SPAN_KIND_SERVER,
    STATUS_ERROR,
    STATUS_UNSET,
    Attributes,
    SpanEvent,
    SpanTable,
    frozen_array,
)
from .resource import INSTRUMENTATION_VERSION, RESOURCE
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
from .texts import INSERT_PAYMENT, SELECT_BY_ID, SELECT_BY_KEY, connect_stacktrace, stacktrace

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


def url_path(route: int, payment_id: int) -> str:
    return f"/payments/{payment_id}" if route == GET_PAYMENT else ROUTES[route][1]


class _Rows:
    def __init__(self) -> None:
        self.cols: dict[str, list] = {k: [] for k in (
            "trace", "span", "parent", "start", "end", "kind", "code", "name", "message",
            "attrs", "events")}

    def add(self, trace: np.ndarray, span: np.ndarray, parent: np.ndarray | None, start: int,
            end: int, kind: int, name: str, attrs: Attributes, error: bool = False,
            events: tuple[SpanEvent, ...] = (), message: str = "") -> None:
        c = self.cols
        c["trace"].append(trace)
        c["span"].append(span)
        c["parent"].append(parent if parent is not None else np.zeros(8, np.uint8))
        c["start"].append(start)
        c["end"].append(end)
        c["kind"].append(kind)
        c["code"].append(STATUS_ERROR if error else STATUS_UNSET)
        c["name"].append(name)
        c["message"].append(message)
        c["attrs"].append(attrs)
        c["events"].append(events)

    def table(self, scope: str) -> SpanTable:
        c = self.cols
        n = len(c["start"])
        return SpanTable(
            resource=RESOURCE, scope_name=scope, scope_version=INSTRUMENTATION_VERSION,
            trace_id=frozen_array(np.array(c["trace"]).reshape(n, 16), np.uint8),
            span_id=frozen_array(np.array(c["span"]).reshape(n, 8), np.uint8),
            parent_span_id=frozen_array(np.array(c["parent"]).reshape(n, 8), np.uint8),
            start_ns=frozen_array(c["start"], np.int64), end_ns=frozen_array(c["end"], np.int64),
            kind=frozen_array(c["kind"], np.int8), status_code=frozen_array(c["code"], np.int8),
            name=tuple(c["name"]), status_message=tuple(c["message"]),
            attributes=tuple(c["attrs"]), events=tuple(c["events"]),
        )


def exception_event(t_ns: int, exc_type: str, message: str, trace: str) -> SpanEvent:
    return SpanEvent("exception", t_ns, (
        ("exception.escaped", "False"), ("exception.message", message),
        ("exception.stacktrace", trace), ("exception.type", exc_type)))


def build_spans(traffic: Traffic, ids: TraceIds, clients: Clients,
                failures: dict[int, tuple[str, str]]) -> tuple[SpanTable, ...]:
    server, sql, card = _Rows(), _Rows(), _Rows()
    rows = np.flatnonzero(traffic.sampled)
    used_db = traffic.used_db[rows].tolist()
    called = traffic.called_card[rows].tolist()
    cols = zip(rows.tolist(), *(a[rows].tolist() for a in (
        traffic.route, traffic.status, traffic.error, traffic.start_ns, traffic.end_ns,
        traffic.payment_id, traffic.call_start_ns, traffic.call_end_ns)))
    card_attrs = {failed: tuple(sorted((*CARD_ATTRS, ("http.response.status_code",
                                                        503 if failed else 201))
                                       + ((("error.type", "503"),) if failed else ())))
                  for failed in (False, True)}
    ports = clients.port[rows].tolist()
    for i, (r, route, status, err, start, end, pid, c_start, c_end) in enumerate(cols):
        tid = ids.trace_id[i]
        method, http_route = ROUTES[route]
        attrs: list[tuple[str, str | int]] = [
            ("client.address", clients.address[r]), ("client.port", ports[i]),
            ("http.request.method", method),
            ("http.response.status_code", status), ("http.route", http_route),
            ("network.protocol.version", "1.1"), ("server.address", "payment-service"),
            ("server.port", 8000), ("url.path", url_path(route, pid)),
            ("url.scheme", "http"), ("user_agent.original", clients.user_agent[r])]
        events: tuple[SpanEvent, ...] = ()
        if status >= 500:
            attrs.insert(0, ("error.type", str(status)))
            exc_type, message = failures[err]
            events = (exception_event(failed_at(traffic, r), exc_type, message,
                                      stacktrace(err, route, exc_type, message)),)
        # the instrumentation marks a 5xx server span ERROR without a description
        server.add(tid, ids.server[i], None, start, end, SPAN_KIND_SERVER,
                   f"{method} {http_route}", tuple(attrs), status >= 500, events)
        if called[i]:
            failed = err == ERR_GATEWAY
            card.add(tid, ids.card[i], ids.server[i], c_start, c_end, SPAN_KIND_CLIENT, "POST",
                     card_attrs[failed], failed)
        if used_db[i]:
            _db_spans(sql, traffic, ids, i, r, failures)
    return (server.table("opentelemetry.instrumentation.fastapi"),
            card.table("opentelemetry.instrumentation.httpx"),
            sql.table("opentelemetry.instrumentation.sqlalchemy"))


def failed_at(traffic: Traffic, r: int) -> int:
    """When the request's exception was raised: the end of the step that failed."""
    err = int(traffic.error[r])
    if err == ERR_GATEWAY:
        return int(traffic.call_end_ns[r])
    if err == ERR_POOL_TIMEOUT:
        return int(traffic.connect_end_ns[r])
    return int(traffic.select_end_ns[r])


def _db_spans(sql: _Rows, traffic: Traffic, ids: TraceIds, i: int, r: int,
              failures: dict[int, tuple[str, str]]) -> None:
    route, err = int(traffic.route[r]), int(traffic.error[r])
    tid, parent = ids.trace_id[i], ids.server[i]
    c_start, c_end = int(traffic.connect_start_ns[r]), int(traffic.connect_end_ns[r])
    if err == ERR_POOL_TIMEOUT:
        exc_type, message = failures[err]
        sql.add(tid, ids.connect[i], parent, c_start, c_end, SPAN_KIND_CLIENT, "connect",
                DB_ATTRS, True, (exception_event(c_end, exc_type, message,
                                                 connect_stacktrace(exc_type, message)),),
                f"{exc_type.rsplit('.', 1)[-1]}: {message}")
        return
    sql.add(tid, ids.connect[i], parent, c_start, c_end, SPAN_KIND_CLIENT, "connect", DB_ATTRS)
    statement = SELECT_BY_KEY if route == POST_PAYMENT else SELECT_BY_ID
    timed_out = err == ERR_STATEMENT_TIMEOUT
    sql.add(tid, ids.select[i], parent, int(traffic.select_start_ns[r]),
            int(traffic.select_end_ns[r]), SPAN_KIND_CLIENT, "SELECT payments",
            tuple(sorted((*DB_ATTRS, ("db.operation", "SELECT payments"),
                          ("db.statement", statement)))), timed_out, (),
            failures[err][1] if timed_out else "")
    if traffic.insert_end_ns[r] > traffic.insert_start_ns[r]:
        sql.add(tid, ids.insert[i], parent, int(traffic.insert_start_ns[r]),
                int(traffic.insert_end_ns[r]), SPAN_KIND_CLIENT, "INSERT payments",
                tuple(sorted((*DB_ATTRS, ("db.operation", "INSERT payments"),
                              ("db.statement", INSERT_PAYMENT)))))
