"""`replayer record`, `capture`, `stack` and `traffic`: the commands that work with live
systems (registered on the main group in cli.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from .cli_common import duration_ms as _duration_ms
from .cli_common import signals as _signals
from .cli_common import target as _target
from .errors import TransportError, UsageError
from .recording import counts, write_recording
from .transport import TargetConfig


@click.command("record")
@click.option("--last", help="Record the last D (e.g. 15m), ending now.")
@click.option("--start", help="Window start, RFC 3339 (with --end).")
@click.option("--end", help="Window end, RFC 3339 (with --start).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option("--signals", default="metrics,logs,traces", show_default=True)
@click.option("--prometheus-url", envvar="PROMETHEUS_URL", default="http://localhost:9090",
              show_default=True)
@click.option("--loki-url", envvar="LOKI_URL", default="http://localhost:3100",
              show_default=True)
@click.option("--tempo-url", envvar="TEMPO_QUERY_URL", default="http://localhost:3200",
              show_default=True, help="Tempo's HTTP API (not the OTLP port) [TEMPO_QUERY_URL].")
@click.option("--match", "matchers", multiple=True,
              help="Series selector (repeatable); default every series with a job.")
@click.option("--logql", default='{service_name=~".+"}', show_default=True)
@click.option("--traceql", default="{ }", show_default=True)
@click.option("--trace-limit", type=click.IntRange(1, 262_144), default=1000,
              show_default=True)
@click.option("--name", default="recorded", show_default=True,
              help="Name stored as the recording's scenario.")
@click.option("--tenant", envvar="REPLAYER_TENANT")
@click.option("--bearer-token", envvar="REPLAYER_BEARER_TOKEN")
@click.option("--basic-auth", envvar="REPLAYER_BASIC_AUTH", metavar="USER:PASSWORD")
def record_cmd(last: str | None, start: str | None, end: str | None, output: str,
               signals: str, prometheus_url: str, loki_url: str, tempo_url: str,
               matchers: tuple[str, ...], logql: str, traceql: str, trace_limit: int,
               name: str, tenant: str | None, bearer_token: str | None,
               basic_auth: str | None) -> None:
    """Record a window of a live stack into a recording (times relative to its start)."""
    import time

    from .record.run import RecordRequest, run_record
    from .timeshift import parse_end

    if bool(last) == bool(start or end) or (start is None) != (end is None):
        raise UsageError("give either --last D, or both --start and --end")
    if last:
        span = _duration_ms(last, "--last")
        assert span is not None
        end_ms = time.time_ns() // 1_000_000
        start_ms = end_ms - span
    else:
        assert start is not None and end is not None
        start_ms = parse_end(start, 0, 1000)[0] // 1_000_000
        end_ms = parse_end(end, 0, 1000)[0] // 1_000_000
        if end_ms <= start_ms:
            raise UsageError("--end must be after --start")

    def target(url: str) -> TargetConfig:
        return _target(url, tenant, basic_auth, bearer_token, (), None, None, None, False)

    req = RecordRequest(start_ms=start_ms, end_ms=end_ms, signals=_signals(signals),
                        prometheus=target(prometheus_url), loki=target(loki_url),
                        tempo=target(tempo_url), matchers=matchers or ('{job=~".+"}',),
                        logql=logql, traceql=traceql, trace_limit=trace_limit, name=name)
    incident, report = run_record(req)
    write_recording(incident, output)
    c = counts(incident)
    click.echo(f"wrote {output}: {c['series']} series, {c['samples']} samples, "
               f"{c['log_lines']} log lines, {c['spans']} spans ({report.requests} requests)")
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    if not report.complete:
        click.echo("error: the recording is incomplete (see above); what could be read was "
                   "written", err=True)
        sys.exit(1)


@click.command("capture")
@click.option("--duration", required=True, help="How long to capture, e.g. 2m.")
@click.option("--scrape", "scrape_urls", multiple=True,
              help="A /metrics URL to scrape (repeatable); JOB=URL scrapes it as job JOB "
                   "(e.g. postgres=http://127.0.0.1:9187/metrics).")
@click.option("--interval", default="15s", show_default=True, help="Scrape interval.")
@click.option("--job", default="payment-service", show_default=True,
              help="The job label the scraped series get.")
@click.option("--otlp-grpc", default="127.0.0.1:4317", show_default=True,
              help="Where to receive OTLP over gRPC ('off' to disable).")
@click.option("--otlp-http", default="127.0.0.1:4318", show_default=True,
              help="Where to receive OTLP over HTTP ('off' to disable).")
@click.option("--drain", default="6s", show_default=True,
              help="Keep receiving this long after the end (SDKs export in batches).")
@click.option("--incident-url", help="live_app's /incident: its mode switches become the "
              "recording's ground truth.")
@click.option("--postgres-log", type=click.Path(exists=True, dir_okay=False),
              help="A PostgreSQL server log (log_line_prefix '%m [%p] '): its lines in the "
                   "window become the postgresql log streams.")
@click.option("--name", default="captured", show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
def capture_cmd(duration: str, scrape_urls: tuple[str, ...], interval: str, job: str,
                otlp_grpc: str, otlp_http: str, drain: str, incident_url: str | None,
                postgres_log: str | None, name: str, output: str) -> None:
    """Record a live app directly: an OTLP receiver plus a /metrics scraper."""
    from .record.capture import CaptureOptions, run_capture

    def seconds(value: str, flag: str) -> float:
        ms = _duration_ms(value, flag)
        assert ms is not None
        return ms / 1000

    opts = CaptureOptions(
        duration_s=seconds(duration, "--duration"), scrape_urls=scrape_urls,
        interval_s=seconds(interval, "--interval"), job=job,
        grpc_addr=None if otlp_grpc == "off" else otlp_grpc,
        http_addr=None if otlp_http == "off" else otlp_http,
        drain_s=seconds(drain, "--drain") if drain not in ("0", "0s") else 0.0,
        incident_url=incident_url, name=name, postgres_log=postgres_log)
    try:
        incident, problems = run_capture(opts, ready=lambda r: click.echo(
            f"receiving OTLP on grpc :{r.grpc_port} http :{r.http_port}; scraping "
            f"{', '.join(scrape_urls) or 'nothing'}", err=True))
    except OSError as exc:
        raise UsageError(f"cannot start the capture: {exc}; pick other --otlp-grpc / "
                         "--otlp-http addresses") from None
    write_recording(incident, output)
    c = counts(incident)
    click.echo(f"wrote {output}: {c['series']} series, {c['samples']} samples, "
               f"{c['log_lines']} log lines, {c['spans']} spans")
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        sys.exit(1)


@click.group("stack")
def stack_group() -> None:
    """Run Prometheus, Loki and Tempo locally (binaries from PATH), without Docker."""


def _data_dir(value: str | None) -> Path:
    import tempfile

    return Path(value) if value else Path(tempfile.gettempdir()) / "telemetry-replayer-stack"


_data_dir_option = click.option(
    "--data-dir", envvar="REPLAYER_STACK_DIR",
    help="Where data, logs and stack.json go (default: <tmp>/telemetry-replayer-stack).")


@stack_group.command("up")
@_data_dir_option
@click.option("--prometheus-port", type=int, default=9090, show_default=True)
@click.option("--loki-port", type=int, default=3100, show_default=True)
@click.option("--tempo-port", type=int, default=3200, show_default=True)
@click.option("--tempo-otlp-grpc-port", type=int, default=4317, show_default=True)
@click.option("--tempo-otlp-http-port", type=int, default=4318, show_default=True)
@click.option("--loki-grpc-port", type=int, default=None,
              help="Loki's internal gRPC port [9096 with the default --loki-port, else a "
                   "free one].")
@click.option("--tempo-grpc-port", type=int, default=None,
              help="Tempo's internal gRPC port [9095 with the default --tempo-port, else a "
                   "free one].")
@click.option("--scrape", "scrape", multiple=True, metavar="JOB=HOST:PORT",
              help="Have Prometheus scrape this /metrics too, e.g. "
                   "payment-service=127.0.0.1:8000 for a running live_app (repeatable).")
def stack_up(data_dir: str | None, prometheus_port: int, loki_port: int, tempo_port: int,
             tempo_otlp_grpc_port: int, tempo_otlp_http_port: int, loki_grpc_port: int | None,
             tempo_grpc_port: int | None, scrape: tuple[str, ...]) -> None:
    """Start what is installed, wait until it is ready, print the URLs."""
    from .stack import Ports, free_port, parse_scrape, up

    jobs = dict(parse_scrape(v) for v in scrape)

    def internal(given: int | None, http: int, default_http: int, default: int) -> int:
        # a second stack on other HTTP ports must not collide on the internal ones
        return given if given is not None else default if http == default_http else free_port()

    ports = Ports(prometheus=prometheus_port, loki=loki_port,
                  loki_grpc=internal(loki_grpc_port, loki_port, 3100, 9096),
                  tempo=tempo_port, tempo_grpc=internal(tempo_grpc_port, tempo_port, 3200, 9095),
                  tempo_otlp_grpc=tempo_otlp_grpc_port, tempo_otlp_http=tempo_otlp_http_port)
    state = up(_data_dir(data_dir), ports, env=dict(os.environ),  # resolved here, at the edge
               scrape=jobs)
    for s in state.services:
        click.echo(f"{s.name:<11} ready   {s.url}")
    if jobs and any(s.name == "prometheus" for s in state.services):
        click.echo("prometheus  scrapes " + ", ".join(f"{j} ({t})" for j, t in jobs.items()))
    for name, how in state.missing.items():
        click.echo(f"{name:<11} missing {how}")
    if not state.services:
        raise UsageError("nothing could be started: " + "; ".join(state.missing.values()))


@stack_group.command("down")
@_data_dir_option
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds to wait for each service before killing it.")
def stack_down(data_dir: str | None, timeout: float) -> None:
    """Stop the local stack (bounded wait, then kill)."""
    from .stack import down

    down(_data_dir(data_dir), timeout, say=click.echo)


@stack_group.command("status")
@_data_dir_option
def stack_status(data_dir: str | None) -> None:
    """Show which services run and answer ready."""
    from .stack import status

    rows = status(_data_dir(data_dir))
    for name, url, state in rows:
        click.echo(f"{name:<11} {state:<9} {url}")
    if any(state in ("stopped", "starting") for _, _, state in rows):
        sys.exit(1)


@click.command("traffic")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="Where live_app (payment-service) listens.")
@click.option("--rps", type=click.FloatRange(min=0, min_open=True), default=20.0,
              show_default=True)
@click.option("--duration", help="How long to run, e.g. 2m.")
@click.option("--requests", "total", type=click.IntRange(min=1), help="Or how many requests.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--poisson", is_flag=True,
              help="Exponential gaps between arrivals (same mean) instead of even ones.")
def traffic_cmd(url: str, rps: float, duration: str | None, total: int | None,
                concurrency: int, seed: int, poisson: bool) -> None:
    """Drive bounded traffic at live_app; prints the achieved rate and status counts."""
    from live_app.traffic import run_traffic

    if duration is None and total is None:
        raise UsageError("give --duration or --requests so the run stops by itself")
    ms = _duration_ms(duration, "--duration")
    seconds = None if ms is None else ms / 1000
    result = run_traffic(url, rps, seconds, total, concurrency, seed, poisson=poisson)
    click.echo(result.summary())
    if not result.statuses or all(k.startswith("error") for k in result.statuses):
        raise TransportError(f"no request reached {url}; is live_app running there?")
