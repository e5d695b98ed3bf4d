"""`replayer load`: resolve the source, lay it at --end, preflight, push, account.

Each signal goes to its own backend and is accounted on its own: a backend that cannot be
reached or cannot take the load is reported (with the fix) and the others are still
loaded — what could be sent was sent, and the exit code says what was not.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from generator import ScenarioError, generate
from generator.chunks import Spans, generate_spans, spanned
from generator.model import Incident

from .errors import Interrupted, PreflightError, ReplayerError, TransportError, UsageError
from .loki.push import LokiOptions, push_logs
from .loki.push import check as check_loki
from .loki.push import preflight as preflight_loki
from .otlp.push import GrpcTraces, HttpTraces, push_traces
from .prometheus import (
    PushOptions,
    ServerInfo,
    check_server,
    check_window,
    exemplar_note,
    find_overlap,
    preflight,
    push_metrics,
    push_series,
    push_slices,
    send_metadata,
)
from .recording import read_recording
from .report import SignalReport
from .shard import shard
from .slicing import slice_logs, slice_series, slice_spans
from .timeshift import NS_PER_MS, iso, parse_end, shift, start_ns_for
from .traceids import salt_trace_ids
from .transport import HttpTransport, Pacer, RetryPolicy, TargetConfig
from .verify import Verifier

SIGNALS = ("metrics", "logs", "traces")
UNITS = {"metrics": "samples", "logs": "lines", "traces": "spans"}


@dataclass(frozen=True)
class Targets:
    prometheus: TargetConfig = field(default_factory=lambda: TargetConfig(
        "http://localhost:9090"))
    loki: TargetConfig = field(default_factory=lambda: TargetConfig("http://localhost:3100"))
    tempo: TargetConfig = field(default_factory=lambda: TargetConfig("http://localhost:4317"))
    tempo_protocol: str = "grpc"  # grpc | http


@dataclass(frozen=True)
class LoadRequest:
    source: str | Incident  # a scenario name, a recording path, or an incident
    seed: int = 1
    duration_ms: int | None = None
    step_ms: int | None = None
    knobs: tuple[tuple[str, str], ...] = ()
    end: str = "now"
    signals: tuple[str, ...] = SIGNALS
    targets: Targets = field(default_factory=Targets)
    push: PushOptions = field(default_factory=PushOptions)
    loki: LokiOptions = field(default_factory=LokiOptions)
    extra_labels: tuple[tuple[str, str], ...] = ()
    dry_run: bool = False
    follow: bool = False
    allow_future_end: bool = False  # an end past now + one step is refused without it
    live_from_ms: int | None = None  # --follow: where in the window "now" sits
    shard: tuple[int, int] = (0, 1)  # (K, N): this process pushes part K of N
    instances: int = 1  # N copies of the service (scale tests), generated one at a time
    trace_salt: bytes | None = None  # give this load its own trace IDs (see traceids.py)
    retry_for_s: float = 60.0  # how long a failing request is retried (a server's restart)
    # hears what the load waits for: a retrying request, a slow preflight
    say: Callable[[str], None] | None = None
    verify: bool = False  # read back what each backend stored; a shortfall is a loss
    tempo_api: TargetConfig | None = None  # Tempo's query API, for --verify of traces


@dataclass
class LoadResult:
    incident: Incident  # time-shifted (a long window loaded span by span: its last span)
    start_ns: int
    end_ns: int
    reports: list[SignalReport]
    notes: list[str]
    # what the whole load holds, where ``incident`` is only part of it (a spanned window)
    totals: dict[str, int] | None = None

    @property
    def lost(self) -> bool:
        return any(r.lost or r.failed for r in self.reports)

    @property
    def exit_code(self) -> int:
        codes = [r.failure_code for r in self.reports if r.failed]
        if codes:
            return max(codes)
        return 1 if self.lost else 0


def resolve_source(source: str | Incident, seed: int, duration_ms: int | None,
                   step_ms: int | None, knobs: dict[str, str],
                   signals: tuple[str, ...] = SIGNALS) -> Incident:
    """A scenario name, a path to a recording file, or an incident as it is. A generated
    one has only ``signals`` built (a metrics-only load formats no log line)."""
    if isinstance(source, Incident):
        return source
    if not _generated(source):
        if knobs or duration_ms or step_ms:
            raise UsageError("--set, --duration and --step apply to scenarios, not recordings")
        return read_recording(Path(source))
    return generate(source, seed=seed, duration_ms=duration_ms, step_ms=step_ms, knobs=knobs,
                    signals=signals)


STOPPED = Interrupted("stopped by Ctrl-C: what was sent before is counted; the rest was "
                      "not sent")


def _stopped(reports: Iterable[SignalReport], left: int, total: int, parts: str) -> None:
    """Ctrl-C between the parts of a load (copies, spans): the part in hand counted what it
    sent; the ``left`` later ones of ``total`` were never generated."""
    for r in reports:
        if not r.failed:
            r.fail(STOPPED.args[0], STOPPED.exit_code, 0, r.mark())
        if left:
            r.notes.append(f"stopped by Ctrl-C: {left} of {total} {parts} were not "
                           "generated, nor sent")


def _fail(report: SignalReport, exc: ReplayerError, items: int,
          mark: tuple[int, int] = (0, 0)) -> None:
    """An attempt at ``items`` failed (begun at ``report.mark()``); see SignalReport.fail."""
    report.fail(str(exc), exc.exit_code, items, mark)


class _Session:
    """The open connections of one load, one per chosen signal."""

    def __init__(self, req: LoadRequest, prometheus: HttpTransport | None) -> None:
        self.req = req
        self.extra: list[HttpTransport] = []  # opened later (--verify's Tempo API)
        self.info: ServerInfo | None = None  # what Prometheus said it accepts (preflight)
        self.own_prometheus = prometheus is None
        policy = RetryPolicy(deadline_s=req.retry_for_s)
        self.prometheus = prometheus or HttpTransport(
            req.targets.prometheus, pool_size=req.push.concurrency + 1, policy=policy,
            notify=req.say)
        lanes = req.push.concurrency + 1
        self.loki = HttpTransport(req.targets.loki, pool_size=lanes, policy=policy,
                                  notify=req.say)
        t = req.targets
        self.tempo: GrpcTraces | HttpTraces = (
            GrpcTraces(t.tempo, policy=policy, notify=req.say)
            if t.tempo_protocol == "grpc"
            else HttpTraces(HttpTransport(t.tempo, pool_size=lanes, policy=policy,
                                          notify=req.say)))

    def cancel(self) -> None:
        """Ctrl-C: every signal stops retrying and sends nothing more."""
        self.prometheus.cancel()
        self.loki.cancel()
        self.tempo.cancel()

    def close(self) -> None:
        if self.own_prometheus:
            self.prometheus.close()
        self.loki.close()
        self.tempo.close()
        for t in self.extra:
            t.close()


_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def check_extra_labels(pairs: tuple[tuple[str, str], ...], incident: Incident) -> None:
    """Labels added to every series and stream must be new names: one the data already
    carries (``__name__``, ``le``, ``state``, ``job``, ...) would overwrite it, merge
    series that differ only there, and lose samples."""
    taken = {k for s in incident.series for k, _ in s.labels} | {
        k for st in incident.log_streams for k, _ in st.labels} | {"__name__", "le",
                                                                   "quantile"}
    for k, v in pairs:
        if not _LABEL_NAME.fullmatch(k) or k.startswith("__"):
            raise UsageError(f"--label {k}={v}: {k!r} is not a label name Prometheus takes "
                             "(letters, digits and _, not starting with a digit or __)")
        if k in taken:
            raise UsageError(f"--label {k}={v}: the data already has a {k!r} label; "
                             "overwriting it would merge series and lose samples.\n  fix: "
                             "a name of your own, e.g. --label run=ci-42")


def check_end(end_ns: int, now_ns: int, step_ms: int, allowed: bool) -> None:
    """Refuse a window that ends in the future: samples stamped ahead of the server's clock
    make Prometheus refuse its own scrapes (out of order) until that time has passed. The
    clock read is this machine's; a server whose clock differs is not asked."""
    ahead_ms = (end_ns - now_ns) // NS_PER_MS
    if allowed or ahead_ms <= step_ms:
        return
    raise UsageError(
        f"--end is {ahead_ms / 3.6e6:.1f} h after now: the backends would hold data from the "
        "future, and Prometheus would refuse its own scrapes of those series until that "
        "time has passed.\n  fix: an --end at or before now (or 'now'); pass "
        "--allow-future-end if a future window is what you want")


def run_load(req: LoadRequest, now_ns: Callable[[], int] = time.time_ns,
             progress: Callable[[SignalReport], None] | None = None,
             transport: HttpTransport | None = None,
             sleep: Callable[[float], None] = time.sleep) -> LoadResult:
    """Load ``req.source`` into the chosen backends; ``transport`` overrides Prometheus'."""
    if req.instances > 1:
        return _load_instances(req, now_ns, progress, transport)
    spans = _spans_of(req)
    if spans is not None:
        return _load_spans(req, spans, now_ns, progress, transport)
    incident = shard(resolve_source(req.source, req.seed, req.duration_ms, req.step_ms,
                                    dict(req.knobs), req.signals), *req.shard)
    check_extra_labels(req.extra_labels, incident)
    if req.trace_salt:
        incident = salt_trace_ids(incident, req.trace_salt)
    if req.follow:
        return _follow(req, incident, now_ns, progress, transport, sleep)
    end_ns, is_now = parse_end(req.end, now_ns(), incident.step_ms)
    check_end(end_ns, now_ns(), incident.step_ms, req.allow_future_end)
    parts = _Shifted(incident, dict(req.extra_labels))
    parts.part("metrics", end_ns)  # cheap, and checks the end before any request
    if not isinstance(req.source, str) or not _generated(req.source):
        parts.part("logs", end_ns)  # so are a recording's log times
    notes: list[str] = []
    reports = {s: SignalReport(s, UNITS[s]) for s in req.signals}
    if req.dry_run:
        return LoadResult(parts.whole(end_ns), start_ns_for(incident, end_ns), end_ns, [],
                          notes)
    session = _Session(req, transport)
    beside = _Beside(session)

    def others(end: int) -> None:
        """Logs and traces, each in a thread of its own beside the metrics, once the window's
        end is settled (an earlier replay of the same series can move it); each thread lays
        its own signal in absolute time."""
        nonlocal end_ns
        end_ns = end
        start, now = start_ns_for(incident, end), now_ns()

        def logs() -> None:
            _logs(session, parts.part("logs", end), start, now, reports["logs"], progress)

        def traces() -> None:
            _traces(session, parts.part("traces", end), start, reports["traces"], progress)

        if "logs" in reports:
            beside.start(logs)
        if "traces" in reports:
            beside.start(traces)

    try:
        try:
            if "metrics" in reports:
                settled = _metrics(session, incident, end_ns, is_now, reports["metrics"], notes,
                                   progress, ready=others)
                if not beside.started:  # the metrics failed before their end was settled
                    others(settled)
            else:
                others(end_ns)
        except KeyboardInterrupt:
            beside.stop()
            raise
        finally:
            beside.join()
        if req.verify:
            _verify(session, reports, parts.whole(end_ns), end_ns)
    except KeyboardInterrupt:
        # Ctrl-C: the signal in hand counted what it sent; the ones not begun, all of theirs
        planned = {"metrics": incident.sample_count, "logs": incident.log_line_count,
                   "traces": incident.span_count}
        for name, r in reports.items():
            if not r.failed and r.requests == 0 and r.sent == 0:
                r.fail("not begun: stopped by Ctrl-C", STOPPED.exit_code, planned[name],
                       (0, 0))
    finally:
        session.close()
    return LoadResult(parts.whole(end_ns), start_ns_for(incident, end_ns), end_ns,
                      list(reports.values()), notes)


def _spans_of(req: LoadRequest) -> Spans | None:
    """A long metrics-only window of a scenario: generated span by span, so memory follows
    the span (``generator.chunks``); None for everything else."""
    if not isinstance(req.source, str) or not _generated(req.source) or req.follow:
        return None
    from generator import get_scenario

    spec = get_scenario(req.source)
    duration = req.duration_ms if req.duration_ms is not None else \
        spec.default_duration_s * 1000
    if not spanned(duration, req.signals):
        return None
    return generate_spans(spec, req.seed, duration, req.step_ms, dict(req.knobs))


def _load_spans(req: LoadRequest, spans: Spans, now_ns: Callable[[], int],
                progress: Callable[[SignalReport], None] | None,
                transport: HttpTransport | None) -> LoadResult:
    """A long window's metrics, each span generated, pushed and dropped before the next;
    the first span settles the end (an earlier replay of the same series can move it)."""
    parts = iter(spans)
    first = shard(next(parts), *req.shard)
    check_extra_labels(req.extra_labels, first)
    end_ns, is_now = parse_end(req.end, now_ns(), first.step_ms)
    check_end(end_ns, now_ns(), first.step_ms, req.allow_future_end)
    extra = dict(req.extra_labels)
    start_ns = start_ns_for(first, end_ns)
    length = f"{spans.span_ms // 3_600_000} h" if spans.span_ms % 3_600_000 == 0 else \
        f"{spans.span_ms // 1000} s"
    notes = [f"generated in {spans.count} spans of {length}, each pushed before the next is "
             "generated (memory follows the span, not the window)"]
    totals = {"series": 0, "samples": 0, "exemplars": 0, "log_streams": 0, "log_lines": 0,
              "spans": 0}
    labels: set[tuple[tuple[str, str], ...]] = set()

    def tally(inc: Incident) -> None:
        labels.update(s.labels for s in inc.series)
        totals["series"] = len(labels)
        totals["samples"] += inc.sample_count
        totals["exemplars"] += inc.exemplar_count

    report = SignalReport("metrics", UNITS["metrics"])
    shown = first
    if req.dry_run:
        tally(first)
        for inc in parts:
            tally(shard(inc, *req.shard))
        return LoadResult(shift(first, end_ns, extra, parts=("metrics",)), start_ns, end_ns,
                          [], notes, totals)
    session = _Session(req, transport)
    verifier = _verifier(session, {"metrics": report}, end_ns) if req.verify else None
    done = 1  # spans generated so far
    try:
        end_ns = _metrics(session, first, end_ns, is_now, report, notes, progress,
                          spans=spans.count)
        start_ns = start_ns_for(first, end_ns)
        tally(first)
        if verifier is not None:
            verifier.end_ns = end_ns
            verifier.copy(shift(first, end_ns, extra, parts=("metrics",)))
        for inc in _generating(parts, report):
            done += 1
            inc = shown = shard(inc, *req.shard)
            tally(inc)
            shifted = shift(inc, end_ns, extra, parts=("metrics",))
            before = report.accepted
            _push_span(session, shifted, report, start_ns // NS_PER_MS, end_ns // NS_PER_MS,
                       progress)
            if not report.failed and report.accepted == before and shifted.sample_count:
                # a server that takes nothing (gone past the retry budget, refusing all):
                # the later spans are not tried, each for the whole budget again
                report.fail(f"the server took none of span {done} of {spans.count}", 1, 0,
                            report.mark())
            if verifier is not None:
                verifier.copy(shifted)
        if verifier is not None:
            verifier.finish()
    except KeyboardInterrupt:
        _stopped([report], spans.count - done, spans.count, "spans")
    else:
        if done < spans.count:
            report.notes.append(f"{spans.count - done} of {spans.count} spans were not "
                                "generated, nor sent (after the failure above)")
    finally:
        session.close()
    report.notes.extend(n for n in notes if n not in report.notes)
    return LoadResult(shift(shown, end_ns, extra, parts=("metrics",)), start_ns, end_ns,
                      [report], notes, totals)


def _generating(parts: Iterator[Incident], report: SignalReport) -> Iterator[Incident]:
    """The spans as they are generated, until the load has failed; one that cannot be (a
    queue without bound) ends the load as a failure, with the reason: what was sent before
    is counted."""
    while not report.failed:  # after a failure nothing more is generated, nor sent
        try:
            inc = next(parts)
        except StopIteration:
            return
        except ScenarioError as exc:
            report.fail(str(exc), 2, 0, report.mark())
            return
        yield inc


def _push_span(session: _Session, shifted: Incident, report: SignalReport, start_ms: int,
               end_ms: int, progress: Callable[[SignalReport], None] | None) -> None:
    """One more span of a window whose first span settled the server and the end: its
    samples only (the metadata went with the first)."""
    mark, clipped = report.mark(), report.clipped
    try:
        info = session.info
        assert info is not None  # the first span's preflight
        series = check_window(shifted.series, info, session.req.push, report, start_ms,
                              end_ms)
        if not report.failed:
            push_slices(session.prometheus, series, info, session.req.push, report, progress)
    except (PreflightError, TransportError) as exc:
        _fail(report, exc, shifted.sample_count - (report.clipped - clipped), mark)
    except KeyboardInterrupt:
        _fail(report, STOPPED, shifted.sample_count - (report.clipped - clipped), mark)
        raise


def _generated(source: str) -> bool:
    """Whether ``source`` names a scenario or a scenario file (.toml), not a recording."""
    path = Path(source)
    return path.suffix == ".toml" or not (path.suffix in (".gz", ".jsonl") or path.exists())


class _Shifted:
    """The incident in absolute time, a signal at a time: each sender lays its own signal
    (in its own thread), once per end; the whole is put together from the parts."""

    def __init__(self, incident: Incident, extra: dict[str, str]) -> None:
        self.incident, self.extra = incident, extra
        self.parts: dict[tuple[str, int], Incident] = {}

    def part(self, signal: str, end_ns: int) -> Incident:
        got = self.parts.get((signal, end_ns))
        if got is None:
            got = self.parts[signal, end_ns] = shift(self.incident, end_ns, self.extra,
                                                     parts=(signal,))
        return got

    def whole(self, end_ns: int) -> Incident:
        m, lg, tr = (self.part(s, end_ns) for s in SIGNALS)
        return replace(m, log_streams=lg.log_streams, span_tables=tr.span_tables)


class _Beside:
    """Signals sent in threads beside the main one. Ctrl-C reaches only the main thread:
    ``stop`` cancels every transport, so each signal's lanes finish the request in hand,
    count what they did not send, and end; ``join`` waits for them (again after a second
    Ctrl-C) and re-raises what a thread raised, KeyboardInterrupt last."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.threads: list[threading.Thread] = []
        self.raised: list[BaseException] = []
        self.started = False

    def start(self, fn: Callable[..., None], *args: object) -> None:
        self.started = True

        def run() -> None:
            try:
                fn(*args)
            except BaseException as exc:  # handed to the main thread by join()
                self.raised.append(exc)

        thread = threading.Thread(target=run, name=f"replayer-{fn.__name__.strip('_')}")
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.session.cancel()

    def join(self) -> None:
        while self.threads:
            try:
                self.threads[-1].join()
                self.threads.pop()
            except KeyboardInterrupt:
                self.stop()
                self.raised.append(KeyboardInterrupt())
        raised, self.raised = self.raised, []
        for exc in sorted(raised, key=lambda e: isinstance(e, KeyboardInterrupt)):
            raise exc


def _verify(session: _Session, reports: dict[str, SignalReport], shifted: Incident,
            end_ns: int) -> None:
    verifier = _verifier(session, reports, end_ns)
    verifier.copy(shifted)
    verifier.finish()


def _verifier(session: _Session, reports: dict[str, SignalReport], end_ns: int) -> Verifier:
    """What `--verify` reads back with: the load's own Prometheus and Loki transports, and
    Tempo's HTTP API (--tempo-api-url; closed with the session)."""
    req = session.req
    tempo = HttpTransport(req.tempo_api) if req.tempo_api else None
    if tempo is not None:
        session.extra.append(tempo)
    return Verifier(reports, end_ns, dict(req.extra_labels),
                    {"metrics": session.prometheus, "logs": session.loki, "traces": tempo},
                    req.say)


def relabel_instance(incident: Incident, index: int) -> Incident:
    """Copy ``index`` of the service: ``instance`` labels become ``host-<index>:port`` and
    log streams get an ``instance`` label, so copies never share a series or stream."""
    from generator.model import LogStream, Series, make_labels

    def rename(value: str) -> str:
        host, sep, port = value.rpartition(":")
        return f"{host}-{index}:{port}" if sep else f"{value}-{index}"

    series = tuple(Series(make_labels({k: rename(v) if k == "instance" else v
                                       for k, v in s.labels}), s.t_ms, s.values, s.exemplars)
                   for s in incident.series)
    streams = tuple(LogStream(make_labels({**dict(s.labels), "instance": f"copy-{index}"}),
                              s.t_ns, s.lines, s.metadata, s.time_prefix)
                    for s in incident.log_streams)
    return replace(incident, series=series, log_streams=streams)


def _load_instances(req: LoadRequest, now_ns: Callable[[], int],
                    progress: Callable[[SignalReport], None] | None,
                    transport: HttpTransport | None) -> LoadResult:
    """N copies of the scenario, each generated, pushed and dropped before the next, so
    memory is bounded by one copy, not by the whole load."""
    if isinstance(req.source, Incident) or Path(req.source).exists() or \
            str(req.source).endswith((".jsonl", ".gz")):
        raise UsageError("--instances needs a scenario name (it generates each copy)")
    if req.follow:
        raise UsageError("--instances and --follow do not go together")

    def copy(i: int) -> Incident:
        inc = generate(str(req.source), seed=req.seed + i, duration_ms=req.duration_ms,
                       step_ms=req.step_ms, knobs=dict(req.knobs), signals=req.signals)
        inc = relabel_instance(shard(inc, *req.shard), i)
        return salt_trace_ids(inc, req.trace_salt) if req.trace_salt else inc

    first: Incident | None = copy(0)
    assert first is not None
    check_extra_labels(req.extra_labels, first)
    end_ns, is_now = parse_end(req.end, now_ns(), first.step_ms)
    check_end(end_ns, now_ns(), first.step_ms, req.allow_future_end)
    duration_ns = first.duration_ms * NS_PER_MS
    reports = {s: SignalReport(s, UNITS[s]) for s in req.signals}
    notes: list[str] = [f"{req.instances} copies of the service"]
    if req.dry_run:
        return LoadResult(shift(first, end_ns, dict(req.extra_labels)), end_ns - duration_ns,
                          end_ns, [], notes)
    session = _Session(req, transport)
    verifier = _verifier(session, reports, end_ns) if req.verify else None
    last: Incident | None = None
    shown: Incident = first  # what the result shows if it stops early
    i = 0
    try:
        for i in range(req.instances):
            last = None  # only one copy is alive at a time
            inc = first if first is not None else copy(i)
            first, shown = None, inc
            # every copy is tried, after a failure too: a server back within the retry
            # budget takes the next copies, and a copy that fails is counted as not sent
            if "metrics" in reports:
                end_ns = _metrics(session, inc, end_ns, is_now and i == 0, reports["metrics"],
                                  [] if i else notes, progress)
            last = shift(inc, end_ns, dict(req.extra_labels))
            if "logs" in reports:
                _logs(session, last, end_ns - duration_ns, now_ns(), reports["logs"], progress)
            if "traces" in reports:
                _traces(session, last, end_ns - duration_ns, reports["traces"], progress)
            if verifier is not None:
                verifier.end_ns = end_ns  # the first copy's metrics can re-lay the end
                verifier.copy(last)  # its streams and traces, while the copy is in memory
        if verifier is not None:
            verifier.finish()
    except KeyboardInterrupt:
        # the copy in hand counted what it sent; the later copies were never generated
        _stopped(reports.values(), req.instances - (i + 1), req.instances, "copies")
    finally:
        session.close()
    if last is None:  # stopped before the copy in hand was shifted
        last = shift(shown, end_ns, dict(req.extra_labels))
    return LoadResult(last, end_ns - duration_ns, end_ns, list(reports.values()), notes)


def _metrics(session: _Session, incident: Incident, end_ns: int, is_now: bool,
             report: SignalReport, notes: list[str],
             progress: Callable[[SignalReport], None] | None,
             ready: Callable[[int], None] | None = None, spans: int | None = None) -> int:
    """Push the metrics; returns the end actually used (an overlap can re-lay it).
    ``ready(end_ns)`` is called once that end is settled, before the samples go out.
    ``spans``: ``incident`` is the first of that many spans of a long window."""
    req = session.req
    transport = session.prometheus
    mark, clipped = report.mark(), report.clipped
    try:
        if req.say:  # a slow server kept the user waiting without a word
            req.say(f"asking {req.targets.prometheus.url} what it accepts")
        info = session.info = preflight(transport)
        notes += check_server(info, req.targets.prometheus.url, req.push.send_exemplars)
        exemplars = incident.exemplar_count if spans is None else \
            incident.exemplar_count * spans  # the first span's, times the spans
        warn = exemplar_note(info, exemplars, spans is not None) if req.push.send_exemplars \
            and info.exemplar_storage is not False else None
        if warn:
            notes.append(warn.split("\n")[0])
            if req.say:  # before sending, not only in the summary
                req.say(warn)
        end_ns = _settle_overlap(transport, incident, end_ns, is_now, req, notes)
        if ready is not None:
            ready(end_ns)
        shifted = shift(incident, end_ns, dict(req.extra_labels), parts=("metrics",))
        start_ms = start_ns_for(incident, end_ns) // NS_PER_MS
        push_metrics(transport, shifted, info, req.push, report, start_ms,
                     end_ns // NS_PER_MS, progress, sliced=spans is not None)
    except (PreflightError, TransportError) as exc:
        _fail(report, exc, incident.sample_count - (report.clipped - clipped), mark)
    except KeyboardInterrupt:
        _fail(report, STOPPED, incident.sample_count - (report.clipped - clipped), mark)
        raise
    report.notes.extend(n for n in notes if n not in report.notes)
    return end_ns


def _settle_overlap(transport: HttpTransport, incident: Incident, end_ns: int, is_now: bool,
                    req: LoadRequest, notes: list[str]) -> int:
    shifted = shift(incident, end_ns, dict(req.extra_labels), parts=("metrics",))
    start_ms = start_ns_for(incident, end_ns) // NS_PER_MS
    overlap = find_overlap(transport, shifted.series, start_ms, end_ns // NS_PER_MS,
                           incident.duration_ms)
    if overlap is None or overlap.identical:
        return end_ns
    earlier = overlap.earlier_end_ms
    if not is_now or earlier is None:
        raise PreflightError(_overlap_message(earlier, incident.duration_ms, incident.step_ms))
    end_ns = earlier * NS_PER_MS
    shifted = shift(incident, end_ns, dict(req.extra_labels), parts=("metrics",))
    again = find_overlap(transport, shifted.series, end_ns // NS_PER_MS - incident.duration_ms,
                         end_ns // NS_PER_MS, incident.duration_ms)
    if again is not None and not again.identical:
        raise PreflightError(_overlap_message(earlier, incident.duration_ms, incident.step_ms))
    notes.append(f"an earlier replay of these series ends at {iso(earlier * NS_PER_MS)}; this "
                 "load was "
                 "laid onto it (same end) so nothing is stored twice; pass --label run=NAME "
                 "to load a separate copy ending now")
    return end_ns


def _logs(session: _Session, shifted: Incident, start_ns: int, now: int, report: SignalReport,
          progress: Callable[[SignalReport], None] | None) -> None:
    """The entries from the incident's onset on go first when Loki takes a stream's
    entries out of order that far back (see ``replayer.loki.push.onset_first``), as
    the traces do."""
    req = session.req
    mark = report.mark()
    onset = shifted.truth.onset_ms
    first_ns = None if onset is None else start_ns + onset * NS_PER_MS
    try:
        if req.say:
            req.say(f"asking {req.targets.loki.url} what it accepts")
        info = preflight_loki(session.loki)
        uses_metadata = any(m for s in shifted.log_streams for m in s.metadata)
        check_loki(info, req.targets.loki.url, start_ns, now, uses_metadata)
        push_logs(session.loki, shifted.log_streams, req.loki, info, report, progress=progress,
                  first_ns=first_ns)
    except (PreflightError, TransportError) as exc:
        _fail(report, exc, shifted.log_line_count, mark)
    except KeyboardInterrupt:
        _fail(report, STOPPED, shifted.log_line_count, mark)
        raise


def _traces(session: _Session, shifted: Incident, start_ns: int, report: SignalReport,
            progress: Callable[[SignalReport], None] | None) -> None:
    """The traces from the incident's onset on go first: Tempo takes traces in any order,
    and whoever looks at the incident while the load runs (a dashboard, an agent started
    beside it) finds its traces before the calm start of the window is sent."""
    mark = report.mark()
    onset = shifted.truth.onset_ms
    first_ns = None if onset is None else start_ns + onset * NS_PER_MS
    try:
        session.tempo.check()
        push_traces(session.tempo, shifted.span_tables, report, progress=progress,
                    concurrency=session.req.push.concurrency, first_ns=first_ns)
    except (PreflightError, TransportError) as exc:
        _fail(report, exc, shifted.span_count, mark)
    except KeyboardInterrupt:
        _fail(report, STOPPED, shifted.span_count, mark)
        raise


def _overlap_message(earlier_ms: int | None, duration_ms: int, step_ms: int) -> str:
    """The conflict, its time as a time, and fixes that work now (an --end after the
    earlier replay would be in the future, which Prometheus refuses)."""
    when = f"ending at {iso(earlier_ms * NS_PER_MS)}" if earlier_ms is not None else "nearby"
    before = (f", or --end {iso((earlier_ms - duration_ms - step_ms) * NS_PER_MS)} or "
              "earlier (a window that ends a step before the earlier one begins)"
              if earlier_ms is not None else "")
    return ("Prometheus already holds different samples for these series inside this window "
            f"(an earlier replay {when}, whose seed, scenario, window or knobs differ). "
            "Loading now would interleave two incidents in the same series.\n"
            f"  fix: --label run=NAME to load a separate copy{before}")


def default_live_from(incident: Incident) -> int:
    """Where --follow puts "now": two minutes before the onset, so the incident unfolds live."""
    onset = incident.truth.onset_ms
    at = incident.duration_ms // 2 if onset is None else max(onset - 120_000, incident.step_ms)
    return at - at % incident.step_ms


@dataclass
class _Live:
    """What --follow pushes, signal by signal, for one time slice."""

    session: _Session
    shifted: Incident
    reports: dict[str, SignalReport]
    metrics_info: ServerInfo | None = None
    loki_info: object = None
    pacer: Pacer | None = None

    def push(self, lo_ms: int, hi_ms: int,
             progress: Callable[[SignalReport], None] | None) -> None:
        req = self.session.req
        for signal, report in self.reports.items():
            if report.failed:
                continue
            mark = report.mark()
            try:
                if signal == "metrics" and self.metrics_info is not None:
                    push_series(self.session.prometheus,
                                slice_series(self.shifted.series, lo_ms, hi_ms),
                                self.metrics_info, req.push, report, progress)
                elif signal == "logs":
                    push_logs(self.session.loki, slice_logs(
                        self.shifted.log_streams, lo_ms * NS_PER_MS, hi_ms * NS_PER_MS),
                        req.loki, self.loki_info, report, self.pacer)  # type: ignore[arg-type]
                elif signal == "traces":
                    push_traces(self.session.tempo, slice_spans(
                        self.shifted.span_tables, lo_ms * NS_PER_MS, hi_ms * NS_PER_MS), report,
                        concurrency=req.push.concurrency)
            except (PreflightError, TransportError) as exc:
                _fail(report, exc, report.sent - mark[0], mark)


def _follow(req: LoadRequest, incident: Incident, now_ns: Callable[[], int],
            progress: Callable[[SignalReport], None] | None, transport: HttpTransport | None,
            sleep: Callable[[float], None]) -> LoadResult:
    """Backfill up to now, then push each new step as its time comes, until the window
    ends or Ctrl-C."""
    if req.end != "now":
        raise UsageError("--follow lays the window itself (now sits at --live-from); drop --end")
    step = incident.step_ms
    live_from = default_live_from(incident) if req.live_from_ms is None else req.live_from_ms
    if not 0 <= live_from < incident.duration_ms:
        raise UsageError(f"--live-from must lie inside the {incident.duration_ms // 60000} min "
                         "window")
    now_ms = now_ns() // NS_PER_MS
    now_ms -= now_ms % step
    end_ms = now_ms + incident.duration_ms - live_from
    start_ms = end_ms - incident.duration_ms
    shifted = shift(incident, end_ms * NS_PER_MS, dict(req.extra_labels))
    reports = {s: SignalReport(s, UNITS[s]) for s in req.signals}
    notes: list[str] = []
    session = _Session(req, transport)
    live = _Live(session, shifted, reports)
    try:
        _follow_preflight(live, start_ms, now_ms, notes)
        live.push(start_ms, now_ms + 1, progress)
        done = now_ms + 1
        try:
            while done <= end_ms:
                due = done - 1 + step
                wait_s = (due * NS_PER_MS - now_ns()) / 1e9
                if wait_s > 0:
                    sleep(wait_s)
                live.push(done, due + 1, progress)
                done = due + 1
        except KeyboardInterrupt:
            left = sum(len(s) for s in slice_series(shifted.series, done, end_ms + 1))
            notes.append(f"stopped by Ctrl-C; {left} samples of the window's future were "
                         "never due and not sent")
            if req.verify:
                notes.append("verify: not run, the window was stopped before its end")
        else:
            if req.verify:  # the whole window is out: read it back as one load
                _verify(session, reports, live.shifted, end_ms * NS_PER_MS)
    finally:
        session.close()
    for r in reports.values():
        r.notes.extend(notes)
    return LoadResult(shifted, start_ms * NS_PER_MS, end_ms * NS_PER_MS, list(reports.values()),
                      notes)


def _follow_preflight(live: _Live, start_ms: int, now_ms: int, notes: list[str]) -> None:
    req, session, shifted = live.session.req, live.session, live.shifted
    for signal, report in live.reports.items():
        try:
            if signal == "metrics":
                info = preflight(session.prometheus)
                notes += check_server(info, req.targets.prometheus.url, req.push.send_exemplars)
                kept = check_window(shifted.series, info, req.push, report, start_ms, now_ms)
                live.shifted = shifted = replace(shifted, series=kept)
                send_metadata(session.prometheus, shifted, report, req.push.write_url)
                live.metrics_info = info
            elif signal == "logs":
                live.loki_info = info_l = preflight_loki(session.loki)
                check_loki(info_l, req.targets.loki.url, start_ms * NS_PER_MS,
                           now_ms * NS_PER_MS, True)
                rate = req.loki.rate_bytes_s
                live.pacer = Pacer(rate if rate is not None else 3 * 1024 * 1024)
            elif signal == "traces":
                session.tempo.check()
        except (PreflightError, TransportError) as exc:
            _fail(report, exc, {"metrics": shifted.sample_count, "logs": shifted.log_line_count,
                                "traces": shifted.span_count}[signal])
