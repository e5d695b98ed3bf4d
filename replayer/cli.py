"""The `replayer` command line. Flags are resolved and validated here, once, then passed
down as frozen objects; nothing below reads the environment. Only this module prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from generator import SCENARIOS, ScenarioError, generate
from generator.model import Incident

from .errors import ReplayerError, TransportError, UsageError
from .load import SIGNALS, LoadRequest, Targets, resolve_source, run_load
from .loki.push import LokiOptions
from .prometheus import PushOptions, parse_prom_duration
from .recording import counts, truth_to_json, write_recording
from .report import SignalReport
from .shard import parse_shard
from .transport import TargetConfig


class _Cli(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ScenarioError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except ReplayerError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        return None


def _duration_ms(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    try:
        ms = parse_prom_duration(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a duration like 30m, 1h or 15s") from None
    if ms <= 0:
        raise UsageError(f"{flag} must be positive, got {value!r}")
    return ms


def _knobs(pairs: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {pair!r}: expected KNOB=VALUE, e.g. --set rps_post_payment=12")
        out.append((key.strip(), value.strip()))
    return tuple(out)


@click.group(cls=_Cli)
@click.version_option(package_name="telemetry-replayer")
def cli() -> None:
    """Replay a realistic production incident into Prometheus, Loki and Tempo."""


@cli.command("list")
def list_cmd() -> None:
    """List the built-in scenarios."""
    for name in sorted(SCENARIOS):
        s = SCENARIOS[name]
        click.echo(f"{name:<16} {s.default_duration_s // 60:>3}m  {s.description}")


_source_options = [
    click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True),
    click.option("--duration", help="Window length, e.g. 30m (scenarios only)."),
    click.option("--step", help="Scrape interval, e.g. 15s (scenarios only)."),
    click.option("--set", "knobs", multiple=True, metavar="KNOB=VALUE",
                 help="Override a scenario knob (repeatable)."),
]


def source_options(f):  # type: ignore[no-untyped-def]
    for opt in reversed(_source_options):
        f = opt(f)
    return f


@cli.command("generate")
@click.argument("scenario")
@source_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Recording to write (.jsonl or .jsonl.gz).")
def generate_cmd(scenario: str, seed: int, duration: str | None, step: str | None,
                 knobs: tuple[str, ...], output: str) -> None:
    """Generate SCENARIO and write it as a recording."""
    incident = generate(scenario, seed=seed, duration_ms=_duration_ms(duration, "--duration"),
                        step_ms=_duration_ms(step, "--step"), knobs=dict(_knobs(knobs)))
    write_recording(incident, output)
    c = counts(incident)
    click.echo(f"wrote {output}: {c['series']} series, {c['samples']} samples, "
               f"{c['log_lines']} log lines, {c['spans']} spans")


def describe(incident: Incident) -> dict[str, object]:
    traces = {bytes(t).hex() for table in incident.span_tables for t in table.trace_id}
    return {
        "scenario": incident.scenario, "seed": incident.seed,
        "generator_version": incident.generator_version, "source": dict(incident.source),
        "window": {"duration_ms": incident.duration_ms, "step_ms": incident.step_ms},
        "counts": {**counts(incident), "traces": len(traces),
                   "metric_names": len({s.name for s in incident.series})},
        "truth": truth_to_json(incident.truth),
    }


@cli.command("inspect")
@click.argument("source")
@source_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect_cmd(source: str, seed: int, duration: str | None, step: str | None,
                knobs: tuple[str, ...], as_json: bool) -> None:
    """Summarise a recording file (or a scenario) and its ground truth."""
    incident = resolve_source(source, seed, _duration_ms(duration, "--duration"),
                              _duration_ms(step, "--step"), dict(_knobs(knobs)))
    info = describe(incident)
    if as_json:
        click.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    c, t = info["counts"], info["truth"]
    assert isinstance(c, dict) and isinstance(t, dict)
    click.echo(f"scenario   {incident.scenario} (seed {incident.seed})")
    click.echo(f"window     {incident.duration_ms / 60000:g} min, step "
               f"{incident.step_ms / 1000:g} s")
    click.echo(f"metrics    {c['series']} series ({c['metric_names']} names), "
               f"{c['samples']} samples, {c['exemplars']} exemplars")
    click.echo(f"logs       {c['log_streams']} streams, {c['log_lines']} lines")
    click.echo(f"traces     {c['traces']} traces, {c['spans']} spans")
    click.echo(f"root cause {t['root_cause']['component']} / {t['root_cause']['kind']}")
    click.echo(f"summary    {t['summary']}")
    for p in t["phases"]:
        click.echo(f"  phase {p['name']:<9} {p['start_ms'] / 60000:6.1f} - "
                   f"{p['end_ms'] / 60000:6.1f} min")
    for tid in t["example_trace_ids"]:
        click.echo(f"  example trace {tid}")
    for kind in ("promql", "logql", "traceql"):
        for q in t[kind]:
            click.echo(f"  {kind:<7} {q['what']}: {q['query']}")


@cli.command("plot")
@click.argument("source")
@source_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
def plot_cmd(source: str, seed: int, duration: str | None, step: str | None,
             knobs: tuple[str, ...], output: str) -> None:
    """Plot latency quantiles, rates, pool and DB activity with the phases shaded."""
    from .plot import plot_incident

    incident = resolve_source(source, seed, _duration_ms(duration, "--duration"),
                              _duration_ms(step, "--step"), dict(_knobs(knobs)))
    plot_incident(incident, Path(output))
    click.echo(f"wrote {output}")


def _target(url: str, tenant: str | None, basic_auth: str | None, bearer: str | None,
            headers: tuple[str, ...], ca: str | None, cert: str | None, key: str | None,
            insecure: bool) -> TargetConfig:
    auth = None
    if basic_auth:
        user, sep, password = basic_auth.partition(":")
        if not sep:
            raise UsageError("--basic-auth needs USER:PASSWORD")
        auth = (user, password)
    hdrs = []
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {h!r}: expected 'Name: value'")
        hdrs.append((name.strip(), value.strip()))
    if (cert is None) != (key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"target URL {url!r} must start with http:// or https://")
    return TargetConfig(url=url, tenant=tenant, basic_auth=auth, bearer_token=bearer,
                        headers=tuple(hdrs), ca_file=ca,
                        client_cert=(cert, key) if cert and key else None,
                        insecure_skip_verify=insecure)


def _signals(value: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in value.split(",") if s.strip())
    bad = [s for s in chosen if s not in SIGNALS]
    if bad or not chosen:
        raise UsageError(f"--signals {value!r}: choose from {', '.join(SIGNALS)}")
    return chosen


def _progress_printer() -> object:
    state = {"last": 0}

    def show(report: SignalReport) -> None:
        done = report.accepted + report.rejected_total
        if report.sent and done - state["last"] >= max(report.sent // 10, 1):
            state["last"] = done
            click.echo(f"  {report.signal}: {done}/{report.sent} {report.unit}", err=True)

    return show


@cli.command("load")
@click.argument("source")
@source_options
@click.option("--end", default="now", show_default=True,
              help="Window end: 'now' (floored to the step) or RFC 3339.")
@click.option("--signals", default="metrics,logs,traces", show_default=True,
              help="Comma-separated subset of metrics, logs, traces.")
@click.option("--prometheus-url", envvar="PROMETHEUS_URL", default="http://localhost:9090",
              show_default=True, help="Prometheus / remote-write receiver [PROMETHEUS_URL].")
@click.option("--remote-write-url", envvar="REMOTE_WRITE_URL",
              help="Where remote-write requests go when not <prometheus-url>/api/v1/write "
                   "(Mimir: http://mimir:8080/api/v1/push, with --prometheus-url "
                   "http://mimir:8080/prometheus for the checks) [REMOTE_WRITE_URL].")
@click.option("--loki-url", envvar="LOKI_URL", default="http://localhost:3100",
              show_default=True, help="[LOKI_URL]")
@click.option("--loki-format", type=click.Choice(["protobuf", "json"]), default="protobuf",
              show_default=True)
@click.option("--loki-rate-mb", type=click.FloatRange(min=0), default=None,
              help="Pace log pushes to this many MB/s (0: no pacing; default: 80 % of the "
                   "server's ingestion_rate_mb, else 3).")
@click.option("--tempo-url", envvar="TEMPO_URL", default=None,
              help="OTLP receiver [TEMPO_URL] (default http://localhost:4317 for grpc, "
                   "http://localhost:4318 for http).")
@click.option("--tempo-protocol", type=click.Choice(["grpc", "http"]), default="grpc",
              show_default=True)
@click.option("--tenant", envvar="REPLAYER_TENANT", help="X-Scope-OrgID on every target.")
@click.option("--basic-auth", envvar="REPLAYER_BASIC_AUTH", metavar="USER:PASSWORD")
@click.option("--bearer-token", envvar="REPLAYER_BEARER_TOKEN")
@click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'")
@click.option("--tls-ca", type=click.Path(exists=True, dir_okay=False))
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False))
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False))
@click.option("--insecure-skip-verify", is_flag=True)
@click.option("--label", "labels", multiple=True, metavar="NAME=VALUE",
              help="Add a label to every series and log stream (e.g. run=ci-42).")
@click.option("--clip", is_flag=True, help="Load only the part Prometheus accepts.")
@click.option("--no-exemplars", is_flag=True, help="Do not send exemplars.")
@click.option("--batch-samples", type=click.IntRange(1, 1_000_000), default=5000,
              show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--instances", type=click.IntRange(1, 100_000), default=1, show_default=True,
              help="Load N copies of the service (instance label <host>-<i>), generated and "
                   "pushed one at a time: memory stays that of one copy.")
@click.option("--shard", "shard_spec", default="0/1", show_default=True, metavar="K/N",
              help="Push part K of N (by series, stream and trace); N processes with "
                   "K = 0..N-1 push the whole incident exactly once.")
@click.option("--follow", is_flag=True,
              help="Backfill up to now, then push each new step live until the window ends.")
@click.option("--live-from", help="With --follow: how far into the window 'now' sits "
              "(default: 2 min before the onset).")
@click.option("--dry-run", is_flag=True, help="Print what would be sent; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def load_cmd(source: str, seed: int, duration: str | None, step: str | None,
             knobs: tuple[str, ...], end: str, signals: str, prometheus_url: str,
             remote_write_url: str | None, loki_url: str, loki_format: str,
             loki_rate_mb: float | None,
             tempo_url: str | None, tempo_protocol: str, tenant: str | None,
             basic_auth: str | None, bearer_token: str | None, headers: tuple[str, ...],
             tls_ca: str | None, tls_cert: str | None, tls_key: str | None,
             insecure_skip_verify: bool, labels: tuple[str, ...], clip: bool,
             no_exemplars: bool, batch_samples: int, concurrency: int, instances: int,
             shard_spec: str,
             follow: bool, live_from: str | None, dry_run: bool, as_json: bool) -> None:
    """Replay SOURCE (a scenario or a recording) so its window ends at --end."""
    chosen = _signals(signals)
    extra = []
    for pair in labels:
        k, sep, v = pair.partition("=")
        if not sep or not k or not v:
            raise UsageError(f"--label {pair!r}: expected NAME=VALUE")
        extra.append((k, v))
    if live_from and not follow:
        raise UsageError("--live-from goes with --follow")
    if remote_write_url and not remote_write_url.startswith(("http://", "https://")):
        raise UsageError(f"--remote-write-url {remote_write_url!r} must be a full http(s) URL")
    tempo_url = tempo_url or ("http://localhost:4317" if tempo_protocol == "grpc"
                              else "http://localhost:4318")

    def target(url: str) -> TargetConfig:
        return _target(url, tenant, basic_auth, bearer_token, headers, tls_ca, tls_cert,
                       tls_key, insecure_skip_verify)

    req = LoadRequest(
        source=source, seed=seed, duration_ms=_duration_ms(duration, "--duration"),
        step_ms=_duration_ms(step, "--step"), knobs=_knobs(knobs), end=end, signals=chosen,
        targets=Targets(prometheus=target(prometheus_url), loki=target(loki_url),
                        tempo=target(tempo_url), tempo_protocol=tempo_protocol),
        push=PushOptions(max_samples=batch_samples, concurrency=concurrency, clip=clip,
                         send_exemplars=not no_exemplars,
                         write_url=remote_write_url or "api/v1/write"),
        loki=LokiOptions(format=loki_format, rate_bytes_s=None if loki_rate_mb is None
                         else loki_rate_mb * 1024 * 1024),
        extra_labels=tuple(extra), dry_run=dry_run, follow=follow,
        live_from_ms=_duration_ms(live_from, "--live-from"), shard=parse_shard(shard_spec),
        instances=instances)
    result = run_load(req, progress=None if as_json else _progress_printer())  # type: ignore
    if dry_run:
        c = counts(result.incident)
        click.echo(f"dry run: would push {c['series']} series, {c['samples']} samples, "
                   f"{c['exemplars']} exemplars, {c['log_lines']} log lines in "
                   f"{c['log_streams']} streams and {c['spans']} spans "
                   f"({', '.join(chosen)}) for the window {_iso(result.start_ns)} .. "
                   f"{_iso(result.end_ns)}" + (f", times {instances} copies of the service"
                                              if instances > 1 else "") + "; nothing sent")
        return
    if as_json:
        click.echo(json.dumps({"window": {"start_ns": result.start_ns, "end_ns": result.end_ns},
                               "signals": [r.as_dict() for r in result.reports]}, indent=2))
    else:
        click.echo(f"window {_iso(result.start_ns)} .. {_iso(result.end_ns)}")
        for r in result.reports:
            for line in r.lines():
                click.echo(line)
    if result.exit_code:
        click.echo("error: not everything was stored (see above)", err=True)
        sys.exit(result.exit_code)


@cli.command("record")
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


@cli.command("capture")
@click.option("--duration", required=True, help="How long to capture, e.g. 2m.")
@click.option("--scrape", "scrape_urls", multiple=True,
              help="A /metrics URL to scrape (repeatable).")
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


@cli.group("stack")
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
def stack_up(data_dir: str | None, prometheus_port: int, loki_port: int, tempo_port: int,
             tempo_otlp_grpc_port: int, tempo_otlp_http_port: int) -> None:
    """Start what is installed, wait until it is ready, print the URLs."""
    from .stack import Ports, up

    ports = Ports(prometheus=prometheus_port, loki=loki_port, loki_grpc=loki_port + 5996,
                  tempo=tempo_port, tempo_grpc=tempo_port + 5895,
                  tempo_otlp_grpc=tempo_otlp_grpc_port, tempo_otlp_http=tempo_otlp_http_port)
    state = up(_data_dir(data_dir), ports)
    for s in state.services:
        click.echo(f"{s.name:<11} ready   {s.url}")
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

    for line in down(_data_dir(data_dir), timeout):
        click.echo(line)


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


@cli.command("traffic")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="Where live_app (payment-service) listens.")
@click.option("--rps", type=click.FloatRange(min=0, min_open=True), default=20.0,
              show_default=True)
@click.option("--duration", help="How long to run, e.g. 2m.")
@click.option("--requests", "total", type=click.IntRange(min=1), help="Or how many requests.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True)
def traffic_cmd(url: str, rps: float, duration: str | None, total: int | None,
                concurrency: int, seed: int) -> None:
    """Drive bounded traffic at live_app; prints the achieved rate and status counts."""
    from live_app.traffic import run_traffic

    if duration is None and total is None:
        raise UsageError("give --duration or --requests so the run stops by itself")
    ms = _duration_ms(duration, "--duration")
    seconds = None if ms is None else ms / 1000
    result = run_traffic(url, rps, seconds, total, concurrency, seed)
    click.echo(result.summary())
    if not result.statuses or all(k.startswith("error") for k in result.statuses):
        raise TransportError(f"no request reached {url}; is live_app running there?")


def _iso(t_ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t_ns / 1e9, tz=dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def main() -> None:
    cli(prog_name="replayer")


if __name__ == "__main__":
    main()
