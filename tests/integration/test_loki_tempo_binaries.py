"""`load slow_query` into real Loki and Tempo started from the repo's configs.

Skipped with the reason when the binaries are not on PATH (LOKI_BIN / TEMPO_BIN)."""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from replayer.cli import cli
from tests.conftest import BUILT_IN, cached_incident

from .backends import eventually, running_loki, running_tempo
from .test_prometheus_load import fixed_end_ms, iso

pytestmark = pytest.mark.integration


def test_logs_of_an_example_trace_are_found_by_logql(tmp_path: Path) -> None:
    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    with running_loki(tmp_path) as loki:
        r = CliRunner().invoke(cli, ["load", "slow_query", "--signals", "logs", "--end",
                                     iso(end_ms), "--loki-url", loki])
        assert r.exit_code == 0, r.output
        tid = inc.truth.example_trace_ids[0]
        want = sorted(line for s in inc.log_streams for line, meta in zip(s.lines, s.metadata)
                      if dict(meta).get("trace_id") == tid)

        def lines() -> list[str]:
            resp = requests.get(f"{loki}/loki/api/v1/query_range", params={
                "query": f'{{service_name="payment-service"}} | trace_id="{tid}"',
                "start": (end_ms - inc.duration_ms) * 10**6, "end": (end_ms + 1000) * 10**6,
                "limit": 1000, "direction": "forward"}, timeout=30).json()
            return sorted(v[1] for s in resp["data"]["result"] for v in s["values"])

        got = eventually(lambda: lines() == want and want)
        assert got, (lines(), want)


def test_traces_found_by_id_and_by_traceql_search(tmp_path: Path) -> None:
    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    with running_tempo(tmp_path) as (otlp, api):
        r = CliRunner().invoke(cli, ["load", "slow_query", "--signals", "traces", "--end",
                                     iso(end_ms), "--tempo-url", otlp])
        assert r.exit_code == 0, r.output
        tid = inc.truth.example_trace_ids[0]
        want = sorted(t.span_id[i].tobytes().hex() for t in inc.span_tables
                      for i in range(len(t)) if t.trace_id[i].tobytes().hex() == tid)

        def span_ids() -> list[str]:
            body = requests.get(f"{api}/api/v2/traces/{tid}", timeout=30).json()
            return sorted(base64.b64decode(sp["spanId"]).hex()
                          for rs in body.get("trace", {}).get("resourceSpans", [])
                          for ss in rs["scopeSpans"] for sp in ss["spans"])

        assert eventually(lambda: span_ids() == want), (span_ids(), want)

        def found() -> set[str]:
            q = ('{ resource.service.name = "payment-service" && name = "POST /payment" '
                 '&& duration > 1s }')
            body = requests.get(f"{api}/api/search", params={
                "q": q, "start": (end_ms - inc.duration_ms) // 1000, "end": end_ms // 1000 + 1,
                "limit": 50}, timeout=30).json()
            return {t["traceID"].rjust(32, "0") for t in body.get("traces", [])}

        hits = eventually(found)
        traces = {t.trace_id[i].tobytes().hex() for t in inc.span_tables for i in range(len(t))}
        assert hits and hits <= traces


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(datasource, panel, query) of every target of the provisioned dashboards."""
    import json

    from .test_stack_and_dashboards import DASHBOARDS

    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for t in panel["targets"]:
                out.append((t["datasource"]["uid"], f"{path.stem}: {panel['title']}",
                            t.get("expr") or t["query"]))
    return out


def test_stack_up_then_every_dashboard_query_of_all_three_backends_has_data(
        tmp_path: Path) -> None:
    """`stack up` starts Prometheus, Loki and Tempo from the repo configs; after one
    `load slow_query` of every signal, every panel query (PromQL, LogQL, TraceQL) of the
    provisioned dashboards returns data over the replayed window."""
    import re

    from .backends import binary
    from .prometheus_server import free_port, query_range

    binary("loki")
    binary("tempo")
    ports = {"--prometheus-port": free_port(), "--loki-port": free_port(),
             "--tempo-port": free_port(), "--tempo-otlp-grpc-port": free_port(),
             "--tempo-otlp-http-port": free_port()}
    args = [x for k, v in ports.items() for x in (k, str(v))]
    prom, loki, tempo = (f"http://127.0.0.1:{ports[k]}" for k in
                         ("--prometheus-port", "--loki-port", "--tempo-port"))
    data = str(tmp_path / "s")
    runner = CliRunner()
    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    start_ms = end_ms - inc.duration_ms
    try:
        r = runner.invoke(cli, ["stack", "up", "--data-dir", data, *args])
        assert r.exit_code == 0, r.output
        status = runner.invoke(cli, ["stack", "status", "--data-dir", data])
        for name in ("prometheus", "loki", "tempo"):
            assert f"{name:<11} ready" in status.output, status.output
        r = runner.invoke(cli, ["load", "slow_query", "--end", iso(end_ms),
                                "--prometheus-url", prom, "--loki-url", loki, "--tempo-url",
                                f"http://127.0.0.1:{ports['--tempo-otlp-grpc-port']}"])
        assert r.exit_code == 0, r.output
        # slow_query has no 5xx (neither has live_app's): the error panels get theirs from
        # an error_spike laid beside it as a separate copy
        r = runner.invoke(cli, ["load", "error_spike", "--end", iso(end_ms), "--label",
                                "run=errors", "--trace-id-salt", "errors",
                                "--prometheus-url", prom, "--loki-url", loki, "--tempo-url",
                                f"http://127.0.0.1:{ports['--tempo-otlp-grpc-port']}"])
        assert r.exit_code == 0, r.output

        def has_data(source: str, query: str) -> bool:
            if source == "prometheus":
                promql = re.sub(r"\$__rate_interval", "1m", query)
                return bool(query_range(prom, promql, start_ms / 1000, end_ms / 1000, 15))
            if source == "loki":
                body = requests.get(f"{loki}/loki/api/v1/query_range", params={
                    "query": query, "start": start_ms * 10**6, "end": (end_ms + 1) * 10**6,
                    "limit": 10}, timeout=30).json()
                return bool(body["data"]["result"])
            body = requests.get(f"{tempo}/api/search", params={
                "q": query, "start": start_ms // 1000, "end": end_ms // 1000 + 1,
                "limit": 20}, timeout=30).json()
            return bool(body.get("traces"))

        queries = dashboard_queries()
        assert {q[0] for q in queries} == {"prometheus", "loki", "tempo"}
        empty = [f"{src} {title}: {q}" for src, title, q in queries
                 if not eventually(lambda s=src, x=q: has_data(s, x), timeout_s=60)]
        assert not empty, "panels without data:\n" + "\n".join(empty)
    finally:
        runner.invoke(cli, ["stack", "down", "--data-dir", data, "--timeout", "10"])


def _entries(inc) -> set[tuple]:  # type: ignore[no-untyped-def,type-arg]
    return {(s.labels, int(t), line, meta) for s in inc.log_streams
            for t, line, meta in zip(s.t_ns.tolist(), s.lines, s.metadata)}


def _spans(inc) -> set[tuple]:  # type: ignore[no-untyped-def,type-arg]
    return {(tuple(sorted(t.resource)), t.scope_name, t.trace_id[i].tobytes(),
             t.span_id[i].tobytes(), t.parent_span_id[i].tobytes(), t.name[i],
             int(t.start_ns[i]), int(t.end_ns[i]), int(t.kind[i]), int(t.status_code[i]),
             t.status_message[i], tuple(sorted(t.attributes[i])),
             tuple((e.name, e.t_ns, tuple(sorted(e.attributes))) for e in t.events[i]))
            for t in inc.span_tables for i in range(len(t))}


def test_record_reads_back_exactly_what_was_loaded_into_loki_and_tempo(tmp_path: Path) -> None:
    """load -> record through the real Loki and Tempo: every log entry (labels, time, line,
    structured metadata) and every span (ids, times, attributes, events, resource) comes
    back once, and a second identical load changes nothing that is read back."""
    from generator import generate
    from replayer.recording import read_recording
    from replayer.timeshift import shift

    inc = generate("slow_query", seed=1, duration_ms=600_000)  # 10 min: ~1,200 traces
    end_ms = fixed_end_ms()
    start_ms = end_ms - inc.duration_ms
    want = shift(inc, end_ms * 1_000_000)
    traces = {t.trace_id[i].tobytes() for t in inc.span_tables for i in range(len(t))}
    with running_loki(tmp_path) as loki, running_tempo(tmp_path) as (otlp, api):
        def searchable() -> bool:  # Tempo indexes pushed traces for search after a while
            body = requests.get(f"{api}/api/search", params={
                "q": "{ }", "start": start_ms // 1000, "end": end_ms // 1000 + 1,
                "limit": 100_000}, timeout=30).json()
            return len(body.get("traces", [])) == len(traces)

        for attempt in range(2):  # the second load re-sends the same entries and spans
            r = CliRunner().invoke(cli, [
                "load", "slow_query", "--duration", "10m", "--signals", "logs,traces",
                "--end", iso(end_ms), "--loki-url", loki, "--tempo-url", otlp])
            assert r.exit_code == 0, r.output
            assert eventually(searchable, timeout_s=120), "Tempo did not index every trace"
            out = tmp_path / f"rec{attempt}.jsonl.gz"
            r = CliRunner().invoke(cli, [
                "record", "--start", iso(start_ms), "--end", iso(end_ms), "--signals",
                "logs,traces", "--loki-url", loki, "--tempo-url", api,
                "--trace-limit", "100000", "-o", str(out)])
            assert r.exit_code == 0, r.output
            got = shift(read_recording(out), end_ms * 1_000_000)
            assert _entries(got) == _entries(want)
            assert _spans(got) == _spans(want)


def test_pytest_plugin_with_all_three_signals_into_real_servers(pytester: pytest.Pytester,
                                                                tmp_path: Path) -> None:
    """Two tests load the same scenario through the `replayed_incident` fixture into one
    Prometheus, Loki and Tempo; each one's ground-truth LogQL (scoped to its run label)
    finds its lines, and each one's example trace is its own, found by ID."""
    from .prometheus_server import running_prometheus

    pytester.makepyfile(test_it="""
        import os, time, pytest, requests

        def check(r):
            r.raise_for_loss()
            start = int(r.window_start.timestamp() * 1e9)
            end = int(r.window_end.timestamp() * 1e9) + 1
            for what, q in r.truth.logql:
                body = requests.get(r.targets.loki + "/loki/api/v1/query_range", params={
                    "query": q, "start": start, "end": end, "limit": 10}, timeout=30).json()
                assert body["data"]["result"], (what, q)
            tid = r.truth.example_trace_ids[0]
            for _ in range(60):
                got = requests.get(os.environ["TEMPO_API"] + "/api/v2/traces/" + tid, timeout=30)
                if got.status_code == 200:
                    return tid
                time.sleep(1)
            raise AssertionError("example trace not found by ID: " + tid)

        seen = []

        @pytest.mark.replayer("slow_query", seed=1)
        def test_one(replayed_incident):
            seen.append(check(replayed_incident))

        @pytest.mark.replayer("slow_query", seed=1)
        def test_two(replayed_incident):
            seen.append(check(replayed_incident))
            assert seen[0] != seen[1]  # each load its own trace IDs
    """)
    with running_prometheus(tmp_path / "p") as prom, running_loki(tmp_path) as loki, \
            running_tempo(tmp_path) as (otlp, api):
        pytester._monkeypatch.setenv("TEMPO_API", api)
        result = pytester.runpytest("-p", "no:cacheprovider", f"--replayer-prometheus-url={prom}",
                                    f"--replayer-loki-url={loki}", f"--replayer-tempo-url={otlp}")
    result.assert_outcomes(passed=2)


def test_loki_stores_live_app_otlp_records_as_the_generator_writes_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """live_app's real SDK exports OTLP records into Loki's OTLP endpoint; `load` pushes the
    generated ones through the push API. Loki must hold the same stream labels and the same
    structured-metadata fields for each kind of record (access line, handler error)."""
    from fastapi.testclient import TestClient

    from live_app.app import create_app
    from live_app.settings import Settings

    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "100")
    end_ms = fixed_end_ms()
    gen = cached_incident("error_spike")

    def stored(loki: str, query: str, start_ns: int, end_ns: int) -> dict[str, set[str]]:
        """scope name -> the label and field sets Loki answers for its records."""
        resp = requests.get(f"{loki}/loki/api/v1/query_range", params={
            "query": query, "start": start_ns, "end": end_ns, "limit": 500},
            headers={"X-Loki-Response-Encoding-Flags": "categorize-labels"}, timeout=30)
        out: dict[str, set[str]] = {}
        for s in resp.json()["data"]["result"]:
            for v in s["values"]:
                meta = v[2].get("structuredMetadata", {}) if len(v) > 2 else {}
                out.setdefault(meta.get("scope_name", "?"), set()).add(
                    ",".join(sorted(s["stream"])) + " | " + ",".join(sorted(meta)))
        return out

    with running_loki(tmp_path) as loki:
        settings = Settings(database_url=f"sqlite:///{tmp_path / 'p.db'}",
                            incident_mode="error_spike", error_ratio=0.5,
                            otlp_logs_endpoint=f"{loki}/otlp/v1/logs",
                            otlp_logs_protocol="http/protobuf",
                            resource_attributes="service.name=live-app-check,"
                                                "service.namespace=shop,"
                                                "service.version=1.4.2,"
                                                "deployment.environment=demo")
        live_start = time.time_ns()
        app = create_app(settings)
        access = logging.getLogger("uvicorn.access")
        monkeypatch.setattr(access, "level", logging.INFO)
        with TestClient(app) as client:
            codes = {client.post("/payment", json={"amount": "3.00"}).status_code
                     for _ in range(12)}
            # TestClient bypasses uvicorn: write its access line as uvicorn does, inside the
            # server span (uvicorn logs it when the app sends the response start)
            tracer = app.state.telemetry.tracer_provider.get_tracer("check")
            with tracer.start_as_current_span("POST /payment"):
                access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:50000", "POST", "/payment",
                            "1.1", 200)
        assert codes == {200, 500}
        r = CliRunner().invoke(cli, ["load", "error_spike", "--signals", "logs", "--end",
                                     iso(end_ms), "--loki-url", loki])
        assert r.exit_code == 0, r.output
        gen_start = (end_ms - gen.duration_ms) * 10**6
        for scope in ("payment_service.routes", "uvicorn.access"):
            live_q = f'{{service_name="live-app-check"}} | scope_name="{scope}"'
            gen_q = (f'{{service_name="payment-service"}} | scope_name="{scope}" '
                     '!= "GET /metrics"')  # scrapes: no trace context, none in the live run
            live = eventually(lambda q=live_q: stored(loki, q, live_start,
                                                      time.time_ns() + 10**9))
            replayed = eventually(lambda q=gen_q: stored(loki, q, gen_start,
                                                         (end_ms + 1000) * 10**6))
            assert live and live == replayed, scope


def test_traceql_on_live_app_attributes_finds_each_incident(tmp_path: Path) -> None:
    """TraceQL written against what live_app's instrumentation writes (span.db.operation,
    span.db.statement, span.server.address, kind, status) finds the generated incidents in
    a real Tempo, and every ground-truth TraceQL query of those scenarios has hits."""
    end_ms = fixed_end_ms()
    queries = {
        "slow_query": ['{ span.db.operation = "SELECT payments" && span.server.address = '
                       '"postgres" && duration > 500ms }'],
        "error_spike": ['{ span.server.address = "card-processor" && kind = client && '
                        'status = error }', '{ kind = server && status = error }'],
        "pool_exhaustion": ['{ kind = internal && name = "fraud check" && duration > 1s }'],
        "connection_leak": [],
        "upstream_latency": ['{ span.server.address = "card-processor" && kind = client && '
                             'duration > 1s }'],
        "lock_contention": [], "too_many_clients": [], "noisy_neighbour": [],
        "deploy_regression": ['{ resource.service.version = "1.5.0" }'], "memory_leak": [],
        "disk_full": [],
    }
    for scenario, extra in queries.items():  # one Tempo each: no hit from a neighbour
        inc = cached_incident(scenario)
        (tmp_path / scenario).mkdir()
        with running_tempo(tmp_path / scenario) as (otlp, api):
            r = CliRunner().invoke(cli, ["load", scenario, "--signals", "traces", "--end",
                                         iso(end_ms), "--tempo-url", otlp])
            assert r.exit_code == 0, r.output
            for q in extra + [q for _, q in inc.truth.traceql]:
                def hits(q: str = q, start_s: int = (end_ms - inc.duration_ms) // 1000) -> int:
                    body = requests.get(f"{api}/api/search", params={
                        "q": q, "start": start_s,
                        "end": end_ms // 1000 + 1, "limit": 20}, timeout=30).json()
                    return len(body.get("traces", []))

                assert eventually(hits, timeout_s=120), (scenario, q)


@pytest.mark.parametrize("scenario", [s for s in BUILT_IN if s != "baseline"])
def test_every_ground_truth_logql_finds_the_incident(tmp_path: Path, scenario: str) -> None:
    """Each scenario's LogQL, as its ground truth gives it, against a real Loki holding that
    scenario alone: every query has lines, and those of the fault (all but the example
    trace's) fall inside the incident."""
    inc = cached_incident(scenario)
    end_ms = fixed_end_ms()
    start_ms = end_ms - inc.duration_ms
    onset = start_ms + (inc.truth.onset_ms or 0)
    with running_loki(tmp_path) as loki:
        r = CliRunner().invoke(cli, ["load", scenario, "--signals", "logs", "--end",
                                     iso(end_ms), "--loki-url", loki])
        assert r.exit_code == 0, r.output
        for what, q in inc.truth.logql:
            def times(q: str = q) -> list[int]:
                resp = requests.get(f"{loki}/loki/api/v1/query_range", params={
                    "query": q, "start": start_ms * 10**6, "end": (end_ms + 1000) * 10**6,
                    # the earliest lines are what is checked; error records carry their
                    # stack traces, so a few hundred of them is already megabytes
                    "limit": 200, "direction": "forward"}, timeout=120).json()
                return [int(v[0]) // 10**6 for st in resp["data"]["result"]
                        for v in st["values"]]

            got = eventually(times, timeout_s=60)
            assert got, (scenario, what, q)
            if "trace_id=" not in q:
                assert min(got) >= onset - 60_000, (scenario, what, (min(got) - onset) / 1000)


def test_the_compose_health_check_of_tempo_passes_on_a_ready_tempo(tmp_path: Path) -> None:
    """The compose file checks Tempo with its own binary (its image has no wget): the
    exact argv of that health check, pointed at a real Tempo, exits 0 once it is ready,
    and 1 where nothing listens."""
    import subprocess

    import yaml

    from .backends import ROOT, binary
    from .prometheus_server import free_port

    compose = yaml.safe_load((ROOT / "infra/docker-compose.yml").read_text())
    form, program, *args = compose["services"]["tempo"]["healthcheck"]["test"]
    assert (form, program) == ("CMD", "/tempo")
    with running_tempo(tmp_path) as (_otlp, api):
        argv = [binary("tempo")] + [a.replace("http://localhost:3200", api) for a in args]
        ok = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        down = [a.replace(api, f"http://127.0.0.1:{free_port()}") for a in argv]
        bad = subprocess.run(down, capture_output=True, text=True, timeout=30)
        assert bad.returncode == 1 and "Health check failed" in bad.stderr, bad.stderr


@pytest.mark.parametrize("copies", [1, 2])
def test_verify_reads_back_loki_and_tempo(tmp_path: Path, copies: int) -> None:
    """--verify against real Loki and Tempo: every line counted back by LogQL, and a sample
    of traces fetched by ID with all their spans; with --instances, every copy's."""
    from generator import generate

    lines = sum(generate("slow_query", seed=1 + i, duration_ms=600_000,
                         signals=("logs",)).log_line_count for i in range(copies))
    end_ms = fixed_end_ms()
    with running_loki(tmp_path) as loki, running_tempo(tmp_path) as (otlp, api):
        r = CliRunner().invoke(cli, [
            "load", "slow_query", "--duration", "10m", "--signals", "logs,traces", "--end",
            iso(end_ms), "--loki-url", loki, "--tempo-url", otlp, "--tempo-api-url", api,
            "--verify", "--instances", str(copies)])
        assert r.exit_code == 0, r.output
        assert f"note: verify: the server holds all {lines} lines" in r.output
        assert r.output.count("note: verify: the server holds all ") == 2
        assert f"spans of {25 * copies} sampled traces" in r.output
