"""Log streams: uvicorn access lines, payment-service errors, PostgreSQL server lines.

Every request prints one access line; every 5xx prints one ERROR line (so the 5xx
counter's increase equals the error lines); trace and span IDs are attached only to
requests whose trace was kept, so every ``trace_id`` in the logs names a real span.
"""

from __future__ import annotations

import numpy as np

from .model import LogStream, frozen_array, make_labels
from .simulate import (
    ERR_STATEMENT_TIMEOUT,
    GET_PAYMENT,
    HEALTH,
    NS_PER_MS,
    POST_PAYMENT,
    ROUTES,
    TraceIds,
    Traffic,
)
from .texts import HTTP_REASONS, LOG_SOURCE, PG_SELECT_BY_ID, PG_SELECT_BY_KEY
from .traces import Clients, failed_at

INGRESS = ("10.0.3.7", "10.0.3.12", "10.0.4.21", "10.0.5.3")
AGENTS = ("checkout-web/2.3.1", "python-httpx/0.27.2", "okhttp/4.12.0")
PROBE = ("10.0.0.1", "kube-probe/1.29")
PG_BACKEND_PIDS = 15


def make_clients(traffic: Traffic, rng: np.random.Generator) -> Clients:
    n = len(traffic)
    ip = rng.integers(0, len(INGRESS), n)
    agent = rng.integers(0, len(AGENTS), n)
    port = rng.integers(32768, 61000, n)
    health = traffic.route == HEALTH
    address = tuple(PROBE[0] if h else INGRESS[i] for h, i in zip(health.tolist(), ip.tolist()))
    ua = tuple(PROBE[1] if h else AGENTS[a] for h, a in zip(health.tolist(), agent.tolist()))
    return Clients(address, frozen_array(port, np.int64), ua)


def _meta(trace: str, span: str) -> tuple[tuple[str, str], ...]:
    return (("span_id", span), ("trace_id", trace))


def build_logs(traffic: Traffic, ids: TraceIds, clients: Clients, knobs: dict[str, float],
               failures: dict[int, tuple[str, str]], rng: np.random.Generator,
               ) -> tuple[LogStream, ...]:
    row_of = np.full(len(traffic), -1, np.int64)
    row_of[traffic.sampled] = np.arange(int(np.count_nonzero(traffic.sampled)))
    hex_trace = [bytes(t).hex() for t in ids.trace_id]
    hex_span = [bytes(s).hex() for s in ids.server]

    by_end = np.argsort(traffic.end_ns, kind="stable")
    # the text of each (route, status) pair is fixed: only client and path vary per line
    heads = {(r, st): (ROUTES[r][0], f'HTTP/1.1" {st} {HTTP_REASONS[st]}')
             for r in range(len(ROUTES)) for st in HTTP_REASONS}
    routes, statuses = traffic.route[by_end].tolist(), traffic.status[by_end].tolist()
    pids, ports = traffic.payment_id[by_end].tolist(), clients.port[by_end].tolist()
    rows = row_of[by_end].tolist()
    address = clients.address
    access_lines, access_meta = [], []
    for r, route, status, pid, port, k in zip(by_end.tolist(), routes, statuses, pids, ports,
                                              rows):
        method, tail = heads[(route, status)]
        path = f"/payments/{pid}" if route == GET_PAYMENT else ROUTES[route][1]
        access_lines.append(f'INFO:     {address[r]}:{port} - "{method} {path} {tail}')
        access_meta.append((("span_id", hex_span[k]), ("trace_id", hex_trace[k]))
                           if k >= 0 else ())
    app = {"service_name": "payment-service"}
    streams = [LogStream(make_labels({**app, "level": "info"}),
                         frozen_array(traffic.end_ns[by_end], np.int64), tuple(access_lines),
                         tuple(access_meta), None)]

    errors = by_end[traffic.status[by_end] >= 500]
    err_lines, err_meta, err_t = [], [], []
    # the handler logs once it caught the exception: a little after it was raised
    logged_after = np.rint(1e5 * np.exp(0.5 * rng.standard_normal(errors.shape[0])))
    for k_err, r in enumerate(errors.tolist()):
        err_t.append(min(failed_at(traffic, r) + int(logged_after[k_err]),
                         int(traffic.end_ns[r])))
        k = int(row_of[r])
        exc_type, message = failures[int(traffic.error[r])]
        method, http_route = ROUTES[int(traffic.route[r])]
        err_lines.append(
            f"ERROR [payment_service.routes] [{LOG_SOURCE}] [trace_id={hex_trace[k]} "
            f"span_id={hex_span[k]} resource.service.name=payment-service trace_sampled=True] "
            f"- {method} {http_route} failed: {exc_type}: {message}")
        err_meta.append(_meta(hex_trace[k], hex_span[k]))
    streams.append(LogStream(make_labels({**app, "level": "error"}),
                             frozen_array(np.sort(np.array(err_t, np.int64)), np.int64),
                             tuple(err_lines[i] for i in np.argsort(err_t, kind="stable")),
                             tuple(err_meta[i] for i in np.argsort(err_t, kind="stable")),
                             "python"))
    streams.extend(_postgres_logs(traffic, knobs, rng))
    return tuple(s for s in streams if len(s) > 0)


def _postgres_logs(traffic: Traffic, knobs: dict[str, float],
                   rng: np.random.Generator) -> list[LogStream]:
    threshold_ns = knobs["log_min_duration_statement_ms"] * NS_PER_MS
    select_end = traffic.select_end_ns
    select_ns = traffic.select_ns
    ran = select_ns > 0
    slow = ran & (select_ns >= threshold_ns) & (traffic.error != ERR_STATEMENT_TIMEOUT)
    cancelled = ran & (traffic.error == ERR_STATEMENT_TIMEOUT)
    pids = 4700 + rng.permutation(400)[:PG_BACKEND_PIDS]
    pid = pids[rng.integers(0, PG_BACKEND_PIDS, len(traffic))]

    def statement(r: int) -> tuple[str, str]:
        if int(traffic.route[r]) == POST_PAYMENT:
            return PG_SELECT_BY_KEY, f"'pay-{int(traffic.payment_id[r]):06d}'"
        return PG_SELECT_BY_ID, f"'{int(traffic.payment_id[r])}'"

    info_t, info_lines = [], []
    for r in np.flatnonzero(slow).tolist():
        sql, param = statement(r)
        ms = select_ns[r] / NS_PER_MS
        info_t += [int(select_end[r]), int(select_end[r])]
        info_lines += [f"[{pid[r]}] LOG:  duration: {ms:.3f} ms  execute <unnamed>: {sql}",
                       f"[{pid[r]}] DETAIL:  parameters: $1 = {param}"]
    err_t, err_lines = [], []
    for r in np.flatnonzero(cancelled).tolist():
        sql, _ = statement(r)
        err_t += [int(select_end[r]), int(select_end[r])]
        err_lines += [f"[{pid[r]}] ERROR:  canceling statement due to statement timeout",
                      f"[{pid[r]}] STATEMENT:  {sql}"]
    pg = {"service_name": "postgres"}
    out = []
    for level, t, lines in (("info", info_t, info_lines), ("error", err_t, err_lines)):
        order = np.argsort(np.array(t, np.int64), kind="stable")
        out.append(LogStream(make_labels({**pg, "level": level}),
                             frozen_array(np.array(t, np.int64)[order], np.int64),
                             tuple(lines[i] for i in order), tuple(() for _ in order),
                             "postgres"))
    return out
