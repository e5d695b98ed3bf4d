"""The `replayer` command line. Flags are resolved and validated here, once, then passed
down as frozen objects; nothing below reads the environment. Only this module prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from generator import SCENARIOS, ScenarioError, generate, get_scenario
from generator.model import Incident

from .cli_common import duration_ms, iso
from .cli_common import knobs as parse_knobs
from .cli_common import signals as parse_signals
from .cli_common import target as target_config
from .errors import ReplayerError, UsageError
from .load import LoadRequest, Targets, resolve_source, run_load
from .loki.push import LOKI_CONCURRENCY, LokiOptions
from .prometheus import PushOptions
from .recording import counts, truth_to_json, write_recording
from .report import SignalReport
from .shard import parse_shard
from .traceids import salt_of
from .transport import TargetConfig
from .whereto import lines as look_lines
from .whereto import where_to_look


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


@click.group(cls=_Cli)
@click.version_option(package_name="telemetry-replayer")
def cli() -> None:
    """Replay a realistic production incident into Prometheus, Loki and Tempo."""


@cli.command("list")
def list_cmd() -> None:
    """List the built-in scenarios."""
    for name in sorted(SCENARIOS):
        s = SCENARIOS[name]
        live = f"live_app: {s.live_mode}" if s.live_mode else "generator only"
        click.echo(f"{name:<18} {s.default_duration_s // 60:>3}m  [{live}]  {s.description}")


@cli.command("new-scenario")
@click.argument("name")
@click.option("--from", "from_", metavar="SCENARIO",
              help="Start from a built-in scenario (written out in full) instead of the "
                   "commented template.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="File to write (default NAME.toml); an existing file is not replaced.")
def new_scenario_cmd(name: str, from_: str | None, output: str | None) -> None:
    """Write a scenario file to start from: `replayer load NAME.toml` takes it."""
    from dataclasses import replace

    from generator.specfile import scenario_to_toml, template

    path = Path(output or f"{name}.toml")
    if path.exists():
        raise UsageError(f"{path} exists; choose another -o or remove it")
    if from_:
        text = scenario_to_toml(replace(SCENARIOS[from_] if from_ in SCENARIOS else
                                        get_scenario(from_), name=name))
        template(name)  # the same check of the name
    else:
        text = template(name)
    path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {path}: edit it, then `replayer inspect {path}` or "
               f"`replayer load {path}`")


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
    check_memory(scenario, duration, step, knobs, None)  # every signal, the window whole
    incident = generate(scenario, seed=seed, duration_ms=duration_ms(duration, "--duration"),
                        step_ms=duration_ms(step, "--step"), knobs=dict(parse_knobs(knobs)))
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
    check_memory(source, duration, step, knobs, None)
    incident = resolve_source(source, seed, duration_ms(duration, "--duration"),
                              duration_ms(step, "--step"), dict(parse_knobs(knobs)))
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
    identity = t["root_cause"].get("identity") or {}
    if identity:
        click.echo("  named in the data as " + ", ".join(f"{k}={v}" for k, v in
                                                          sorted(identity.items())))
    sampling = t.get("trace_sampling") or {}
    if sampling:
        click.echo("sampling   traces of " + ("every request" if sampling.get("policy") == "all"
                                              else ", ".join(f"{k}={v}" for k, v in
                                                             sorted(sampling.items()))))
    click.echo(f"summary    {t['summary']}")
    for p in t["phases"]:
        click.echo(f"  phase {p['name']:<9} {p['start_ms'] / 60000:6.1f} - "
                   f"{p['end_ms'] / 60000:6.1f} min")
    for f in t.get("faults", []):
        spans = ", ".join(f"{p['name']} {p['start_ms'] / 60000:.1f}-{p['end_ms'] / 60000:.1f}"
                          for p in f["phases"] if p["name"] != "baseline")
        click.echo(f"fault      {'(primary) ' if f['primary'] else ''}{f['component']} / "
                   f"{f['root_cause_kind']} [{f['kind']}]: {spans} min")
    for h in t.get("red_herrings", []):
        click.echo(f"red herring {h['kind']} at {h['start_ms'] / 60000:.1f}-"
                   f"{h['end_ms'] / 60000:.1f} min (causes nothing): {h['what']}")
    for tid in t["example_trace_ids"]:
        click.echo(f"  example trace {tid}")
    for kind in ("promql", "logql", "traceql"):
        for q in t[kind]:
            click.echo(f"  {kind:<7} {q['what']}: {q['query']}")


@cli.command("plot")
@click.argument("source")
@source_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False))
@click.option("--end", help="Label the x axis with clock time (UTC) for a window ending here "
                            "(RFC 3339, or 'now' floored to the step, as `load` lays it).")
def plot_cmd(source: str, seed: int, duration: str | None, step: str | None,
             knobs: tuple[str, ...], output: str, end: str | None) -> None:
    """Plot latency quantiles, rates, pool and DB activity with the phases shaded."""
    from .plot import plot_incident
    from .timeshift import parse_end

    incident = resolve_source(source, seed, duration_ms(duration, "--duration"),
                              duration_ms(step, "--step"), dict(parse_knobs(knobs)))
    import time

    # the CLI is the edge: the clock is read here, never in the generator
    end_ns = None if end is None else parse_end(end, time.time_ns(), incident.step_ms)[0]
    plot_incident(incident, Path(output), end_ns)
    click.echo(f"wrote {output}")


@cli.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Seed of a scenario named as A or B.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--defaults", is_flag=True,
              help="Generate a scenario named against a live fixture with its own defaults, "
                   "not as the fixture ran.")
def compare_cmd(a: str, b: str, seed: int, as_json: bool, defaults: bool) -> None:
    """Compare two incidents (recording files or scenario names) phase by phase.

    A scenario named against a live fixture (scripts/record-live-fixture.py) is generated
    as the fixture ran: its window, scrape interval, knobs and switch times (--defaults:
    the scenario's own). Exit 0 when every judged row is within tolerance, 1 when any is
    outside."""
    from .calibrate import NotCalibratable, generated_like
    from .compare import compare, label_differences, render, to_json

    loaded = {x: resolve_source(x, seed, None, None, {}) for x in (a, b)
              if x not in SCENARIOS}  # the recordings (and scenario files)
    recorded = {dict(r.source).get("scenario"): r for r in loaded.values()
                if "knobs" in dict(r.source)}
    inc: dict[str, Incident] = {}
    for side, x in (("A", a), ("B", b)):
        if x in loaded:
            inc[x] = loaded[x]
        elif x in recorded and not defaults:
            try:
                inc[x] = generated_like(recorded[x], seed)
            except (NotCalibratable, ScenarioError) as exc:
                raise UsageError(f"cannot generate {x} as the recording ran: {exc}; pass "
                                 "--defaults to compare with its own defaults") from None
            if not as_json:
                click.echo(f"{side} = {x}, generated as the recording ran (its window, scrape "
                           "interval, knobs and switch times; --defaults for its own)")
        else:
            inc[x] = resolve_source(x, seed, None, None, {})
    inc_a, inc_b = inc[a], inc[b]
    rows = compare(inc_a, inc_b)
    if as_json:
        click.echo(json.dumps({"a": a, "b": b, "rows": to_json(rows),
                               "label_differences": label_differences(inc_a, inc_b)},
                              indent=2))
    else:
        click.echo(render(rows, a, b))
        for line in label_differences(inc_a, inc_b):
            click.echo(f"  label keys differ: {line}")
    if any(r.verdict == "outside" for r in rows):
        raise SystemExit(1)


def _bytes(text: str) -> int:
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.I)
    if not m:
        raise UsageError(f"--max-memory {text!r} is not a size like 4GB or 500MB")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def _available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(source: str, duration: str | None, step: str | None,
                 knobs: tuple[str, ...], max_memory: str | None,
                 signals: tuple[str, ...] = ("metrics", "logs", "traces"),
                 instances: int = 1) -> None:
    """Refuse, before generating, a window the generator cannot hold: all signals are
    simulated for the whole window at once (a long metrics-only window goes span by span,
    and its estimate is a span's)."""
    from generator import estimate_memory
    from generator.chunks import SPANNED_FROM_MS

    path = Path(source)
    if source.endswith((".jsonl", ".gz")) or (path.exists() and path.suffix != ".toml"):
        return  # a recording: its size is its own
    limit = _bytes(max_memory) if max_memory else None
    if limit is None:
        available = _available_bytes()
        if available is None:
            return
        limit = int(available * 0.8)
    need, requests, steps = estimate_memory(source, duration_ms(duration, "--duration"),
                                            duration_ms(step, "--step"),
                                            dict(parse_knobs(knobs)),
                                            signals if instances == 1 else None)
    if need <= limit:
        return
    allowed = "--max-memory" if max_memory else "80 % of the memory available now"
    spans = ""
    if tuple(signals) != ("metrics",) and "metrics" in signals:
        spans = (f"--signals metrics (a metrics-only window of more than "
                 f"{SPANNED_FROM_MS // 86_400_000} days is generated span by span, in a "
                 "span's memory); ")
    raise UsageError(
        f"generating {source} for this window needs about {need / 2**30:.1f} GiB of memory "
        f"({requests:,} simulated requests over {steps:,} steps, held at once), more than "
        f"the {limit / 2**30:.1f} GiB allowed ({allowed}).\n"
        f"  fix: {spans}a shorter --duration (load a long window as several, each with its "
        "own --end) or lower rps_* knobs (memory follows the simulated requests); for more "
        "traffic, --instances N (one copy in memory at a time); --max-memory if this "
        "machine has the room")


def _tempo_api(otlp_url: str) -> str:
    """Tempo's HTTP API beside its OTLP receiver: the same host, port 3200."""
    from urllib.parse import urlsplit

    parts = urlsplit(otlp_url if "://" in otlp_url else "http://" + otlp_url)
    return f"{parts.scheme}://{parts.hostname}:3200"


def _retry_for(text: str) -> float:
    from .prometheus import parse_prom_duration

    try:
        return parse_prom_duration(text) / 1000
    except ValueError:
        raise UsageError(f"--retry-for {text!r} is not a duration like 60s, 5m or 0s") from None


def _progress_printer() -> object:
    """Progress lines on stderr, about one per tenth of each signal. Lanes report from
    their own threads: one lock, and a count per signal that only goes up, so the lines
    come in order (they came out of order, and a second signal's were held back behind
    the first's count)."""
    import threading

    last: dict[str, int] = {}
    lock = threading.Lock()

    def show(report: SignalReport) -> None:
        with lock:
            done = report.accepted + report.rejected_total
            before = last.get(report.signal, 0)
            if report.sent and done > before and done - before >= max(report.sent // 10, 1):
                last[report.signal] = done
                click.echo(f"  {report.signal}: {done}/{report.sent} {report.unit}", err=True)

    return show


@cli.command("load")
@click.argument("source")
@source_options
@click.option("--end", default="now", show_default=True,
              help="Window end: 'now' (floored to the step) or RFC 3339.")
@click.option("--allow-future-end", is_flag=True,
              help="Accept an --end more than one step after now (see README).")
@click.option("--signals", default="metrics,logs,traces", show_default=True,
              help="Comma-separated subset of metrics, logs, traces.")
@click.option("--prometheus-url", envvar="PROMETHEUS_URL", default="http://localhost:9090",
              show_default=True, help="Prometheus / remote-write receiver [PROMETHEUS_URL].")
@click.option("--remote-write-url", envvar="REMOTE_WRITE_URL",
              help="Where remote-write requests go when not <prometheus-url>/api/v1/write "
                   "(Mimir: http://mimir:8080/api/v1/push, with --prometheus-url "
                   "http://mimir:8080/prometheus for the checks) [REMOTE_WRITE_URL].")
@click.option("--max-memory", help="Refuse a generated incident estimated to need more "
              "memory than this, e.g. 4GB (default: 80 percent of the memory available now).")
@click.option("--verify", is_flag=True,
              help="After the load, count back what each backend stored for the window "
                   "(traces: a sample of IDs through Tempo's API); a shortfall is a loss.")
@click.option("--tempo-api-url", envvar="TEMPO_API_URL",
              help="Tempo's query API for --verify [TEMPO_API_URL] (default: the OTLP "
                   "host on port 3200).")
@click.option("--retry-for", default="60s", show_default=True,
              help="Keep retrying a failing request this long (a server restarting), with "
                   "backoff and a line on stderr while waiting; 0s: no retries.")
@click.option("--grafana-url", envvar="GRAFANA_URL",
              help="Grafana with this repository's datasources (infra/grafana): the summary "
                   "adds an Explore link to the incident [GRAFANA_URL].")
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
@click.option("--trace-id-salt", metavar="TEXT",
              help="Give this load its own trace IDs (derived from TEXT, consistently in "
                   "spans, exemplars and logs), e.g. beside --label run=TEXT.")
@click.option("--clip", is_flag=True, help="Load only the part Prometheus accepts.")
@click.option("--no-exemplars", is_flag=True, help="Do not send exemplars.")
@click.option("--batch-samples", type=click.IntRange(1, 1_000_000), default=20000,
              show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 64), default=None,
              help="Requests in flight at once, for each signal: remote-write lanes (a "
                   "series stays in one), Loki lanes and OTLP exports. [default: 4; 2 for "
                   "Loki, which took the most from 2 at once in the benchmarks]")
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
             insecure_skip_verify: bool, labels: tuple[str, ...], trace_id_salt: str | None,
             clip: bool,
             no_exemplars: bool, batch_samples: int, concurrency: int | None,
             instances: int,
             shard_spec: str,
             follow: bool, live_from: str | None, dry_run: bool, as_json: bool,
             allow_future_end: bool, grafana_url: str | None, retry_for: str,
             verify: bool, tempo_api_url: str | None, max_memory: str | None) -> None:
    """Replay SOURCE (a scenario or a recording) so its window ends at --end."""
    chosen = parse_signals(signals)
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
        return target_config(url, tenant, basic_auth, bearer_token, headers, tls_ca, tls_cert,
                       tls_key, insecure_skip_verify)

    req = LoadRequest(
        source=source, seed=seed, duration_ms=duration_ms(duration, "--duration"),
        step_ms=duration_ms(step, "--step"), knobs=parse_knobs(knobs), end=end, signals=chosen,
        targets=Targets(prometheus=target(prometheus_url), loki=target(loki_url),
                        tempo=target(tempo_url), tempo_protocol=tempo_protocol),
        push=PushOptions(max_samples=batch_samples,
                         concurrency=concurrency or PushOptions.concurrency, clip=clip,
                         send_exemplars=not no_exemplars,
                         write_url=remote_write_url or "api/v1/write"),
        loki=LokiOptions(format=loki_format, rate_bytes_s=None if loki_rate_mb is None
                         else loki_rate_mb * 1024 * 1024,
                         concurrency=concurrency or LOKI_CONCURRENCY),
        extra_labels=tuple(extra), dry_run=dry_run, follow=follow,
        allow_future_end=allow_future_end,
        live_from_ms=duration_ms(live_from, "--live-from"), shard=parse_shard(shard_spec),
        instances=instances,
        trace_salt=salt_of(trace_id_salt) if trace_id_salt else None,
        retry_for_s=_retry_for(retry_for), verify=verify,
        tempo_api=target(tempo_api_url or _tempo_api(tempo_url)) if verify else None,
        say=None if as_json else lambda line: click.echo(f"  {line}", err=True))
    check_memory(source, duration, step, knobs, max_memory, chosen, instances)
    if insecure_skip_verify:
        click.echo("warning: --insecure-skip-verify: the servers' TLS certificates are not "
                   "checked", err=True)
    try:
        result = run_load(req, progress=None if as_json else _progress_printer())  # type: ignore
    except KeyboardInterrupt:  # before any backend was begun (generating, reading)
        click.echo("error: stopped by Ctrl-C before anything was sent", err=True)
        sys.exit(130)
    if dry_run:
        c = result.totals or counts(result.incident)
        parts = {"metrics": f"{c['series']} series, {c['samples']} samples, "
                            f"{c['exemplars']} exemplars",
                 "logs": f"{c['log_lines']} log lines in {c['log_streams']} streams",
                 "traces": f"{c['spans']} spans"}
        would = {"metrics": {k: c[k] for k in ("series", "samples", "exemplars")},
                 "logs": {k: c[k] for k in ("log_lines", "log_streams")},
                 "traces": {"spans": c["spans"]}}
        copies = f", times {instances} copies of the service (each its own seed: counts " \
                 "are the first copy's)" if instances > 1 else ""
        if as_json:
            click.echo(json.dumps({"dry_run": True, "window": {
                "start": iso(result.start_ns), "end": iso(result.end_ns)},
                "instances": instances, "would_send": {s: would[s] for s in chosen}},
                indent=2))
            return
        spanned = f"; {result.notes[0]}" if result.totals is not None else ""
        click.echo(f"dry run: would push {', '.join(parts[s] for s in chosen)} "
                   f"({', '.join(chosen)}) for the window {iso(result.start_ns)} .. "
                   f"{iso(result.end_ns)}{copies}{spanned}; nothing sent")
        return
    # the Prometheus UI only where the metrics went to a Prometheus (not a Mimir push URL)
    look = where_to_look(result.incident, result.start_ns, result.end_ns,
                         prometheus_url if "metrics" in chosen and not remote_write_url
                         else None, grafana_url)
    if as_json:
        click.echo(json.dumps({"window": {"start_ns": result.start_ns, "end_ns": result.end_ns,
                                          "start": iso(result.start_ns),
                                          "end": iso(result.end_ns)},
                               "incident": look,
                               "signals": [r.as_dict() for r in result.reports]}, indent=2))
    else:
        click.echo(f"window {iso(result.start_ns)} .. {iso(result.end_ns)}")
        for r in result.reports:
            for line in r.lines():
                click.echo(line)
        if any(r.accepted for r in result.reports):  # where to look, once something is there
            for line in look_lines(look):
                click.echo(line)
    unreachable = [r.signal for r in result.reports
                   if r.failed and r.failure_code == 4 and not r.accepted]
    rest = [sig for sig in chosen if sig not in unreachable]
    if len(unreachable) > 1 and rest and not as_json:  # each hint named only its own signal
        click.echo(f"hint: {' and '.join(unreachable)} could not be reached; "
                   f"--signals {','.join(rest)} loads only the rest")
    if result.exit_code:
        click.echo("error: not everything was stored (see above)", err=True)
        sys.exit(result.exit_code)


def _register_live_commands() -> None:
    from .cli_live import capture_cmd, record_cmd, stack_group, traffic_cmd

    for command in (record_cmd, capture_cmd, stack_group, traffic_cmd):
        cli.add_command(command)


_register_live_commands()


def main() -> None:
    cli(prog_name="replayer")


if __name__ == "__main__":
    main()


def _seeds(text: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise UsageError(f"--seeds {text!r}: give seeds as 1-5 or 1,3,7")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return tuple(out)


@cli.command("evaluate")
@click.option("--investigator", required=True, metavar="CMD",
              help="The investigator's command line; `replayer investigate` is the reference "
                   "one.")
@click.option("--scenarios", default=None, metavar="A,B,...",
              help="Scenario names or files (default: every built-in scenario).")
@click.option("--seeds", default="1-3", show_default=True, help="e.g. 1-5 or 1,3,7")
@click.option("--end", default="now", show_default=True,
              help="Every case's window ends here (RFC 3339, or now rounded down to the "
                   "minute): the same --end and seeds give the same data.")
@click.option("--signals", default="metrics,logs,traces", show_default=True)
@click.option("--prometheus-url", envvar="PROMETHEUS_URL", default="http://localhost:9090",
              show_default=True)
@click.option("--loki-url", envvar="LOKI_URL", default="http://localhost:3100",
              show_default=True)
@click.option("--tempo-url", default="http://localhost:4317", show_default=True,
              help="Where traces are loaded (OTLP gRPC).")
@click.option("--tempo-query-url", default=None,
              help="Tempo's query API for the investigator (e.g. http://localhost:3200).")
@click.option("--grafana-url", default=None, help="Passed to the investigator as GRAFANA_URL.")
@click.option("--tenant", envvar="REPLAYER_TENANT", help="X-Scope-OrgID on every target.")
@click.option("--time-limit", type=click.FloatRange(min=0.1), default=120.0,
              show_default=True, help="Seconds an investigator has per case.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--png", type=click.Path(dir_okay=False), help="Also draw scenarios x seeds.")
def evaluate_cmd(investigator: str, scenarios: str | None, seeds: str, end: str,
                 signals: str, prometheus_url: str, loki_url: str, tempo_url: str,
                 tempo_query_url: str | None, grafana_url: str | None, tenant: str | None,
                 time_limit: float, as_json: bool, png: str | None) -> None:
    """Score an incident investigator over the library on a live stack: each scenario x
    seed is loaded under its own run label, the investigator runs with the stack's URLs and
    the window in its environment and prints its verdict as JSON."""
    import datetime as dt

    from .api import Targets
    from .evaluate import evaluate

    when = None
    if end != "now":
        try:
            when = dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--end {end!r} is not an RFC 3339 time") from None
        if when.tzinfo is None:
            raise UsageError("--end needs a time zone, e.g. 2026-11-28T10:00:00Z")
    names = [s.strip() for s in scenarios.split(",")] if scenarios else None
    for name in names or []:
        get_scenario(name)  # an unknown name or a bad file stops here, before any load

    def progress(r) -> None:  # type: ignore[no-untyped-def]
        mark = "hit " if r.top1 else "miss" if r.status == "ok" else r.status
        said = f"{r.verdict.component} / {r.verdict.kind}" if r.verdict else r.detail
        click.echo(f"{r.scenario:<20} seed {r.seed:<3} {mark:<9} {said}", err=True)

    report = evaluate(investigator, names, _seeds(seeds),
                      Targets(prometheus=prometheus_url, loki=loki_url, tempo=tempo_url,
                              tenant=tenant), when,
                      tuple(s.strip() for s in signals.split(",") if s.strip()), time_limit,
                      tempo_query_url, grafana_url, progress)
    if png:
        report.plot(png)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        click.echo(report.table())
        v = report.versions
        click.echo(f"investigator {report.investigator!r}; seeds {list(report.seeds)}; window "
                   f"ends {report.end.isoformat()}; telemetry-replayer {v['telemetry-replayer']}"
                   f", generator {v['generator']}")
    unloaded = [r for r in report.results if r.status == "load_failed"]
    if unloaded:
        for r in unloaded:
            click.echo(f"error: {r.scenario} seed {r.seed} was not loaded: {r.detail}", err=True)
        raise SystemExit(1)


@cli.command("investigate")
def investigate_cmd() -> None:
    """The reference investigator (PromQL rules; run it under `replayer evaluate`)."""
    from .investigate import main

    raise SystemExit(main())
