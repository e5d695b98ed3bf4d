"""The public Python API: generate, load, read/write recordings, record.

    from replayer import generate, load, Targets
    report = load("slow_query", Targets(prometheus="http://localhost:9090"), end="now")
    report.truth.onset          # absolute datetime of the onset
    report.truth.example_trace_ids
    report.raise_for_loss()     # nothing silently lost
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from generator import Scenario
from generator import generate as _generate
from generator.model import GroundTruth, Incident

from .errors import DataLossError, UsageError
from .load import SIGNALS, LoadRequest, run_load
from .load import Targets as _LoadTargets
from .prometheus import PushOptions, parse_prom_duration
from .recording import read_recording as _read
from .recording import write_recording as _write
from .report import SignalReport
from .traceids import salt_of
from .transport import TargetConfig

NS_PER_MS = 1_000_000


@dataclass(frozen=True)
class Targets:
    """Where to load: URLs, plus auth and tenant applied to every target."""

    prometheus: str = "http://localhost:9090"
    loki: str = "http://localhost:3100"
    tempo: str = "http://localhost:4317"  # OTLP gRPC for load; Tempo's HTTP API for record
    tempo_protocol: str = "grpc"
    tenant: str | None = None
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def _config(self, url: str) -> TargetConfig:
        return TargetConfig(url=url, tenant=self.tenant, basic_auth=self.basic_auth,
                            bearer_token=self.bearer_token, headers=tuple(self.headers.items()))


def _ms(value: str | int | dt.timedelta | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        return int(value.total_seconds() * 1000)
    if isinstance(value, int):
        return value
    try:
        return parse_prom_duration(value)
    except ValueError:
        raise UsageError(f"{what} {value!r} is not a duration like '30m' or '15s'") from None


def generate(scenario: str | Path | Scenario, seed: int = 1,
             duration: str | int | dt.timedelta | None = None,
             step: str | int | dt.timedelta | None = None,
             knobs: Mapping[str, object] | None = None) -> Incident:
    """The incident ``scenario`` (a built-in name, a scenario file's path, or a parsed
    :class:`Scenario`) for ``seed`` (durations as '30m', ms, or timedelta)."""
    if isinstance(scenario, Path):
        scenario = str(scenario)
    return _generate(scenario, seed=seed, duration_ms=_ms(duration, "duration"),
                     step_ms=_ms(step, "step"), knobs=knobs)


def read_recording(path: str | Path) -> Incident:
    return _read(path)


def write_recording(incident: Incident, path: str | Path) -> None:
    _write(incident, path)


def _at(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.timezone.utc)


_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{")


def scope_promql(query: str, labels: Mapping[str, str]) -> str:
    """Add ``labels`` as matchers to every ``metric{...}`` selector of ``query`` (the form
    the ground-truth queries use), so a query sees one load's series only."""
    if not labels:
        return query
    extra = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return _SELECTOR.sub(lambda m: f"{m.group(1)}{{{extra}, ", query).replace(", }", "}")


def scope_logql(query: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return query
    extra = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return re.sub(r"^\{", "{" + extra + ", ", query.strip(), count=1)


@dataclass(frozen=True)
class AbsoluteTruth:
    """The ground truth laid at the load's window: absolute times, real trace IDs."""

    summary: str
    root_cause_component: str
    root_cause_kind: str
    onset: dt.datetime | None
    peak: dt.datetime | None
    recovery: dt.datetime | None
    phases: tuple[tuple[str, dt.datetime, dt.datetime], ...]
    affected_signals: tuple[str, ...]
    example_trace_ids: tuple[str, ...]
    promql: tuple[tuple[str, str], ...]
    logql: tuple[tuple[str, str], ...]
    traceql: tuple[tuple[str, str], ...]
    root_cause_identity: tuple[tuple[str, str], ...] = ()  # how the data names the cause
    trace_sampling: tuple[tuple[str, str], ...] = ()  # which requests have a trace
    # several faults (the primary first), each with its phases in absolute time: (kind,
    # component, root_cause_kind, primary, phases); empty for a single fault
    faults: tuple[tuple[str, str, str, bool,
                        tuple[tuple[str, dt.datetime, dt.datetime], ...]], ...] = ()
    # what happened and caused nothing: (kind, start, end, how it shows)
    red_herrings: tuple[tuple[str, dt.datetime, dt.datetime, str], ...] = ()

    @staticmethod
    def of(truth: GroundTruth, start_ns: int, labels: Mapping[str, str]) -> AbsoluteTruth:
        def when(ms: int | None) -> dt.datetime | None:
            return None if ms is None else _at(start_ns + ms * NS_PER_MS)

        return AbsoluteTruth(
            summary=truth.summary, root_cause_component=truth.root_cause_component,
            root_cause_kind=truth.root_cause_kind, onset=when(truth.onset_ms),
            peak=when(truth.peak_ms), recovery=when(truth.recovery_ms),
            phases=tuple((p.name, _at(start_ns + p.start_ms * NS_PER_MS),
                          _at(start_ns + p.end_ms * NS_PER_MS)) for p in truth.phases),
            affected_signals=truth.affected_signals,
            example_trace_ids=truth.example_trace_ids,
            promql=tuple((w, scope_promql(q, labels)) for w, q in truth.promql),
            logql=tuple((w, scope_logql(q, labels)) for w, q in truth.logql),
            traceql=truth.traceql, root_cause_identity=truth.root_cause_identity,
            trace_sampling=truth.trace_sampling,
            faults=tuple((f.kind, f.component, f.root_cause_kind, f.primary, tuple(
                (p.name, _at(start_ns + p.start_ms * NS_PER_MS),
                 _at(start_ns + p.end_ms * NS_PER_MS)) for p in f.phases))
                for f in truth.faults),
            red_herrings=tuple((h.kind, _at(start_ns + h.start_ms * NS_PER_MS),
                                _at(start_ns + h.end_ms * NS_PER_MS), h.what)
                               for h in truth.red_herrings))


@dataclass
class LoadReport:
    """What a load did, per signal, and the incident's ground truth in absolute time."""

    signals: dict[str, SignalReport]
    window_start: dt.datetime
    window_end: dt.datetime
    step: dt.timedelta
    truth: AbsoluteTruth
    labels: dict[str, str]  # added to every series and stream (e.g. the pytest run label)
    incident: Incident  # time-shifted
    targets: Targets = field(default_factory=lambda: Targets())

    @property
    def prometheus_url(self) -> str:
        return self.targets.prometheus

    @property
    def failures(self) -> dict[str, tuple[int, str]]:
        """Signals a backend could not take at all: name -> (exit code, why)."""
        return {n: (r.failure_code, r.failed) for n, r in self.signals.items() if r.failed}

    @property
    def lost(self) -> bool:
        return any(r.lost or r.failed for r in self.signals.values())

    def raise_for_loss(self) -> None:
        if self.lost:
            lines = [line for r in self.signals.values() for line in r.lines()]
            raise DataLossError("not everything was stored:\n" + "\n".join(lines))


def load(source: Incident | Scenario | str | Path, targets: Targets | None = None,
         end: object = "now",
         signals: Sequence[str] = SIGNALS, labels: Mapping[str, str] | None = None,
         seed: int = 1, trace_id_salt: str | None = None,
         allow_future_end: bool = False) -> LoadReport:
    """Load a scenario name, a scenario file (path or parsed :class:`Scenario`), a recording
    path or an :class:`Incident`, ending at ``end``
    ('now', an RFC 3339 string or an aware datetime; more than one step after now only
    with ``allow_future_end``). ``labels`` go on every series and log stream;
    ``trace_id_salt`` gives the load its own trace IDs (consistently in spans, exemplars and
    logs). Never raises for rejected data: check :attr:`LoadReport.lost` or call
    :meth:`LoadReport.raise_for_loss`."""
    targets = targets or Targets()
    if isinstance(source, Scenario):  # a parsed scenario file
        source = _generate(source, seed=seed)
    if isinstance(end, dt.datetime):
        if end.tzinfo is None:
            raise UsageError("end must be timezone-aware (e.g. datetime.now(timezone.utc))")
        end = end.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    req = LoadRequest(
        source=source if isinstance(source, Incident) else str(source), seed=seed,
        end=str(end), signals=tuple(signals),
        targets=_LoadTargets(prometheus=targets._config(targets.prometheus),
                             loki=targets._config(targets.loki),
                             tempo=targets._config(targets.tempo),
                             tempo_protocol=targets.tempo_protocol),
        push=PushOptions(), extra_labels=tuple((labels or {}).items()),
        trace_salt=salt_of(trace_id_salt) if trace_id_salt else None,
        allow_future_end=allow_future_end)
    result = run_load(req)
    start_ns = result.start_ns
    return LoadReport(
        signals={r.signal: r for r in result.reports}, window_start=_at(start_ns),
        window_end=_at(result.end_ns), step=dt.timedelta(milliseconds=result.incident.step_ms),
        truth=AbsoluteTruth.of(result.incident.truth, start_ns, dict(labels or {})),
        labels=dict(labels or {}), incident=result.incident, targets=targets)


def record(start: dt.datetime, end: dt.datetime, targets: Targets | None = None,
           signals: Sequence[str] = SIGNALS, match: Sequence[str] = ('{job=~".+"}',),
           logql: str = '{service_name=~".+"}', traceql: str = "{ }",
           allow_partial: bool = False) -> Incident:
    """Record ``[start, end]`` of a running stack. An incomplete read raises
    :class:`DataLossError` unless ``allow_partial``."""
    from .record.run import RecordRequest, run_record

    targets = targets or Targets(tempo="http://localhost:3200")
    incident, report = run_record(RecordRequest(
        start_ms=int(start.timestamp() * 1000), end_ms=int(end.timestamp() * 1000),
        signals=tuple(signals), prometheus=targets._config(targets.prometheus),
        loki=targets._config(targets.loki), tempo=targets._config(targets.tempo),
        matchers=tuple(match), logql=logql, traceql=traceql))
    if report.problems and not allow_partial:
        raise DataLossError("the recording is incomplete:\n" + "\n".join(report.problems))
    return incident


__all__ = ["AbsoluteTruth", "Incident", "LoadReport", "SignalReport", "Targets", "generate",
           "load", "read_recording", "record", "scope_logql", "scope_promql",
           "write_recording"]
