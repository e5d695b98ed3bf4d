"""`replayer load`: resolve the source, lay it at --end, preflight, push, account."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from generator import generate
from generator.model import Incident

from .errors import PreflightError, UsageError
from .prometheus import (
    PushOptions,
    check_server,
    check_window,
    find_overlap,
    preflight,
    push_metrics,
    push_series,
    send_metadata,
    slice_series,
)
from .recording import read_recording
from .report import SignalReport
from .timeshift import NS_PER_MS, parse_end, shift, start_ns_for
from .transport import HttpTransport, TargetConfig

SIGNALS = ("metrics", "logs", "traces")


@dataclass(frozen=True)
class LoadRequest:
    source: str
    seed: int = 1
    duration_ms: int | None = None
    step_ms: int | None = None
    knobs: tuple[tuple[str, str], ...] = ()
    end: str = "now"
    signals: tuple[str, ...] = ("metrics",)
    prometheus: TargetConfig = field(default_factory=lambda: TargetConfig(
        "http://localhost:9090"))
    push: PushOptions = field(default_factory=PushOptions)
    extra_labels: tuple[tuple[str, str], ...] = ()
    dry_run: bool = False
    follow: bool = False
    live_from_ms: int | None = None  # --follow: where in the window "now" sits


@dataclass
class LoadResult:
    incident: Incident  # time-shifted
    start_ns: int
    end_ns: int
    reports: list[SignalReport]
    notes: list[str]

    @property
    def lost(self) -> bool:
        return any(r.lost for r in self.reports)


def resolve_source(source: str, seed: int, duration_ms: int | None, step_ms: int | None,
                   knobs: dict[str, str]) -> Incident:
    """A scenario name, or a path to a recording file."""
    path = Path(source)
    if path.suffix in (".gz", ".jsonl") or path.exists():
        if knobs or duration_ms or step_ms:
            raise UsageError("--set, --duration and --step apply to scenarios, not recordings")
        return read_recording(path)
    return generate(source, seed=seed, duration_ms=duration_ms, step_ms=step_ms, knobs=knobs)


def run_load(req: LoadRequest, now_ns: Callable[[], int] = time.time_ns,
             progress: Callable[[SignalReport], None] | None = None,
             transport: HttpTransport | None = None,
             sleep: Callable[[float], None] = time.sleep) -> LoadResult:
    incident = resolve_source(req.source, req.seed, req.duration_ms, req.step_ms,
                              dict(req.knobs))
    if req.follow:
        return _follow(req, incident, now_ns, progress, transport, sleep)
    end_ns, is_now = parse_end(req.end, now_ns(), incident.step_ms)
    shifted = shift(incident, end_ns, dict(req.extra_labels))
    notes: list[str] = []
    reports: list[SignalReport] = []
    if req.dry_run or "metrics" not in req.signals:
        return LoadResult(shifted, start_ns_for(incident, end_ns), end_ns, reports, notes)

    own = transport is None
    transport = transport or HttpTransport(req.prometheus, pool_size=req.push.concurrency + 1)
    try:
        info = preflight(transport)
        notes += check_server(info, req.prometheus.url, req.push.send_exemplars)
        start_ms = start_ns_for(incident, end_ns) // NS_PER_MS
        overlap = find_overlap(transport, shifted.series, start_ms, end_ns // NS_PER_MS,
                               incident.duration_ms)
        if overlap is not None and not overlap.identical:
            earlier = overlap.earlier_end_ms
            if not is_now or earlier is None:
                raise PreflightError(_overlap_message(end_ns, earlier))
            end_ns = earlier * NS_PER_MS
            shifted = shift(incident, end_ns, dict(req.extra_labels))
            again = find_overlap(transport, shifted.series, end_ns // NS_PER_MS
                                 - incident.duration_ms, end_ns // NS_PER_MS,
                                 incident.duration_ms)
            if again is not None and not again.identical:
                raise PreflightError(_overlap_message(end_ns, earlier))
            notes.append(f"an earlier replay of these series ends at {earlier} ms; this load "
                         "was laid onto it (same end) so nothing is stored twice; pass "
                         "--label run=NAME to load a separate copy ending now")
        report = SignalReport("metrics", "samples")
        reports.append(report)
        start_ms = start_ns_for(incident, end_ns) // NS_PER_MS
        push_metrics(transport, shifted, info, req.push, report, start_ms,
                     end_ns // NS_PER_MS, progress)
        report.notes.extend(notes)
    finally:
        if own:
            transport.close()
    return LoadResult(shifted, start_ns_for(incident, end_ns), end_ns, reports, notes)


def _overlap_message(end_ns: int, earlier_ms: int | None) -> str:
    return ("Prometheus already holds different samples for these series inside this window "
            f"(an earlier replay ending at {earlier_ms} ms, of another seed or scenario). "
            "Loading now would interleave two incidents in the same series.\n"
            "  fix: --label run=NAME to load a separate copy, or an --end at least one window "
            "after the earlier one")


def default_live_from(incident: Incident) -> int:
    """Where --follow puts "now": two minutes before the onset, so the incident unfolds live."""
    onset = incident.truth.onset_ms
    at = incident.duration_ms // 2 if onset is None else max(onset - 120_000, incident.step_ms)
    return at - at % incident.step_ms


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
    shifted = shift(incident, end_ms * NS_PER_MS, dict(req.extra_labels))
    start_ms = end_ms - incident.duration_ms
    report = SignalReport("metrics", "samples")
    notes: list[str] = []
    own = transport is None
    transport = transport or HttpTransport(req.prometheus, pool_size=req.push.concurrency + 1)
    try:
        info = preflight(transport)
        notes += check_server(info, req.prometheus.url, req.push.send_exemplars)
        backfill = check_window(slice_series(shifted.series, start_ms, now_ms + 1), info,
                                req.push, report, start_ms, now_ms)
        send_metadata(transport, shifted, report)
        push_series(transport, backfill, info, req.push, report, progress)
        done = now_ms + 1
        try:
            while done <= end_ms:
                due = done - 1 + step
                wait_s = (due * NS_PER_MS - now_ns()) / 1e9
                if wait_s > 0:
                    sleep(wait_s)
                push_series(transport, slice_series(shifted.series, done, due + 1), info,
                            req.push, report, progress)
                done = due + 1
        except KeyboardInterrupt:
            left = sum(len(s) for s in slice_series(shifted.series, done, end_ms + 1))
            notes.append(f"stopped by Ctrl-C; {left} samples of the window's future were "
                         "never due and not sent")
    finally:
        if own:
            transport.close()
    report.notes.extend(notes)
    return LoadResult(shifted, start_ms * NS_PER_MS, end_ms * NS_PER_MS, [report], notes)
