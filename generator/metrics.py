"""Metric series derived from the simulated traffic, with real instrumentation names.

Export path (documented in README): payment-service is scraped on ``/metrics`` where it
exposes OpenTelemetry metrics through ``opentelemetry-exporter-prometheus`` with
``OTEL_SEMCONV_STABILITY_OPT_IN=http`` (stable HTTP names, ``otel_scope_*`` labels) plus
prometheus-fastapi-instrumentator's ``http_requests_total`` and prometheus_client's
process/python collectors; PostgreSQL is scraped through postgres_exporter.
"""

from __future__ import annotations

import numpy as np

from .model import Exemplars, Labels, MetricFamily, Series, frozen_array, make_labels
from .resource import INSTRUMENTATION_VERSION, RESOURCE, SCHEMA_URL
from .simulate import (
    ERR_POOL_TIMEOUT,
    HEALTH,
    NS_PER_MS,
    NS_PER_S,
    POST_PAYMENT,
    ROUTES,
    StepState,
    TraceIds,
    Traffic,
)

HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
DB_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
APP_JOB = {"job": "payment-service", "instance": "payment-service:8000"}
PG_JOB = {"job": "postgres", "instance": "postgres-exporter:9187"}
# what SQLAlchemy's instrumentation names a pool: "<drivername>://<host>:<port>/<database>"
POOL_NAME = "postgresql+psycopg://postgres:5432/payments"
FASTAPI_SCOPE = {"otel_scope_name": "opentelemetry.instrumentation.fastapi",
                 "otel_scope_version": INSTRUMENTATION_VERSION, "otel_scope_schema_url": SCHEMA_URL}
SQLALCHEMY_SCOPE = {"otel_scope_name": "opentelemetry.instrumentation.sqlalchemy",
                    "otel_scope_version": INSTRUMENTATION_VERSION,
                    "otel_scope_schema_url": SCHEMA_URL}
SIZE_BUCKETS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0,
                5000.0, 7500.0, 10000.0)
# Body sizes the service answers with, by (route, status); POST bodies are ~90 bytes.
RESPONSE_BYTES = {(0, 200): 118, (0, 500): 21, (1, 200): 163, (1, 404): 33, (1, 500): 21,
                  (2, 200): 15}
REQUEST_BYTES = 91
APP_SCOPE = {"otel_scope_name": "payment_service.db", "otel_scope_version": "1.4.2"}
PG_STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)",
             "fastpath function call", "disabled")
PG_LOCK_MODES = ("accessexclusivelock", "accesssharelock", "exclusivelock", "rowexclusivelock",
                 "rowsharelock", "sharelock", "sharerowexclusivelock",
                 "shareupdateexclusivelock", "sireadlock")
TIME_VALUED = frozenset({"process_start_time_seconds", "http_requests_created"})
PROCESS_START_BEFORE_WINDOW_S = 3 * 3600


def le_label(bound: float) -> str:
    """``le`` as prometheus_client prints it (Go float formatting: ``1.0``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _Builder:
    def __init__(self, scrape_ms: np.ndarray) -> None:
        self.t_ms = frozen_array(scrape_ms, np.int64)
        self.series: list[Series] = []
        self.families: dict[str, MetricFamily] = {}

    def family(self, name: str, mtype: str, help_text: str, unit: str = "") -> None:
        self.families.setdefault(name, MetricFamily(name, mtype, help_text, unit))

    def add(self, name: str, labels: dict[str, str], values: np.ndarray,
            exemplars: Exemplars | None = None) -> None:
        full: Labels = make_labels({**labels, "__name__": name})
        vals = frozen_array(np.asarray(values, dtype=np.float64), np.float64)
        if vals.shape != self.t_ms.shape:
            raise ValueError(f"{name}: {vals.shape[0]} values for {self.t_ms.shape[0]} times")
        self.series.append(Series(full, self.t_ms, vals, exemplars or Exemplars.empty()))

    def const(self, value: float) -> np.ndarray:
        return np.full(self.t_ms.shape, float(value))


def scrape_index(traffic: Traffic, scrape_ms: np.ndarray) -> np.ndarray:
    """The first scrape at or after each request's end: when counters include it."""
    return np.searchsorted(scrape_ms * NS_PER_MS, traffic.end_ns, side="left")


def build_metrics(traffic: Traffic, ids: TraceIds, state: StepState, knobs: dict[str, float],
                  rng: np.random.Generator) -> tuple[tuple[MetricFamily, ...], tuple[Series, ...]]:
    n_steps = state.severity.shape[0]
    scrape_ms = np.arange(n_steps + 1, dtype=np.int64) * state.step_ms
    b = _Builder(scrape_ms)
    idx = scrape_index(traffic, scrape_ms)
    _http_metrics(b, traffic, ids, idx, state, rng)
    _pool_metrics(b, traffic, idx, state, knobs, rng)
    _process_metrics(b, traffic, idx, state, rng)
    _postgres_metrics(b, traffic, idx, state, knobs, rng)
    for job in (APP_JOB, PG_JOB):
        b.add("up", job, b.const(1.0))
    b.family("up", "gauge", "1 if the scrape of the target succeeded.")
    series = tuple(sorted(b.series, key=lambda s: s.labels))
    families = tuple(sorted(b.families.values(), key=lambda f: f.name))
    return families, series


def _cumulative(idx: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.cumsum(np.bincount(idx, weights=weights, minlength=n)[:n]).astype(np.float64)


def _step_to_scrape(per_step: np.ndarray) -> np.ndarray:
    """A gauge sampled at each scrape, from the interval that ends there."""
    return np.concatenate([per_step[:1], per_step])


def _http_metrics(b: _Builder, traffic: Traffic, ids: TraceIds, idx: np.ndarray, state: StepState,
                  rng: np.random.Generator) -> None:
    n = b.t_ms.shape[0]
    name = "http_server_request_duration_seconds"
    b.family(name, "histogram", "Duration of HTTP server requests.", "seconds")
    code = traffic.route.astype(np.int64) * 1000 + traffic.status
    uniq, key = np.unique(code, return_inverse=True)
    combos = [(int(c) // 1000, int(c) % 1000) for c in uniq]
    latency = traffic.latency_s
    bounds = np.array(HTTP_BUCKETS + (np.inf,))
    bucket = np.searchsorted(bounds, latency, side="left")
    nb = bounds.shape[0]
    cells = np.bincount((key * nb + bucket) * n + idx, minlength=len(combos) * nb * n)
    cum = np.cumsum(np.cumsum(cells.reshape(len(combos), nb, n), axis=2), axis=1)
    sums = np.cumsum(np.bincount(key * n + idx, weights=latency,
                                 minlength=len(combos) * n).reshape(len(combos), n), axis=1)
    ex = _exemplar_cells(traffic, ids, key, bucket, idx, nb, n)
    for ci, (route, status) in enumerate(combos):
        method, path = ROUTES[route]
        labels = {**APP_JOB, **FASTAPI_SCOPE, "http_request_method": method, "http_route": path,
                  "http_response_status_code": str(status), "url_scheme": "http",
                  "network_protocol_version": "1.1"}
        if status >= 500:
            labels["error_type"] = str(status)
        for bi, bound in enumerate(bounds):
            b.add(name + "_bucket", {**labels, "le": le_label(bound)}, cum[ci, bi],
                  ex.get((ci, bi)))
        b.add(name + "_sum", labels, sums[ci])
        b.add(name + "_count", labels, cum[ci, nb - 1])
        count = cum[ci, nb - 1]
        _fixed_size_histogram(b, "http_server_response_body_size_bytes", labels, count,
                              RESPONSE_BYTES[(route, status)])
        if method == "POST":
            _fixed_size_histogram(b, "http_server_request_body_size_bytes", labels, count,
                                  REQUEST_BYTES)
    b.family("http_server_response_body_size_bytes", "histogram",
             "Size of HTTP server response bodies.", "bytes")
    b.family("http_server_request_body_size_bytes", "histogram",
             "Size of HTTP server request bodies.", "bytes")

    b.family("http_requests_total", "counter", "Total number of requests by method, status and "
             "handler.")
    group = traffic.status // 100
    for route, (method, path) in enumerate(ROUTES):
        for g in sorted(set(group[traffic.route == route].tolist())):
            mask = (traffic.route == route) & (group == g)
            labels = {**APP_JOB, "handler": path, "method": method, "status": f"{g}xx"}
            b.add("http_requests_total", labels, _cumulative(idx[mask], n))
            # prometheus_client's _created: when the child first counted (before the window);
            # a time, stored relative to the window start like process_start_time_seconds
            b.add("http_requests_created", labels,
                  b.const(-PROCESS_START_BEFORE_WINDOW_S + 2.5 + route + g / 10))
    b.family("http_requests_created", "gauge", "Total number of requests by method, status and "
             "handler.")

    b.family("http_server_active_requests", "gauge",
             "Number of active HTTP server requests.", "")
    step_s = state.step_ms / 1000.0
    step_of = traffic.start_ns // (state.step_ms * NS_PER_MS)
    for method in ("GET", "POST"):
        mask = np.isin(traffic.route, [r for r, (m, _) in enumerate(ROUTES) if m == method])
        busy = np.bincount(step_of[mask], weights=latency[mask],
                           minlength=state.severity.shape[0]) / step_s
        b.add("http_server_active_requests", {**APP_JOB, **FASTAPI_SCOPE,
                                              "http_request_method": method, "url_scheme": "http"},
              rng.poisson(_step_to_scrape(busy)).astype(np.float64))


def _fixed_size_histogram(b: _Builder, name: str, labels: dict[str, str], count: np.ndarray,
                          size: int) -> None:
    """Every request of a series has the same body size: buckets step at that size."""
    for bound in SIZE_BUCKETS + (float("inf"),):
        b.add(name + "_bucket", {**labels, "le": le_label(bound)},
              count if size <= bound else np.zeros_like(count))
    b.add(name + "_sum", labels, count * float(size))
    b.add(name + "_count", labels, count)


def _exemplar_cells(traffic: Traffic, ids: TraceIds, key: np.ndarray, bucket: np.ndarray,
                    idx: np.ndarray,
                    nb: int, n: int) -> dict[tuple[int, int], Exemplars]:
    """One exemplar per (series, bucket, scrape): the last sampled request that landed there."""
    sampled = np.flatnonzero(traffic.sampled)
    if sampled.size == 0:
        return {}
    trace_id, span_id = ids.trace_id, ids.server
    order = sampled[np.argsort(traffic.end_ns[sampled], kind="stable")]
    cell = (key[order] * nb + bucket[order]) * n + idx[order]
    # last occurrence of each cell, in end-time order
    _, last_rev = np.unique(cell[::-1], return_index=True)
    chosen = np.sort(order[::-1][last_rev])
    chosen = chosen[np.argsort(traffic.end_ns[chosen], kind="stable")]
    out: dict[tuple[int, int], Exemplars] = {}
    series_of = key[chosen] * nb + bucket[chosen]
    pos = np.searchsorted(sampled, chosen)
    for sid in np.unique(series_of):
        sel = chosen[series_of == sid]
        p = pos[series_of == sid]
        out[(int(sid // nb), int(sid % nb))] = Exemplars(
            t_ms=frozen_array(traffic.end_ns[sel] // NS_PER_MS, np.int64),
            value=frozen_array(traffic.latency_s[sel], np.float64),
            trace_id=frozen_array(trace_id[p], np.uint8),
            span_id=frozen_array(span_id[p], np.uint8),
        )
    return out


def _pool_metrics(b: _Builder, traffic: Traffic, idx: np.ndarray, state: StepState,
                  knobs: dict[str, float], rng: np.random.Generator) -> None:
    n = b.t_ms.shape[0]
    cap = state.pool_capacity
    used = np.minimum(rng.poisson(_step_to_scrape(state.offered_load)), cap).astype(np.float64)
    used[_step_to_scrape(state.offered_load) >= cap] = cap
    idle = np.maximum(knobs["pool_size"] - used, 0.0)
    name = "db_client_connections_usage_connections"
    b.family(name, "gauge", "The number of connections that are currently in state described by "
             "the state attribute", "connections")
    for st, vals in (("idle", idle), ("used", used)):
        b.add(name, {**APP_JOB, **SQLALCHEMY_SCOPE, "pool_name": POOL_NAME, "state": st}, vals)
    pool = {**APP_JOB, **APP_SCOPE, "db_client_connection_pool_name": POOL_NAME}
    b.family("db_client_connection_max", "gauge", "The maximum number of open connections "
             "allowed.")
    b.add("db_client_connection_max", pool, b.const(cap))
    db = traffic.used_db
    step_of = traffic.start_ns // (state.step_ms * NS_PER_MS)
    waiting = np.bincount(step_of[db], weights=traffic.wait_ns[db] / NS_PER_S,
                          minlength=state.severity.shape[0]) / (state.step_ms / 1000.0)
    b.family("db_client_connection_pending_requests", "gauge", "The number of current pending "
             "requests for an open connection.")
    b.add("db_client_connection_pending_requests", pool,
          rng.poisson(_step_to_scrape(waiting)).astype(np.float64))
    b.family("db_client_connection_timeouts_total", "counter", "The number of connection "
             "timeouts that have occurred trying to obtain a connection from the pool.")
    timeouts = traffic.error == ERR_POOL_TIMEOUT
    b.add("db_client_connection_timeouts_total", pool, _cumulative(idx[timeouts], n))
    name = "db_client_connection_wait_time_seconds"
    b.family(name, "histogram", "The time it took to obtain an open connection from the pool.",
             "seconds")
    wait = traffic.wait_ns[db] / NS_PER_S
    bounds = np.array(DB_BUCKETS + (np.inf,))
    bucket = np.searchsorted(bounds, wait, side="left")
    nb = bounds.shape[0]
    cells = np.bincount(bucket * n + idx[db], minlength=nb * n).reshape(nb, n)
    cum = np.cumsum(np.cumsum(cells, axis=1), axis=0)
    for bi, bound in enumerate(bounds):
        b.add(name + "_bucket", {**pool, "le": le_label(bound)}, cum[bi])
    b.add(name + "_sum", pool, _cumulative(idx[db], n, wait))
    b.add(name + "_count", pool, cum[nb - 1])


def _process_metrics(b: _Builder, traffic: Traffic, idx: np.ndarray, state: StepState,
                     rng: np.random.Generator) -> None:
    n = b.t_ms.shape[0]
    job = APP_JOB
    cpu_per_req = np.where(traffic.route == HEALTH, 0.0004, 0.0035)
    cpu = 0.01 * b.t_ms / 1000.0 + _cumulative(idx, n, cpu_per_req)
    b.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in "
             "seconds.", "seconds")
    b.add("process_cpu_seconds_total", job, np.round(cpu, 2))
    load = _step_to_scrape(state.offered_load)
    rss = 96e6 + 0.35e6 * np.sqrt(b.t_ms / 60000.0) + 1.2e6 * load
    rss = np.round(rss + rng.normal(0, 0.4e6, n), -3)
    b.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "bytes")
    b.add("process_resident_memory_bytes", job, rss)
    b.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", "bytes")
    b.add("process_virtual_memory_bytes", job, np.round(rss * 3.9 + 2.1e8, -3))
    b.family("process_open_fds", "gauge", "Number of open file descriptors.")
    conns = np.maximum(np.minimum(load, state.pool_capacity), 1.0)
    b.add("process_open_fds", job, np.round(24 + conns + rng.poisson(2, n)))
    b.family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
    b.add("process_max_fds", job, b.const(1048576))
    b.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch "
             "in seconds.", "seconds")
    # Stored relative to the window start; the time shift adds the window's epoch.
    b.add("process_start_time_seconds", job, b.const(-PROCESS_START_BEFORE_WINDOW_S + 0.42))
    b.family("python_gc_collections_total", "counter", "Number of times this generation was "
             "collected")
    done = _cumulative(idx, n)
    for gen, per in (("0", 40.0), ("1", 400.0), ("2", 4000.0)):
        b.add("python_gc_collections_total", {**job, "generation": gen},
              np.floor(done / per) + {"0": 850, "1": 77, "2": 6}[gen])
    b.family("python_gc_objects_collected_total", "counter", "Objects collected during gc")
    b.family("python_gc_objects_uncollectable_total", "counter", "Uncollectable objects found "
             "during GC")
    for gen, per in (("0", 0.9), ("1", 2.0), ("2", 30.0)):
        b.add("python_gc_objects_collected_total", {**job, "generation": gen},
              np.floor(done * per) + {"0": 41_233, "1": 5_410, "2": 1_877}[gen])
        b.add("python_gc_objects_uncollectable_total", {**job, "generation": gen}, b.const(0))
    b.family("target_info", "gauge", "Target metadata")
    b.add("target_info", {**job, **{k.replace(".", "_"): str(v) for k, v in RESOURCE}},
          b.const(1))
    b.family("python_info", "gauge", "Python platform information")
    b.add("python_info", {**job, "implementation": "CPython", "major": "3", "minor": "12",
                          "patchlevel": "7", "version": "3.12.7"}, b.const(1))


def _postgres_metrics(b: _Builder, traffic: Traffic, idx: np.ndarray, state: StepState,
                      knobs: dict[str, float], rng: np.random.Generator) -> None:
    from .postgres import postgres_series

    postgres_series(b, traffic, idx, state, knobs, rng)


__all__ = ["build_metrics", "le_label", "HTTP_BUCKETS", "TIME_VALUED", "APP_JOB", "PG_JOB",
           "POST_PAYMENT"]
