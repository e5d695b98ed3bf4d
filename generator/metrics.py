"""Metric series derived from the simulation, with real instrumentation names and values.

Export path (documented in README): payment-service is scraped on ``/metrics`` where it
exposes OpenTelemetry metrics through ``opentelemetry-exporter-prometheus`` with
``OTEL_SEMCONV_STABILITY_OPT_IN=http`` (stable HTTP names, ``otel_scope_*`` labels) plus
prometheus-fastapi-instrumentator's ``http_requests_total`` and prometheus_client's
process/python collectors; PostgreSQL is scraped through postgres_exporter.

Counters count the simulated requests; gauges are the simulation's state at the scrape
instant (how many requests are in flight, waiting, holding a connection), never a rate
dressed up as a gauge.
"""

from __future__ import annotations

import numpy as np

from .card import card_metrics
from .model import Exemplars, MetricFamily, Series, frozen_array
from .postgres import postgres_series
from .process import process_series
from .resource import INSTRUMENTATION_VERSION, SCHEMA_URL
from .scenarios import PhasePlan
from .series import (
    APP_JOB,
    PG_JOB,
    TIME_VALUED,
    Carry,
    SeriesBuilder,
    le_label,
)
from .simulate import ERR_CONNECT, ERR_POOL_TIMEOUT, NS_PER_MS, ROUTES, Simulation, TraceIds

# The OTel SDK's default buckets for http.server/client.request.duration, as declared
# (ints where the list has ints: the exporter prints le="1", not "1.0").
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
DB_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
# what SQLAlchemy's instrumentation names a pool: "<drivername>://<host>:<port>/<database>"
POOL_NAME = "postgresql+psycopg://postgres:5432/payments"
FASTAPI_SCOPE = {"otel_scope_name": "opentelemetry.instrumentation.fastapi",
                 "otel_scope_version": INSTRUMENTATION_VERSION, "otel_scope_schema_url": SCHEMA_URL}
HTTPX_SCOPE = {"otel_scope_name": "opentelemetry.instrumentation.httpx",
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
# The card processor payment-service charges over HTTP (httpx, instrumented).
CARD_HOST, CARD_PORT = "card-processor", 8080
CARD_URL = f"http://{CARD_HOST}:{CARD_PORT}/v1/charges"


def build_metrics(sim: Simulation, ids: TraceIds, knobs: dict[str, float],
                  plan: PhasePlan | None, rng: np.random.Generator, herrings: tuple = (),
                  upstream: tuple | None = None,
                  ) -> tuple[tuple[MetricFamily, ...], tuple[Series, ...]]:
    """``herrings``: (RedHerring, realized start as a fraction of the window) pairs;
    ``upstream``: (Upstream, its stream): the card processor's own job."""
    families, series, _ = build_metric_span(sim, ids, knobs, plan, rng, herrings, upstream)
    return families, series


def build_metric_span(sim: Simulation, ids: TraceIds, knobs: dict[str, float],
                      plan: PhasePlan | None, rng: np.random.Generator, herrings: tuple = (),
                      upstream: tuple | None = None, carry: Carry | None = None,
                      ) -> tuple[tuple[MetricFamily, ...], tuple[Series, ...], Carry | None]:
    """:func:`build_metrics` on ``sim``'s scrapes; with ``carry``, a span of a longer
    window going on from the earlier one (returns what the next span goes on from)."""
    b = SeriesBuilder(sim.scrape_ms,
                      tuple((r.stop_s * 1000.0, r.up_s * 1000.0) for r in sim.restarts),
                      carry, sim.duration_ms)
    _http_metrics(b, sim, ids)
    _card_metrics(b, sim)
    _pool_metrics(b, sim)
    process_series(b, sim, rng, knobs, plan)
    end_ms = float(b.window_ms)
    postgres_series(b, sim, knobs, plan, rng, [at * end_ms / 1000.0 for h, at in herrings
                                               if h.kind == "report_run"])
    b.add("up", APP_JOB, np.where(b.app_down, 0.0, 1.0))
    # a red herring: the exporter's scrapes fail for a while (a network blip), nothing else
    pg_down = np.zeros(b.n, bool)
    for h, at in herrings:
        if h.kind == "scrape_gap":
            pg_down |= (b.t_ms >= at * end_ms) & (b.t_ms < at * end_ms + h.length_s * 1000.0)
    b.add("up", PG_JOB, np.where(pg_down, 0.0, 1.0))
    if upstream is not None:
        card_metrics(b, *upstream)
    b.family("up", "gauge", "1 if the scrape of the target succeeded.")
    b.finish(APP_JOB)
    if pg_down.any():
        b.drop(PG_JOB, pg_down)
    series = tuple(sorted(b.emit(), key=lambda s: s.labels))
    families = tuple(sorted(b.families.values(), key=lambda f: f.name))
    return families, series, b.next


def _duration_histogram(b: SeriesBuilder, name: str, key: np.ndarray, combos: list[dict],
                        latency: np.ndarray, idx: np.ndarray,
                        exemplars: dict[tuple[int, int], Exemplars] | None = None,
                        ) -> np.ndarray:
    """Cumulative buckets, _sum and _count of one histogram per label combination;
    returns the _count rows (combination x scrape)."""
    n = b.n
    seen = idx < n  # what a process counted after its last scrape is not in any sample
    key, latency, idx = key[seen], latency[seen], idx[seen]
    bounds = np.array(HTTP_BUCKETS + (np.inf,))
    bucket = np.searchsorted(bounds, latency, side="left")
    nb = bounds.shape[0]
    cells = np.bincount((key * nb + bucket) * n + idx, minlength=len(combos) * nb * n)
    cum = np.cumsum(np.cumsum(cells.reshape(len(combos), nb, n), axis=2), axis=1)
    sums = np.cumsum(np.bincount(key * n + idx, weights=latency,
                                 minlength=len(combos) * n).reshape(len(combos), n), axis=1)
    for ci, labels in enumerate(combos):
        for bi, bound in enumerate(HTTP_BUCKETS + (float("inf"),)):
            b.add(name + "_bucket", {**labels, "le": le_label(bound)}, cum[ci, bi],
                  (exemplars or {}).get((ci, bi)))
        b.add(name + "_sum", labels, sums[ci])
        b.add(name + "_count", labels, cum[ci, nb - 1])
    return cum[:, nb - 1]


def _http_metrics(b: SeriesBuilder, sim: Simulation, ids: TraceIds) -> None:
    traffic = sim.traffic
    idx = b.app_index(traffic.end_ns)
    name = "http_server_request_duration_seconds"
    b.family(name, "histogram", "Duration of HTTP server requests.", "seconds")
    code = traffic.route.astype(np.int64) * 1000 + traffic.status
    uniq, key = np.unique(code, return_inverse=True)
    pairs = [(int(c) // 1000, int(c) % 1000) for c in uniq]
    combos = []
    for route, status in pairs:
        method, path = ROUTES[route]
        labels = {**APP_JOB, **FASTAPI_SCOPE, "http_request_method": method, "http_route": path,
                  "http_response_status_code": str(status), "url_scheme": "http",
                  "network_protocol_version": "1.1"}
        if status >= 500:
            labels["error_type"] = str(status)
        combos.append(labels)
    bounds = np.array(HTTP_BUCKETS + (np.inf,))
    bucket = np.searchsorted(bounds, traffic.latency_s, side="left")
    ex = _exemplar_cells(sim, ids, key, bucket, idx, bounds.shape[0], b.n)
    counts = _duration_histogram(b, name, key, combos, traffic.latency_s, idx, ex)
    for ci, (route, status) in enumerate(pairs):
        _fixed_size_histogram(b, "http_server_response_body_size_bytes", combos[ci],
                              counts[ci], RESPONSE_BYTES[(route, status)])
        if ROUTES[route][0] == "POST":
            _fixed_size_histogram(b, "http_server_request_body_size_bytes", combos[ci],
                                  counts[ci], REQUEST_BYTES)
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
            b.add("http_requests_total", labels, b.counter(idx[mask]))
            # prometheus_client's _created: when the child first counted (before the window);
            # a time, stored relative to the window start like process_start_time_seconds
            b.add("http_requests_created", labels, b.app_start_s + 2.08 + route + g / 10)
    b.family("http_requests_created", "gauge", "Total number of requests by method, status and "
             "handler.")

    b.family("http_server_active_requests", "gauge",
             "Number of active HTTP server requests.", "")
    for method in ("GET", "POST"):
        b.add("http_server_active_requests", {**APP_JOB, **FASTAPI_SCOPE,
                                              "http_request_method": method, "url_scheme": "http"},
              sim.instants.active[method].astype(np.float64))


def _card_metrics(b: SeriesBuilder, sim: Simulation) -> None:
    """The card processor as the app's HTTP client instrumentation sees it."""
    traffic = sim.traffic
    called = np.flatnonzero(traffic.called_card)
    status = np.where(traffic.error[called] == 3, 503, 201)
    uniq, key = np.unique(status, return_inverse=True)
    combos = []
    for code in uniq.tolist():
        labels = {**APP_JOB, **HTTPX_SCOPE, "http_request_method": "POST",
                  "server_address": CARD_HOST, "server_port": str(CARD_PORT),
                  "network_protocol_version": "1.1", "http_response_status_code": str(code)}
        if code >= 500:
            labels["error_type"] = str(code)
        combos.append(labels)
    name = "http_client_request_duration_seconds"
    b.family(name, "histogram", "Duration of HTTP client requests.", "seconds")
    took = (traffic.call_end_ns[called] - traffic.call_start_ns[called]) / 1e9
    _duration_histogram(b, name, key, combos, took, b.app_index(traffic.call_end_ns[called]))


def _fixed_size_histogram(b: SeriesBuilder, name: str, labels: dict[str, str],
                          count: np.ndarray, size: int) -> None:
    """Every request of a series has the same body size: buckets step at that size."""
    for bound in SIZE_BUCKETS + (float("inf"),):
        b.add(name + "_bucket", {**labels, "le": le_label(bound)},
              count if size <= bound else np.zeros_like(count))
    b.add(name + "_sum", labels, count * float(size))
    b.add(name + "_count", labels, count)


def _exemplar_cells(sim: Simulation, ids: TraceIds, key: np.ndarray, bucket: np.ndarray,
                    idx: np.ndarray, nb: int, n: int) -> dict[tuple[int, int], Exemplars]:
    """One exemplar per (series, bucket, scrape): the last sampled request that landed there."""
    traffic = sim.traffic
    sampled = np.flatnonzero(traffic.sampled)
    if sampled.size == 0:
        return {}
    pos_of = np.searchsorted(sampled, np.arange(len(traffic)))  # row -> row among the sampled
    sampled = sampled[idx[sampled] < n]
    trace_id, span_id = ids.trace_id, ids.server
    order = sampled[np.argsort(traffic.end_ns[sampled], kind="stable")]
    cell = (key[order] * nb + bucket[order]) * n + idx[order]
    # last occurrence of each cell, in end-time order
    _, last_rev = np.unique(cell[::-1], return_index=True)
    chosen = np.sort(order[::-1][last_rev])
    chosen = chosen[np.argsort(traffic.end_ns[chosen], kind="stable")]
    out: dict[tuple[int, int], Exemplars] = {}
    series_of = key[chosen] * nb + bucket[chosen]
    pos = pos_of[chosen]
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


def _refused_drift(b: SeriesBuilder, sim: Simulation) -> np.ndarray:
    """What each refused connection does to the usage gauge, as the installed
    opentelemetry-instrumentation-sqlalchemy (0.66b2) counts it: SQLAlchemy fires the
    pool's `checkin` event for a connection that failed to connect, with no `checkout`
    before it, so every refusal moves one connection from `used` to `idle` for good (for
    the life of the process). Seen live: `used` at -300 during too_many_clients (its
    live fixture)."""
    traffic = sim.traffic
    refused = np.flatnonzero(traffic.error == ERR_CONNECT)
    drift = np.zeros(b.n)
    if refused.size == 0 and not b.start("refused", 0.0):
        return drift
    idx = b.app_index(traffic.connect_end_ns[refused])
    era = traffic.era[refused]
    first = int(b.app_era[0])
    for e in sorted(set(np.unique(era).tolist()) | ({first} if b.carry else set())):
        # a new process counts from zero again (an earlier span's count goes on)
        drift = np.where(b.app_era == e, b.counter(idx[era == e])
                         + (b.start("refused", 0.0) if e == first else 0.0), drift)
    b.end("refused", drift[-1])
    return drift


def _pool_metrics(b: SeriesBuilder, sim: Simulation) -> None:
    traffic, inst = sim.traffic, sim.instants
    name = "db_client_connections_usage_connections"
    b.family(name, "gauge", "The number of connections that are currently in state described by "
             "the state attribute", "connections")
    drift = _refused_drift(b, sim)
    for st, vals in (("idle", inst.idle + drift), ("used", inst.used - drift)):
        b.add(name, {**APP_JOB, **SQLALCHEMY_SCOPE, "pool_name": POOL_NAME, "state": st},
              vals.astype(np.float64))
    pool = {**APP_JOB, **APP_SCOPE, "db_client_connection_pool_name": POOL_NAME}
    b.family("db_client_connection_max", "gauge", "The maximum number of open connections "
             "allowed.")
    b.add("db_client_connection_max", pool, b.const(sim.pool_capacity))
    b.family("db_client_connection_pending_requests", "gauge", "The number of current pending "
             "requests for an open connection.")
    b.add("db_client_connection_pending_requests", pool, inst.pending.astype(np.float64))
    db = np.flatnonzero(traffic.used_db)
    done = b.app_index(traffic.connect_end_ns[db])
    b.family("db_client_connection_timeouts_total", "counter", "The number of connection "
             "timeouts that have occurred trying to obtain a connection from the pool.")
    b.add("db_client_connection_timeouts_total", pool,
          b.counter(done[traffic.error[db] == ERR_POOL_TIMEOUT]))
    name = "db_client_connection_wait_time_seconds"
    b.family(name, "histogram", "The time it took to obtain an open connection from the pool.",
             "seconds")
    wait = traffic.wait_ns[db] / 1e9
    bounds = np.array(DB_BUCKETS + (np.inf,))
    nb, n = bounds.shape[0], b.n
    wait, done = wait[done < n], done[done < n]
    bucket = np.searchsorted(bounds, wait, side="left")
    cells = np.bincount(bucket * n + done, minlength=nb * n).reshape(nb, n)
    cum = np.cumsum(np.cumsum(cells, axis=1), axis=0)
    for bi, bound in enumerate(DB_BUCKETS + (float("inf"),)):
        b.add(name + "_bucket", {**pool, "le": le_label(bound)}, cum[bi])
    b.add(name + "_sum", pool, b.counter(done, wait))
    b.add(name + "_count", pool, cum[nb - 1])


__all__ = ["build_metrics", "le_label", "HTTP_BUCKETS", "TIME_VALUED", "APP_JOB", "PG_JOB"]
