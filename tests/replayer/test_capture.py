"""capture's reading of live_app's incident switch and of OTLP log records."""

from __future__ import annotations

import responses
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from replayer.record.capture import _read_mode, log_streams

URL = "http://app/incident"


@responses.activate
def test_a_switch_is_dated_by_the_app_not_by_the_poll() -> None:
    """The capture polls every few seconds; live_app says when the fault was in place."""
    modes: list[tuple[int, str]] = []
    problems: list[str] = []
    start = 1_000_000
    responses.get(URL, json={"mode": "normal", "since": 900.0})
    _read_mode(URL, start + 100, start, modes, problems)
    responses.replace(responses.GET, URL, json={"mode": "slow_query", "since": 1_061.25})
    _read_mode(URL, start + 65_000, start, modes, problems)  # polled 3.75 s late
    # switching back: the index is being rebuilt, the mode is not in place yet
    responses.replace(responses.GET, URL, json={"mode": "normal", "since": None})
    _read_mode(URL, start + 150_000, start, modes, problems)
    assert modes[-1][1] == "slow_query"
    responses.replace(responses.GET, URL, json={"mode": "normal"})  # an app without `since`
    _read_mode(URL, start + 155_000, start, modes, problems)
    assert problems == []
    # before the capture began: its start; then the app's time; then the poll's
    assert modes == [(0, "normal"), (61_250, "slow_query"), (155_000, "normal")]


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def test_otlp_records_become_what_loki_stores() -> None:
    """Promoted resource attributes as labels; every other field as structured metadata
    with dots made underscores; times relative to the window start."""
    rec = LogRecord(time_unix_nano=5_000, observed_time_unix_nano=5_300, severity_number=17,
                    severity_text="ERROR", trace_id=bytes(range(16)), span_id=bytes(range(8)),
                    flags=3, body=AnyValue(string_value="POST /payment failed: x"),
                    attributes=[_kv("exception.type", "TimeoutError"), _kv("otelSpanID", "1")])
    rl = ResourceLogs(
        resource=Resource(attributes=[_kv("service.name", "payment-service"),
                                      _kv("service.version", "1.4.2"),
                                      _kv("service.instance.id", "pod-1")]),
        scope_logs=[ScopeLogs(log_records=[rec])])
    rl.scope_logs[0].scope.name = "payment_service.routes"
    [stream] = log_streams([rl], start_ns=1_000)
    assert dict(stream.labels) == {"service_name": "payment-service",
                                   "service_instance_id": "pod-1"}
    assert stream.t_ns.tolist() == [4_000] and stream.lines == ("POST /payment failed: x",)
    assert dict(stream.metadata[0]) == {
        "exception_type": "TimeoutError", "flags": "3", "observed_timestamp": "4300",
        "otelSpanID": "1", "scope_name": "payment_service.routes", "service_version": "1.4.2",
        "severity_number": "17", "severity_text": "ERROR",
        "span_id": bytes(range(8)).hex(), "trace_id": bytes(range(16)).hex()}


@responses.activate
def test_a_scrape_retries_once_on_a_connection_the_server_just_closed() -> None:
    import requests

    from replayer.record.capture import Scraper

    metrics = "# TYPE x gauge\nx 1\n"
    url = "http://app/metrics"
    responses.get(url, body=requests.ConnectionError("Connection reset by peer"))
    responses.get(url, body=metrics)
    s = Scraper([url], "payment-service")
    s.scrape(1000)
    assert s.failures == []
    responses.get(url, body=requests.ConnectionError("reset"))
    responses.get(url, body=requests.ConnectionError("refused"))
    s.scrape(2000)
    assert len(s.failures) == 1 and "refused" in s.failures[0]
    up = {ls: vs for ls, (_, vs) in s.samples.items() if dict(ls)["__name__"] == "up"}
    assert list(up.values()) == [[1.0, 0.0]]


@responses.activate
def test_each_target_can_be_a_job_of_its_own() -> None:
    from replayer.record.capture import Scraper, scrape_target

    assert scrape_target("postgres=http://db:9187/metrics", "app") == (
        "postgres", "http://db:9187/metrics")
    # an '=' in a bare URL's query is not a job
    assert scrape_target("http://app/metrics?x=1", "app") == ("app", "http://app/metrics?x=1")
    responses.get("http://app/metrics", body="# TYPE x gauge\nx 1\n")
    responses.get("http://db:9187/metrics", body="# TYPE pg_up gauge\npg_up 1\n")
    s = Scraper(["http://app/metrics", "postgres=http://db:9187/metrics"], "payment-service")
    s.scrape(1000)
    jobs = {(dict(ls)["__name__"], dict(ls)["job"], dict(ls)["instance"]) for ls in s.samples}
    assert jobs == {("x", "payment-service", "app"), ("up", "payment-service", "app"),
                    ("pg_up", "postgres", "db:9187"), ("up", "postgres", "db:9187")}


@responses.activate
def test_counters_keep_the_names_they_were_exposed_under() -> None:
    """Prometheus stores a counter sample under the name the target wrote; postgres_exporter
    0.11 writes pg_stat_database columns without `_total`, the app's counters with it."""
    from replayer.record.capture import Scraper

    responses.get("http://db/metrics", body=(
        "# HELP pg_stat_database_xact_commit Number of transactions committed\n"
        "# TYPE pg_stat_database_xact_commit counter\n"
        'pg_stat_database_xact_commit{datname="payments"} 15\n'
        "# HELP pg_stat_bgwriter_buffers_alloc_total Buffers allocated\n"
        "# TYPE pg_stat_bgwriter_buffers_alloc_total counter\n"
        "pg_stat_bgwriter_buffers_alloc_total 1852\n"))
    s = Scraper(["postgres=http://db/metrics"], "app")
    s.scrape(1000)
    names = {dict(ls)["__name__"] for ls in s.samples}
    assert names == {"pg_stat_database_xact_commit", "pg_stat_bgwriter_buffers_alloc_total",
                     "up"}
    assert s.families["pg_stat_database_xact_commit"].name == "pg_stat_database_xact_commit"
    assert s.families["pg_stat_bgwriter_buffers_alloc"].name == \
        "pg_stat_bgwriter_buffers_alloc_total"
