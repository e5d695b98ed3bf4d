"""The invariants every built-in scenario must hold (design.md, issue 2)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from generator.logs import SHUTDOWN_LINES, STARTUP_LINES
from generator.model import Incident, Series
from generator.simulate import NS_PER_MS
from tests.conftest import app_records, cached_incident, error_records

HIST = "http_server_request_duration_seconds"


def app_series(incident: Incident, name: str) -> Iterator[Series]:
    """payment-service's series of ``name`` (card-processor's server has the same names)."""
    return (s for s in incident.iter_series(name) if s.label("job") == "payment-service")


def _restarts(incident: Incident) -> list[tuple[int, int]]:
    """(last scrape of the old process, first scrape of the new one) in ms, for every
    restart of payment-service: read off process_start_time_seconds, as Prometheus'
    changes() would."""
    s = next(app_series(incident, "process_start_time_seconds"))
    jumps = np.flatnonzero(np.diff(s.values) != 0)
    return [(int(s.t_ms[j]), int(s.t_ms[j + 1])) for j in jumps]


def increase(s, restarts: list[tuple[int, int]]) -> float:
    """A counter's increase over the window, counting from zero after each restart."""
    v, t = s.values, s.t_ms
    total = float(v[-1] - v[0])
    for _, first in restarts:
        k = int(np.searchsorted(t, first))
        if 0 < k < len(v):
            total += float(v[k - 1] - v[k]) + float(v[k])
    return total


def _span_index(incident: Incident) -> dict[tuple[str, str], tuple[int, int, str]]:
    out = {}
    for table in incident.span_tables:
        for i in range(len(table)):
            key = (bytes(table.trace_id[i]).hex(), bytes(table.span_id[i]).hex())
            out[key] = (int(table.start_ns[i]), int(table.end_ns[i]), table.name[i])
    return out


def test_counters_never_decrease(incident: Incident) -> None:
    kinds = {f.name: f.type for f in incident.families}
    firsts = {first for _, first in _restarts(incident)}
    checked = 0
    for s in incident.series:
        base = re.sub(r"_(bucket|sum|count)$", "", s.name)
        if kinds.get(s.name) == "counter" or kinds.get(base) == "histogram":
            down = s.t_ms[1:][np.diff(s.values) < 0]
            # only a new process starts again from zero
            assert set(down.tolist()) <= firsts, f"{s.labels} decreases at {down}"
            checked += 1
    assert checked > 100


def test_samples_in_time_order_with_sorted_unique_labels(incident: Incident) -> None:
    seen = set()
    for s in incident.series:
        assert list(s.labels) == sorted(s.labels)
        assert len({k for k, _ in s.labels}) == len(s.labels)
        assert all(v != "" for _, v in s.labels), s.labels
        assert np.all(np.diff(s.t_ms) > 0)
        assert s.labels not in seen
        seen.add(s.labels)


def _histograms(incident: Incident, name: str) -> dict[tuple, dict[str, np.ndarray]]:
    groups: dict[tuple, dict[str, np.ndarray]] = {}
    for s in incident.series:
        if s.name.startswith(name + "_"):
            key = tuple(kv for kv in s.labels if kv[0] not in ("le", "__name__"))
            suffix = s.name[len(name) + 1:]
            tag = s.label("le") if suffix == "bucket" else suffix
            groups.setdefault(key, {})[tag] = s.values
    return groups


def test_buckets_cumulative_and_inf_equals_count(incident: Incident) -> None:
    for name in (HIST, "db_client_connection_wait_time_seconds",
                 "http_server_response_body_size_bytes", "http_server_request_body_size_bytes"):
        groups = _histograms(incident, name)
        assert groups
        for key, parts in groups.items():
            les = sorted((float(k), v) for k, v in parts.items() if k not in ("sum", "count"))
            stacked = np.stack([v for _, v in les])
            assert np.all(np.diff(stacked, axis=0) >= 0), f"{key} not cumulative in le"
            assert les[-1][0] == float("inf")
            np.testing.assert_array_equal(les[-1][1], parts["count"])


def test_request_counter_agrees_with_histogram(incident: Incident) -> None:
    by_route: dict[tuple[str, str], np.ndarray] = {}
    for s in app_series(incident, HIST + "_count"):
        key = (s.label("http_request_method"), s.label("http_route"))
        by_route[key] = by_route.get(key, 0) + s.values
    counters: dict[tuple[str, str], np.ndarray] = {}
    for s in incident.iter_series("http_requests_total"):
        key = (s.label("method"), s.label("handler"))
        counters[key] = counters.get(key, 0) + s.values
    assert by_route.keys() == counters.keys()
    for key in by_route:
        np.testing.assert_array_equal(by_route[key], counters[key])


def test_5xx_increase_equals_error_log_lines(incident: Incident) -> None:
    restarts = _restarts(incident)
    five = sum(increase(s, restarts) for s in app_series(incident, HIST + "_count")
               if s.label("http_response_status_code").startswith("5"))
    errors = error_records(incident)
    lines = len(errors)
    assert five == lines
    # the first scrape is at the window start, before anything completed
    assert all(s.values[0] == 0 for s in app_series(incident, HIST + "_count"))
    if incident.scenario == "pool_exhaustion":
        assert lines > 100
        assert all("QueuePool limit of size 5 overflow 10 reached" in line
                   for _, line, _ in errors)


def test_every_exemplar_names_a_span_and_sits_in_its_bucket(incident: Incident) -> None:
    spans = _span_index(incident)
    total = 0
    for s in app_series(incident, HIST + "_bucket"):
        e = s.exemplars
        le = float(s.label("le"))
        bounds = sorted({float(x.label("le")) for x in app_series(incident, HIST + "_bucket")})
        lower = max([b for b in bounds if b < le], default=0.0)
        for i in range(len(e)):
            key = (bytes(e.trace_id[i]).hex(), bytes(e.span_id[i]).hex())
            assert key in spans, f"exemplar {key} names no span"
            start, end, name = spans[key]
            assert name == f"{s.label('http_request_method')} {s.label('http_route')}"
            assert e.value[i] == (end - start) / 1e9
            assert lower < e.value[i] <= le
            assert e.t_ms[i] == end // NS_PER_MS
        assert np.all(np.diff(e.t_ms) >= 0)
        total += len(e)
    assert total > 50
    assert total == sum(len(s.exemplars) for s in incident.series)


def test_every_log_trace_id_names_a_span(incident: Incident) -> None:
    spans = _span_index(incident)
    traces = {t for t, _ in spans}
    with_ids = 0
    for st in incident.log_streams:
        for meta, line in zip(st.metadata, st.lines):
            m = dict(meta)
            if "trace_id" in m:
                assert (m["trace_id"], m["span_id"]) in spans
                with_ids += 1
            for tid in re.findall(r"trace_id=([0-9a-f]{32})", line):
                assert tid in traces
    assert with_ids > 100


def test_spans_nest_inside_their_parent(incident: Incident) -> None:
    """Every parent exists in the same trace and holds its child's time (card-processor's
    server span sits inside payment-service's client span, which sits inside the request)."""
    spans = {}
    for table in incident.span_tables:
        for i in range(len(table)):
            spans[bytes(table.span_id[i]).hex()] = (bytes(table.trace_id[i]),
                                                    table.start_ns[i], table.end_ns[i])
    roots = 0
    for table in incident.span_tables:
        for i in range(len(table)):
            assert table.start_ns[i] <= table.end_ns[i]
            assert table.span_id[i].any() and table.trace_id[i].any()
            parent = bytes(table.parent_span_id[i]).hex()
            if parent == "0" * 16:
                roots += 1
                continue
            trace, lo, hi = spans[parent]
            assert trace == bytes(table.trace_id[i])
            assert lo <= table.start_ns[i] and table.end_ns[i] <= hi
    assert roots > 0


def test_log_streams_in_time_order_within_window(incident: Incident) -> None:
    for st in incident.log_streams:
        assert np.all(np.diff(st.t_ns) >= 0)
        assert st.t_ns[0] >= 0 and st.t_ns[-1] <= incident.duration_ms * NS_PER_MS


def test_ground_truth_examples_are_real_traces(incident: Incident) -> None:
    traces = {t for t, _ in _span_index(incident)}
    assert incident.truth.example_trace_ids
    assert set(incident.truth.example_trace_ids) <= traces
    assert incident.truth.promql and incident.truth.logql and incident.truth.traceql


def p99_from_buckets(incident: Incident, lo_ms: int, hi_ms: int) -> float:
    """p99 of POST /payment over [lo, hi) from the bucket increases (as PromQL would)."""
    inc: dict[float, float] = {}
    for s in app_series(incident, HIST + "_bucket"):
        if s.label("http_route") != "/payment":
            continue
        i0, i1 = np.searchsorted(s.t_ms, [lo_ms, hi_ms])
        le = float(s.label("le"))
        inc[le] = inc.get(le, 0.0) + float(s.values[i1 - 1] - s.values[i0])
    les = sorted(inc)
    total = inc[les[-1]]
    rank = 0.99 * total
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        if inc[le] >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / (inc[le] - prev_c)
        prev_le, prev_c = le, inc[le]
    return prev_le


def test_slow_query_p99_rises_tenfold_and_baseline_stays_calm() -> None:
    slow = cached_incident("slow_query")
    peak = next(p for p in slow.truth.phases if p.name == "peak")
    onset = slow.truth.onset_ms
    assert onset is not None
    base_p99 = p99_from_buckets(slow, 0, onset)
    peak_p99 = p99_from_buckets(slow, peak.start_ms, peak.end_ms)
    assert peak_p99 >= 10 * base_p99, (base_p99, peak_p99)
    calm = cached_incident("baseline")
    thirds = [p99_from_buckets(calm, k * 600_000, (k + 1) * 600_000) for k in range(3)]
    assert max(thirds) < 0.25 and max(thirds) / min(thirds) < 1.5, thirds
    assert not any(s.label("http_response_status_code").startswith("5")
                   for s in app_series(calm, HIST + "_count"))


def test_slow_query_pool_follows_littles_law() -> None:
    slow = cached_incident("slow_query")
    used = next(s for s in slow.iter_series("db_client_connections_usage_connections")
                if s.label("state") == "used")
    assert used.values.max() == 15  # pool_size 5 + max_overflow 10
    assert np.median(used.values[: len(used) // 4]) <= 2
    seq = next(s for s in slow.iter_series("pg_stat_user_tables_seq_scan")
               if s.label("relname") == "payments")
    rate = np.diff(seq.values)
    quarter = len(rate) // 4
    assert rate[quarter * 2 - 4: quarter * 2 + 4].mean() > 10 * max(rate[:quarter].mean(), 0.1)
    pg_lines = [line for st in slow.log_streams if dict(st.labels)["service_name"] == "postgres"
                for line in st.lines]
    assert any("LOG:  duration:" in line and "ms  execute <unnamed>: SELECT" in line
               for line in pg_lines)


def test_pool_exhaustion_pins_the_pool_and_times_out_at_the_pool_timeout() -> None:
    inc = cached_incident("pool_exhaustion")
    peak = next(p for p in inc.truth.phases if p.name == "peak")
    used = next(s for s in inc.iter_series("db_client_connections_usage_connections")
                if s.label("state") == "used")
    pending = next(inc.iter_series("db_client_connection_pending_requests"))
    in_peak = (used.t_ms >= peak.start_ms + 60_000) & (used.t_ms < peak.end_ms)
    assert np.mean(used.values[in_peak] == 15) > 0.9
    assert np.median(pending.values[in_peak]) >= 10
    timeouts = next(inc.iter_series("db_client_connection_timeouts_total"))
    assert timeouts.values[-1] > 100
    connects = np.array([(t.end_ns[i] - t.start_ns[i]) for t in inc.span_tables
                         for i in range(len(t)) if t.name[i] == "connect"
                         and t.status_code[i] == 2])
    # QueuePool gives up at pool_timeout (2 s here), noticed a little late by the thread
    assert connects.size and np.all((connects > 2 * 10**9) & (connects < 2.05 * 10**9))
    assert np.unique(connects).size > 0.99 * connects.size  # jittered, not one exact value


def test_app_records_are_what_loki_stores_from_otlp(incident: Incident) -> None:
    """One stream per resource (Loki's promoted resource attributes as labels); each
    record's trace context appears as Loki's fields and LoggingInstrumentor's, the same
    IDs; the SDK observes a record after it was created."""
    streams = [s for s in incident.log_streams
               if dict(s.labels).get("service_name") == "payment-service"]
    # one per process instance: a deploy brings a new pod
    assert len(streams) == 1 + (incident.scenario == "deploy_regression") * 2
    streams.sort(key=lambda st: int(st.t_ns[0]))  # the pod running at the window's start
    assert dict(streams[0].labels) == {
        "deployment_environment": "demo", "service_instance_id": "payment-service-7d9f8c6b5-x2x9k",
        "service_name": "payment-service", "service_namespace": "shop"}
    records = app_records(incident)
    assert len(records) > 1000
    scopes = set()
    for t, line, meta in records:
        if '"GET /metrics ' in line or meta["scope_name"] == "uvicorn.error":  # not traced
            assert "trace_id" not in meta and "flags" not in meta
            assert (meta["otelTraceID"], meta["otelSpanID"]) == ("0", "0")
        else:
            assert meta["trace_id"] == meta["otelTraceID"] and len(meta["trace_id"]) == 32
            assert meta["span_id"] == meta["otelSpanID"] and len(meta["span_id"]) == 16
        assert 0 < int(meta["observed_timestamp"]) - t < 20 * NS_PER_MS
        assert "level" not in meta and "detected_level" not in meta  # Loki adds that one
        scopes.add(meta["scope_name"])
        if meta["scope_name"] == "uvicorn.access":
            assert re.fullmatch(r'[\d.]+:\d+ - "(GET|POST) /\S* HTTP/1\.1" \d{3}', line), line
            assert meta["severity_text"] == "INFO" and meta["severity_number"] == "9"
        elif meta["scope_name"] == "uvicorn.error":  # a process stopping or starting
            assert line in STARTUP_LINES + SHUTDOWN_LINES
            assert meta["severity_text"] == "INFO" and incident.scenario in (
                "deploy_regression", "memory_leak")
        else:
            assert meta["severity_text"] == "ERROR" and meta["severity_number"] == "17"
            assert line.startswith(("POST /payment failed: ", "GET /payments/{payment_id} "
                                    "failed: "))
            qualified = line.split(" failed: ", 1)[1].split(": ", 1)[0]
            assert meta["exception_type"] == qualified.rsplit(".", 1)[1]
            assert meta["exception_stacktrace"].startswith("Traceback (most recent call last):")
            assert meta["exception_stacktrace"].endswith(f"{qualified}: "
                                                         f"{meta['exception_message']}\n")
    assert "uvicorn.access" in scopes


def test_every_request_has_one_access_record(incident: Incident) -> None:
    access = [r for r in app_records(incident) if r[2]["scope_name"] == "uvicorn.access"
              and '"GET /metrics ' not in r[1]]
    scrapes = [r for r in app_records(incident) if '"GET /metrics ' in r[1]]
    restarts = _restarts(incident)
    up = next(s for s in incident.iter_series("up") if s.label("job") == "payment-service")
    # one a scrape answered; the one at the window's end answers after it
    assert len(scrapes) == incident.duration_ms // incident.step_ms - int((up.values == 0).sum())
    total = sum(increase(s, restarts) for s in app_series(incident, HIST + "_count"))
    # what a process answered after its last scrape is in its logs, never in a sample
    start = next(app_series(incident, "process_start_time_seconds"))
    began = {int(f): float(v) for f, v in zip(start.t_ms, start.values)}
    unscraped = sum(1 for t, _, _ in access if any(
        last * NS_PER_MS < t < began[first] * 1e9 for last, first in restarts))
    # requests still in flight at the window's end have an access record and no count yet
    assert 0 <= len(access) - unscraped - total < 50


def test_a_window_too_short_for_the_reporting_job_still_generates() -> None:
    """A few minutes (a calibration run's window) can hold no run of the nightly-ish
    reporting job: its session is simply absent, nothing fails."""
    from generator import generate

    for seed in range(1, 6):
        inc = generate("connection_leak", seed=seed, duration_ms=200_000, step_ms=5000)
        report = [s for s in inc.iter_series("pg_stat_activity_count")
                  if s.label("application_name") == "reporting"]
        assert report and all(np.all(s.values >= 0) for s in report)


def test_slow_query_fix_makes_writes_wait_for_create_index() -> None:
    """The fix is a CREATE INDEX: until it commits, INSERTs wait for its lock (reads go
    on); its duration line and the logged waits are in PostgreSQL's log."""
    from generator import generate

    inc = generate("slow_query", seed=2, knobs={"index_build_s": 3.0})
    recovery = inc.truth.recovery_ms * 1_000_000
    pg = [line for s in inc.log_streams if dict(s.labels)["service_name"] == "postgres"
          for line in s.lines]
    fix = [line for line in pg if "statement: CREATE INDEX IF NOT EXISTS" in line]
    assert len(fix) == 1 and "duration: 3000.000 ms" in fix[0]
    waited = [line for line in pg if "parse <unnamed>: INSERT INTO payments" in line]
    assert waited
    inserts = [(int(t.start_ns[i]), int(t.end_ns[i])) for t in inc.span_tables
               for i in range(len(t)) if t.name[i] == "INSERT payments"]
    during = [(a, b) for a, b in inserts if recovery - 3_000_000_000 <= a < recovery]
    assert during and all(b >= recovery for _, b in during)  # none ends before the commit
    quick = generate("slow_query", seed=2, knobs={"index_build_s": 0.0})
    assert not any("CREATE INDEX" in line for s in quick.log_streams for line in s.lines)
