"""Log streams: payment-service's OTLP log records as Loki stores them, PostgreSQL's lines.

payment-service exports its log records over OTLP into Loki's OTLP endpoint (as the compose
stack wires live_app): uvicorn's access line for every request and one ERROR record for
every 5xx (so the 5xx counter's increase equals the error records). Loki turns a record
into one entry of the resource's stream: the promoted resource attributes are the stream
labels, the body is the line, and everything else (the rest of the resource, scope name,
severity, trace context, the record's attributes) is structured metadata with dots made
underscores. The field set here is what Loki 3.4 stored from live_app's records.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np

from .model import Attributes, LogStream, frozen_array, make_labels
from .resource import RESOURCE, resource_of
from .simulate import (
    ERR_CONNECT,
    ERR_DISK_FULL,
    ERR_STATEMENT_TIMEOUT,
    GET_PAYMENT,
    HEALTH,
    NS_PER_MS,
    NS_PER_S,
    POST_PAYMENT,
    ROUTES,
    Others,
    Restart,
    TraceIds,
    Traffic,
)
from .texts import (
    CREATE_LOOKUP_INDEX,
    HOLDER_SQL,
    LOCK_AT,
    MIGRATION_SQL,
    NO_SLOT,
    PAYMENTS_DBID,
    PAYMENTS_RELFILE,
    PAYMENTS_RELID,
    PG_INSERT_PAYMENT,
    PG_SELECT_BY_ID,
    PG_SELECT_BY_KEY,
    REPORT_SQL,
    stacktrace,
)
from .traces import Clients, failed_at

INGRESS = ("10.0.3.7", "10.0.3.12", "10.0.4.21", "10.0.5.3")
AGENTS = ("checkout-web/2.3.1", "python-httpx/0.27.2", "okhttp/4.12.0")
PROBE = ("10.0.0.1", "kube-probe/1.29")
SCRAPER = "10.0.1.15"  # Prometheus
PG_BACKEND_PIDS = 15

# Resource attributes Loki 3 makes stream labels by default (those payment-service has);
# infra/loki/loki.yaml names three of them again.
LOKI_INDEXED_RESOURCE = frozenset({
    "cloud.availability_zone", "cloud.region", "container.name", "deployment.environment",
    "deployment.environment.name", "k8s.cluster.name", "k8s.container.name",
    "k8s.cronjob.name", "k8s.daemonset.name", "k8s.deployment.name", "k8s.job.name",
    "k8s.namespace.name", "k8s.pod.name", "k8s.replicaset.name", "k8s.statefulset.name",
    "service.instance.id", "service.name", "service.namespace"})
# Structured metadata whose value is a time (ns since the epoch): shifted with the window.
TIME_VALUED_METADATA = frozenset({"observed_timestamp"})
TRACE_FLAGS = "3"  # sampled | random (W3C level 2), as the Python SDK writes a record's flags
SEVERITY = {"INFO": "9", "WARNING": "13", "ERROR": "17"}


def loki_name(key: str) -> str:
    """An OTLP attribute name as Loki's OTLP ingestion stores it."""
    return "".join(c if c.isalnum() or c == "_" else "_" for c in key)


def stream_labels(resource: Attributes) -> tuple[tuple[str, str], ...]:
    return make_labels({loki_name(k): str(v) for k, v in resource
                        if k in LOKI_INDEXED_RESOURCE})


def resource_metadata(resource: Attributes) -> tuple[tuple[str, str], ...]:
    return tuple((loki_name(k), str(v)) for k, v in resource if k not in LOKI_INDEXED_RESOURCE)


APP_LABELS = stream_labels(RESOURCE)
RESOURCE_METADATA = resource_metadata(RESOURCE)
SERVICE_NAME = str(dict(RESOURCE)["service.name"])
# what uvicorn logs (logger uvicorn.error, INFO) once the OTLP handler is attached in the
# lifespan startup: the lines before it ("Started server process", "Waiting for application
# startup.") and after the lifespan shutdown never reach Loki
STARTUP_LINES = ("Application startup complete.",
                 "Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)")
SHUTDOWN_LINES = ("Shutting down", "Waiting for application shutdown.")


def make_clients(traffic: Traffic, rng: np.random.Generator) -> Clients:
    n = len(traffic)
    ip = rng.integers(0, len(INGRESS), n)
    agent = rng.integers(0, len(AGENTS), n)
    port = rng.integers(32768, 61000, n)
    health = traffic.route == HEALTH
    address = tuple(PROBE[0] if h else INGRESS[i] for h, i in zip(health.tolist(), ip.tolist()))
    ua = tuple(PROBE[1] if h else AGENTS[a] for h, a in zip(health.tolist(), agent.tolist()))
    return Clients(address, frozen_array(port, np.int64), ua)


def record_metadata(scope: str, severity: str, observed_ns: int, trace: str | None,
                    span: str | None, attributes: tuple[tuple[str, str], ...] = (),
                    resource: tuple[tuple[str, str], ...] = RESOURCE_METADATA,
                    ) -> tuple[tuple[str, str], ...]:
    """The structured metadata Loki keeps for one record of payment-service (sorted).
    ``trace`` None: logged outside any span (LoggingInstrumentor then writes "0")."""
    pairs: list[tuple[str, str]] = [
        *resource, *attributes, ("observed_timestamp", str(observed_ns)),
             # LoggingInstrumentor's record fields, exported as attributes
             ("otelServiceName", SERVICE_NAME), ("otelSpanID", span or "0"),
             ("otelTraceID", trace or "0"),
             ("otelTraceSampled", "false" if trace is None else "true"), ("scope_name", scope),
             ("severity_number", SEVERITY[severity]), ("severity_text", severity)]
    if trace is not None and span is not None:
        pairs += [("flags", TRACE_FLAGS), ("span_id", span), ("trace_id", trace)]
    shape = (resource, tuple(k for k, _ in attributes) if attributes else (), len(pairs))
    order = _KEY_ORDER.get(shape)
    if order is None:
        if len({k for k, _ in pairs}) < len(pairs):  # a name twice: sorted by value too
            return tuple(sorted(pairs))
        order = _KEY_ORDER[shape] = operator.itemgetter(
            *sorted(range(len(pairs)), key=pairs.__getitem__))
    return order(pairs)  # type: ignore[no-any-return]


# A record's pairs in name order, by its shape (resource, attribute names, trace or not):
# the names of a shape are the same on every record, so the order is found once.
_KEY_ORDER: dict[tuple[object, ...], Callable[[list[tuple[str, str]]], tuple]] = {}


def _scrape_records(duration_ms: int, step_ms: int,
                    rng: np.random.Generator) -> list[tuple[int, str, tuple[tuple[str, str], ...]]]:
    """Prometheus scraping /metrics: an access line per scrape and no span (/metrics is
    excluded from tracing and from the HTTP metrics), over one kept-alive connection."""
    t = np.arange(0, duration_ms + 1, step_ms, dtype=np.int64) * NS_PER_MS
    render = np.rint(4e6 * np.exp(0.3 * rng.standard_normal(t.shape[0]))).astype(np.int64)
    observed = np.rint(2e5 * np.exp(0.35 * rng.standard_normal(t.shape[0]))).astype(np.int64)
    port = int(rng.integers(32768, 61000))
    line = f'{SCRAPER}:{port} - "GET /metrics HTTP/1.1" 200'
    return [(ti, line, record_metadata("uvicorn.access", "INFO", ti + oi, None, None))
            for ti, oi in zip((t + render).tolist(), observed.tolist())
            if ti <= duration_ms * NS_PER_MS]  # the scrape at the window's end answers after


def _request_ids(traffic: Traffic, ids: TraceIds,
                 rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Each request's trace and server span ID in hex: a kept trace's own, else drawn."""
    n = len(traffic)
    raw = rng.integers(0, 256, size=(n, 24), dtype=np.uint8)
    raw[~raw[:, :16].any(axis=1), 15] = 1
    raw[~raw[:, 16:].any(axis=1), 23] = 1
    kept = np.flatnonzero(traffic.sampled)
    raw[kept, :16] = ids.trace_id
    raw[kept, 16:] = ids.server
    flat = raw.tobytes().hex()
    return ([flat[48 * i:48 * i + 32] for i in range(n)],
            [flat[48 * i + 32:48 * i + 48] for i in range(n)])


def build_logs(traffic: Traffic, ids: TraceIds, clients: Clients, knobs: dict[str, float],
               failures: dict[int, tuple[str, str]], rng: np.random.Generator,
               window: tuple[int, int], restarts: tuple[Restart, ...] = (),
               others: Others | None = None) -> tuple[LogStream, ...]:
    """Every request's trace context is on its records, kept by tail sampling or not (the
    SDK knows the IDs before any sampling decision); with the default every trace is kept."""
    n = len(traffic)
    hex_trace, hex_span = _request_ids(traffic, ids, rng)

    # uvicorn logs the access line when the response starts; the server span ends after the
    # body went out. The SDK observes a record a little after it was created.
    before_end = np.rint(2.5e5 * np.exp(0.8 * rng.standard_normal(n))).astype(np.int64)
    access_t = np.maximum(traffic.end_ns - np.minimum(before_end, (traffic.end_ns -
                                                                    traffic.start_ns) // 3),
                          traffic.start_ns)
    observed_after = np.rint(2e5 * np.exp(0.35 * rng.standard_normal(n))).astype(np.int64)
    routes, statuses = traffic.route.tolist(), traffic.status.tolist()
    pids, ports = traffic.payment_id.tolist(), clients.port.tolist()
    address = clients.address
    eras = traffic.era.tolist()
    metas = [resource_metadata(resource_of(restarts, e)) for e in range(len(restarts) + 1)]
    entries: list[tuple[int, str, tuple[tuple[str, str], ...], int]] = []
    for r, (route, status, pid, port, t, obs) in enumerate(zip(
            routes, statuses, pids, ports, access_t.tolist(), observed_after.tolist())):
        method, path = ROUTES[route]
        if route == GET_PAYMENT:
            path = f"/payments/{pid}"
        entries.append((t, f'{address[r]}:{port} - "{method} {path} HTTP/1.1" {status}',
                        record_metadata("uvicorn.access", "INFO", t + obs, hex_trace[r],
                                        hex_span[r], (), metas[eras[r]]), eras[r]))

    errors = np.flatnonzero(traffic.status >= 500)
    # the handler logs once it caught the exception: a little after it was raised; the
    # record is observed after the traceback was formatted
    logged_after = np.rint(1e5 * np.exp(0.5 * rng.standard_normal(errors.shape[0])))
    formatted = np.rint(3e5 * np.exp(0.4 * rng.standard_normal(errors.shape[0])))
    for k, r in enumerate(errors.tolist()):
        t = min(failed_at(traffic, r) + int(logged_after[k]), int(access_t[r]) - 1)
        err = int(traffic.error[r])
        exc_type, message = failures[err]
        method, http_route = ROUTES[routes[r]]
        attrs = (("exception_message", message),
                 ("exception_stacktrace", stacktrace(err, routes[r], exc_type, message)),
                 ("exception_type", exc_type.rsplit(".", 1)[-1]))
        entries.append((t, f"{method} {http_route} failed: {exc_type}: {message}",
                        record_metadata("payment_service.routes", "ERROR",
                                        t + int(formatted[k]), hex_trace[r], hex_span[r],
                                        attrs, metas[eras[r]]), eras[r]))
    entries.extend(_era_of(_scrape_records(*window, rng), restarts, metas))
    entries.extend(_lifecycle_records(restarts, metas, rng))
    entries.sort(key=lambda e: e[0])
    era_labels = [stream_labels(resource_of(restarts, e)) for e in range(len(restarts) + 1)]
    by_stream: dict[tuple[tuple[str, str], ...], list] = {}
    for e in entries:
        by_stream.setdefault(era_labels[e[3]], []).append(e)
    streams = [LogStream(labels, frozen_array(np.array([e[0] for e in es], np.int64), np.int64),
                         tuple(e[1] for e in es), tuple(e[2] for e in es), None)
               for labels, es in sorted(by_stream.items())]
    streams.extend(_postgres_logs(traffic, knobs, rng, others))
    return tuple(s for s in streams if len(s) > 0)


def _era_of(records: list[tuple[int, str, tuple[tuple[str, str], ...]]],
            restarts: tuple[Restart, ...], metas: list) -> list:
    """Scrape records of the process that answered them (none while none did)."""
    out = []
    for t, line, meta in records:
        era = sum(t >= r.up_s * NS_PER_S for r in restarts)
        if any(r.stop_s * NS_PER_S <= t < r.up_s * NS_PER_S for r in restarts):
            continue
        if era:
            meta = tuple(sorted({**dict(meta), **dict(metas[era])}.items()))
        out.append((t, line, meta, era))
    return out


def _lifecycle_records(restarts: tuple[Restart, ...], metas: list,
                       rng: np.random.Generator) -> list:
    """uvicorn's shutdown (a graceful stop) and startup lines around each restart."""
    out = []
    for e, r in enumerate(restarts, start=1):
        if not r.killed:
            t = int(r.stop_s * NS_PER_S)
            for k, line in enumerate(SHUTDOWN_LINES):
                at = t + k * 400_000 + int(rng.integers(0, 300_000))
                out.append((at, line, record_metadata("uvicorn.error", "INFO", at + 150_000,
                                                      None, None, (), metas[e - 1]), e - 1))
        t = int(r.up_s * NS_PER_S) - 2_000_000
        for k, line in enumerate(STARTUP_LINES):
            at = t + k * 600_000 + int(rng.integers(0, 300_000))
            out.append((at, line, record_metadata("uvicorn.error", "INFO", at + 150_000, None,
                                                  None, (), metas[e]), e))
    return out


def _postgres_logs(traffic: Traffic, knobs: dict[str, float],
                   rng: np.random.Generator, others: Others | None = None) -> list[LogStream]:
    threshold_ns = knobs["log_min_duration_statement_ms"] * NS_PER_MS
    select_end = traffic.select_end_ns
    select_ns = traffic.select_ns
    ran = select_ns > 0
    slow = ran & (select_ns >= threshold_ns) & (traffic.error != ERR_STATEMENT_TIMEOUT)
    lock = others.lock if others is not None else None
    waited = np.zeros(ran.shape, bool)
    if lock is not None:
        lock_from, lock_until = int(lock[1] * NS_PER_S), int(lock[2] * NS_PER_S)
        waited = ran & (traffic.select_start_ns >= lock_from) & \
            (traffic.select_start_ns < lock_until)
    cancelled = ran & (traffic.error == ERR_STATEMENT_TIMEOUT)
    pids = 4700 + rng.permutation(400)[:PG_BACKEND_PIDS]
    pid = pids[rng.integers(0, PG_BACKEND_PIDS, len(traffic))]

    def statement(r: int) -> tuple[str, str]:
        if int(traffic.route[r]) == POST_PAYMENT:
            return PG_SELECT_BY_KEY, f"'pay-{int(traffic.payment_id[r]):06d}'"
        return PG_SELECT_BY_ID, f"'{int(traffic.payment_id[r])}'"

    info_t, info_lines = [], []
    for r in np.flatnonzero(slow & ~waited).tolist():
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
    for r in np.flatnonzero((traffic.error == ERR_DISK_FULL) & ran).tolist():
        t = int(traffic.insert_end_ns[r])
        err_t += [t, t, t]
        err_lines += [f'[{pid[r]}] ERROR:  could not extend file "{PAYMENTS_RELFILE}": No space '
                      "left on device", f"[{pid[r]}] HINT:  Check free disk space.",
                      f"[{pid[r]}] STATEMENT:  {PG_INSERT_PAYMENT}"]
    refused = np.flatnonzero(traffic.error == ERR_CONNECT)
    new_pids = 9000 + rng.permutation(20000)[:refused.shape[0]]
    for r, p in zip(refused.tolist(), new_pids.tolist()):  # a new backend each, refused
        err_t.append(int(traffic.connect_end_ns[r]) - 400_000)
        err_lines.append(f"[{p}] FATAL:  {NO_SLOT}")
    if lock is not None:
        _lock_lines(traffic, waited, pid, statement, lock, info_t, info_lines, rng)
    if others is not None and others.rebuild is not None:
        _rebuild_lines(traffic, others.rebuild, threshold_ns, pid, info_t, info_lines, rng)
    if others is not None and others.reports is not None:
        _report_lines(others.reports, info_t, info_lines, rng)
    pg = {"service_name": "postgres"}
    out: list[LogStream] = []
    for level, times, lines in (("info", info_t, info_lines), ("error", err_t, err_lines)):
        order = np.argsort(np.array(times, np.int64), kind="stable")
        out.append(LogStream(make_labels({**pg, "level": level}),
                             frozen_array(np.array(times, np.int64)[order], np.int64),
                             tuple(lines[i] for i in order), tuple(() for _ in order),
                             "postgres"))
    return out


def _lock_lines(traffic: Traffic, waited: np.ndarray, pid: np.ndarray, statement,
                lock: tuple[float, float, float], info_t: list, info_lines: list,
                rng: np.random.Generator) -> None:
    """log_lock_waits (deadlock_timeout 1 s): a statement that waited a second says so,
    and says when it got the lock; the slow-statement line of a statement that waited in
    parse is a parse line, without parameters (as PostgreSQL 15 wrote them)."""
    began, queued, ended = (int(x * NS_PER_S) for x in lock)
    holder, migration = (int(p) for p in 3100 + rng.permutation(1500)[:2])
    rel = f"relation {PAYMENTS_RELID} of database {PAYMENTS_DBID}"
    start = traffic.select_start_ns
    rows = np.flatnonzero(waited & (ended - start >= NS_PER_S))
    rows = rows[np.argsort(start[rows], kind="stable")]
    t_wait = queued + NS_PER_S + 200_000
    info_t += [t_wait, t_wait]
    info_lines += [f"[{migration}] LOG:  process {migration} still waiting for AccessExclusiveLock "
                   f"on {rel} after 1000.{int(rng.integers(150, 260)):03d} ms",
                   f"[{migration}] DETAIL:  Process holding the lock: {holder}. Wait queue: "
                   f"{migration}."]
    queue = [migration]
    for r in rows.tolist():
        p = int(pid[r])
        sql, _ = statement(r)
        at = LOCK_AT[int(traffic.route[r])]
        if p not in queue:
            queue.append(p)
        t = int(start[r]) + NS_PER_S + int(rng.integers(140_000, 270_000))
        info_t += [t, t, t]
        info_lines += [f"[{p}] LOG:  process {p} still waiting for AccessShareLock on {rel} "
                       f"after {(t - int(start[r])) / NS_PER_MS:.3f} ms at character {at}",
                       f"[{p}] DETAIL:  Process holding the lock: {migration}. Wait queue: "
                       f"{', '.join(str(q) for q in queue)}.",
                       f"[{p}] STATEMENT:  {sql}"]
        got = ended + int(rng.integers(300_000, 2_000_000))
        info_t += [got, got]
        info_lines += [f"[{p}] LOG:  process {p} acquired AccessShareLock on {rel} after "
                       f"{(got - int(start[r])) / NS_PER_MS:.3f} ms at character {at}",
                       f"[{p}] STATEMENT:  {sql}"]
    for r in np.flatnonzero(waited).tolist():
        if traffic.select_ns[r] >= 250 * NS_PER_MS:
            sql, _ = statement(r)
            t = int(traffic.select_end_ns[r])
            info_t.append(t)
            info_lines.append(f"[{int(pid[r])}] LOG:  duration: "
                              f"{traffic.select_ns[r] / NS_PER_MS:.3f} ms  parse <unnamed>: {sql}")
    got = ended + 150_000
    info_t += [got, got + 4_000_000, ended]
    info_lines += [f"[{migration}] LOG:  process {migration} acquired AccessExclusiveLock on "
                   f"{rel} after {(got - queued) / NS_PER_MS:.3f} ms",
                   f"[{migration}] LOG:  duration: {(got + 4_000_000 - queued) / NS_PER_MS:.3f}"
                   f" ms  statement: {MIGRATION_SQL}",
                   f"[{holder}] LOG:  duration: {(ended - began) / NS_PER_MS:.3f} ms  "
                   f"statement: {HOLDER_SQL}"]


def _rebuild_lines(traffic: Traffic, rebuild: tuple[float, float], threshold_ns: float,
                   pid: np.ndarray, info_t: list, info_lines: list,
                   rng: np.random.Generator) -> None:
    """slow_query's fix: the CREATE INDEX statement's duration line, and each INSERT that
    waited for its lock long enough to be logged (the wait is in its parse step)."""
    start, until = (int(x * NS_PER_S) for x in rebuild)
    ins = traffic.insert_end_ns - traffic.insert_start_ns
    waited = (traffic.insert_start_ns >= start) & (traffic.insert_start_ns < until) & \
        (ins >= threshold_ns)
    for r in np.flatnonzero(waited).tolist():
        info_t.append(int(traffic.insert_end_ns[r]))
        info_lines.append(f"[{int(pid[r])}] LOG:  duration: {ins[r] / NS_PER_MS:.3f} ms  "
                          f"parse <unnamed>: {PG_INSERT_PAYMENT}")
    if until - start >= threshold_ns:
        fixer = int(rng.integers(9000, 29000))  # the operator's session that ran the fix
        info_t.append(until)
        info_lines.append(f"[{fixer}] LOG:  duration: {(until - start) / NS_PER_MS:.3f} ms  "
                          f"statement: {CREATE_LOOKUP_INDEX}")


def _report_lines(reports: tuple[np.ndarray, ...], info_t: list, info_lines: list,
                  rng: np.random.Generator) -> None:
    """The dashboard's reports: each one's duration line, then its sort's temp files,
    which PostgreSQL logs as the portal goes, with the session's next statement (the
    next report)."""
    start, end, session, temp = reports
    pids = [int(p) for p in 5200 + rng.permutation(800)[:2]]
    for s0, e0, sess, size in zip(start.tolist(), end.tolist(), session.tolist(),
                                  temp.tolist()):
        p, t = pids[int(sess)], int(e0 * NS_PER_S)
        info_t.append(t)
        info_lines.append(f"[{p}] LOG:  duration: {(e0 - s0) * 1000.0:.3f} ms  execute "
                          f"<unnamed>: {REPORT_SQL}")
        parts = np.round(size * np.array([0.37, 0.33, 0.30]) / 8192) * 8192
        for k, part in enumerate(parts.tolist()):
            at = t + 2_000_000 + k * 300_000
            info_t += [at, at]
            info_lines += [f'[{p}] LOG:  temporary file: path "base/pgsql_tmp/pgsql_tmp{p}.'
                           f'{k}", size {int(part)}', f"[{p}] STATEMENT:  {REPORT_SQL}"]
