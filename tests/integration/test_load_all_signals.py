"""One `load` fills all three backends: the real Prometheus, a real in-process OTLP gRPC
server (opentelemetry-proto's stubs) standing in for Tempo, and Loki's captured answers
(no Loki binary here; see test_loki_tempo_binaries.py for the real one)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cramjam
import pytest
import responses
from click.testing import CliRunner

from replayer.cli import cli
from replayer.loki import push_pb2
from tests.conftest import cached_incident
from tests.replayer.test_otlp_push import Collector, collector_server  # noqa: F401

from .prometheus_server import query, running_prometheus
from .test_prometheus_load import iso

pytestmark = pytest.mark.integration
LOKI = "http://loki.test:3100"


def _loki_mock(rsps: responses.RequestsMock, pushed: list[push_pb2.PushRequest]) -> None:
    rsps.get(f"{LOKI}/ready", body="ready")
    rsps.get(f"{LOKI}/loki/api/v1/status/buildinfo", json={"version": "3.7.6"})
    rsps.get(f"{LOKI}/config", body="limits_config:\n  allow_structured_metadata: true\n")

    def push(request):  # type: ignore[no-untyped-def]
        pushed.append(push_pb2.PushRequest.FromString(
            bytes(cramjam.snappy.decompress_raw(request.body))))
        return 204, {}, ""

    rsps.add_callback(responses.POST, f"{LOKI}/loki/api/v1/push", callback=push)


def test_one_load_fills_all_three_and_logs_join_traces(tmp_path: Path,
                                                       collector_server) -> None:  # noqa: F811
    inc = cached_incident("slow_query")
    now_ms = time.time_ns() // 1_000_000
    end_ms = now_ms - now_ms % 60_000
    collector = Collector()
    tempo = collector_server(collector)
    pushed: list[push_pb2.PushRequest] = []
    with running_prometheus(tmp_path) as prom, responses.RequestsMock() as rsps:
        rsps.add_passthru(prom)
        _loki_mock(rsps, pushed)
        r = CliRunner().invoke(cli, ["load", "slow_query", "--end", iso(end_ms), "--json",
                                     "--prometheus-url", prom, "--loki-url", LOKI,
                                     "--tempo-url", tempo, "--loki-rate-mb", "0"])
        assert r.exit_code == 0, r.output
        summary = {s["signal"]: s for s in json.loads(r.output)["signals"]}
        assert summary["metrics"]["accepted"] == inc.sample_count
        assert summary["logs"]["accepted"] == inc.log_line_count
        assert summary["traces"]["accepted"] == inc.span_count
        up = query(prom, 'count(up{job="payment-service"})', end_ms / 1000)
        assert up[0]["value"][1] == "1"
    lines = [(e, s.labels) for p in pushed for s in p.streams for e in s.entries]
    assert len(lines) == inc.log_line_count
    traced = {m.value for e, _ in lines for m in e.structuredMetadata if m.name == "trace_id"}
    received = {sp.trace_id.hex() for req in collector.requests for rs in req.resource_spans
                for ss in rs.scope_spans for sp in ss.spans}
    assert traced and traced <= received
    first = min(e.timestamp.seconds * 10**9 + e.timestamp.nanos for e, _ in lines)
    assert first >= (end_ms - inc.duration_ms) * 1_000_000


def test_unreachable_loki_and_tempo_still_load_metrics(tmp_path: Path) -> None:
    from tests.integration.prometheus_server import free_port

    now_ms = time.time_ns() // 1_000_000
    end_ms = now_ms - now_ms % 60_000
    with running_prometheus(tmp_path) as prom:
        r = CliRunner().invoke(cli, ["load", "baseline", "--end", iso(end_ms),
                                     "--prometheus-url", prom,
                                     "--loki-url", f"http://127.0.0.1:{free_port()}",
                                     "--tempo-url", f"http://127.0.0.1:{free_port()}"])
        assert r.exit_code == 4, r.output
        assert "cannot reach Loki" in r.output and "--signals metrics,traces" in r.output
        assert "cannot reach Tempo" in r.output
        inc = cached_incident("baseline")
        assert f"accepted {inc.sample_count}" in r.output
        assert query(prom, 'count(up{job="payment-service"})', end_ms / 1000)


def test_follow_pushes_all_three_signals_step_by_step(tmp_path: Path,
                                                       collector_server) -> None:  # noqa: F811
    from replayer.load import LoadRequest, Targets, run_load
    from replayer.loki.push import LokiOptions
    from replayer.transport import TargetConfig

    from .test_prometheus_load import FakeClock, baseline_10m

    collector = Collector()
    tempo = collector_server(collector)
    pushed: list[push_pb2.PushRequest] = []
    clock = FakeClock()
    with running_prometheus(tmp_path) as prom, responses.RequestsMock() as rsps:
        rsps.add_passthru(prom)
        _loki_mock(rsps, pushed)
        req = LoadRequest(source="baseline", duration_ms=600_000, follow=True,
                          live_from_ms=300_000, loki=LokiOptions(rate_bytes_s=0),
                          targets=Targets(prometheus=TargetConfig(prom),
                                          loki=TargetConfig(LOKI), tempo=TargetConfig(tempo)))
        result = run_load(req, now_ns=clock, sleep=clock.sleep)
    reports = {r.signal: r for r in result.reports}
    full = baseline_10m()
    assert not any(r.lost for r in reports.values())
    assert reports["metrics"].accepted == full.sample_count
    assert reports["logs"].accepted == full.log_line_count
    assert reports["traces"].accepted == full.span_count
    stamps = sorted(e.timestamp.seconds for p in pushed for s in p.streams for e in s.entries)
    assert len(stamps) == full.log_line_count
    assert len(collector.requests) > 10  # the live part went step by step
