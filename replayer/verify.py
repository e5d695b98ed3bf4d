"""`load --verify`: after a load, count back what each backend stored for the window.

A server can lose what it accepted: in ~30 multi-hour backfills into an empty Prometheus
2.42, three lost samples after answering 204 (an out-of-order/compaction race in the
server). The answers cannot show that; reading back can. For each signal:

- metrics: per metric name, ``sum(count_over_time({__name__="x", <labels of this load>}
  [window]))`` at the window's end, against the samples this load accepted of that name;
- logs: per stream, LogQL ``sum(count_over_time({<stream labels>}[window]))``;
- traces: a sample of trace IDs (up to ``TRACE_SAMPLE``, spread over the load), each
  fetched from Tempo, its span count against the load's. Tempo 3.0.3 answers 404 for a
  trace it holds for a second or two while it writes the trace from its live traces to a
  block (measured: 30 of 40 traces of a replayed half hour not found 1.5 s after the push
  and every one found 2 s later), so a trace not found whole is asked for again, with
  backoff, for up to ``SETTLE_S`` before its missing spans count as lost.

A shortfall is a loss (exit 1). More than the load (an earlier identical load, other data
in the same series) is not: it is said, not counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from generator.model import Incident

from .errors import TransportError
from .prometheus import label_selector
from .record.tempo import SETTLE_S, fetch
from .report import SignalReport
from .transport import HttpTransport

TRACE_SAMPLE = 25


@dataclass
class Verified:
    expected: int
    stored: int
    unit: str  # "samples" | "lines" | "spans"
    sampled: int = 0  # traces: how many were fetched

    @property
    def what(self) -> str:
        return f"spans of {self.sampled} sampled traces" if self.sampled else self.unit

    def __add__(self, other: Verified) -> Verified:
        return Verified(self.expected + other.expected, self.stored + other.stored, self.unit,
                        self.sampled + other.sampled)

    @property
    def shortfall(self) -> int:
        return max(self.expected - self.stored, 0)

    def line(self) -> str:
        if self.shortfall:
            return (f"verify: the server holds {self.stored} of {self.expected} {self.what}: "
                    f"{self.shortfall} accepted but not stored (a loss)")
        extra = f" (and {self.stored - self.expected} more)" if self.stored > self.expected \
            else ""
        return f"verify: the server holds all {self.expected} {self.what}{extra}"


def _selector(labels: dict[str, str]) -> str:
    return label_selector(sorted(labels.items()))


def _range_s(shifted: Incident) -> int:
    # the range is left-open: one second more takes the window's first instant
    return shifted.duration_ms // 1000 + 1


def samples_by_name(shifted: Incident) -> Counter[str]:
    want: Counter[str] = Counter()
    for s in shifted.series:
        want[s.name] += len(s)
    return want


def count_metrics(t: HttpTransport, want: Counter[str], range_s: int, end_ns: int,
                  extra: dict[str, str], prefix: str = "api/v1/query") -> Verified:
    """Per metric name, what the server holds of the load's series against ``want``."""
    stored = 0
    for name in sorted(want):
        sel = _selector({"__name__": name, **extra})
        resp = t.get(prefix, {"query": f"sum(count_over_time({sel}[{range_s}s]))",
                              "time": f"{end_ns / 1e9:.3f}"})
        if resp.status != 200:
            raise TransportError(f"verify {name}: HTTP {resp.status}: {resp.body[:200]}")
        result = json.loads(resp.body)["data"]["result"]
        stored += min(int(float(result[0]["value"][1])) if result else 0, want[name])
    return Verified(sum(want.values()), stored, "samples")


def verify_logs(t: HttpTransport, shifted: Incident, end_ns: int) -> Verified:
    expected = stored = 0
    for stream in shifted.log_streams:
        n = len(stream.t_ns)
        expected += n
        sel = _selector(dict(stream.labels))
        resp = t.get("loki/api/v1/query", {
            "query": f"sum(count_over_time({sel}[{_range_s(shifted)}s]))",
            "time": str(end_ns + 1), "limit": "1"})
        if resp.status != 200:
            raise TransportError(f"verify logs {sel}: HTTP {resp.status}: {resp.body[:200]}")
        result = json.loads(resp.body)["data"]["result"]
        stored += min(int(float(result[0]["value"][1])) if result else 0, n)
    return Verified(expected, stored, "lines")


def verify_traces(t: HttpTransport, shifted: Incident, sample: int = TRACE_SAMPLE,
                  settle_s: float = SETTLE_S) -> Verified:
    per_trace: Counter[bytes] = Counter()
    for table in shifted.span_tables:
        for tid in table.trace_id:
            per_trace[bytes(tid)] += 1
    ids = sorted(per_trace)
    if not ids:
        return Verified(0, 0, "spans")
    step = max(len(ids) // sample, 1)
    picked = ids[::step][:sample]

    def spans(tid: bytes) -> int:
        return sum(len(ss.spans) for rs in fetch(t, tid.hex()) for ss in rs.scope_spans)

    got = {tid: spans(tid) for tid in picked}
    short = [tid for tid in picked if got[tid] < per_trace[tid]]
    deadline, wait = t.clock() + settle_s, 0.25
    while short and t.clock() < deadline:  # Tempo writing them to a block: ask again
        t.sleep(min(wait, max(deadline - t.clock(), 0.0)))
        wait = min(wait * 2, 2.0)
        for tid in short:
            got[tid] = max(got[tid], spans(tid))
        short = [tid for tid in short if got[tid] < per_trace[tid]]
    return Verified(sum(per_trace[tid] for tid in picked),
                    sum(min(got[tid], per_trace[tid]) for tid in picked), "spans", len(picked))


class Verifier:
    """`--verify` over one load or over its copies (`--instances`): each copy's streams and
    traces are its own, so they are read back while the copy is in memory; the metrics'
    selector cannot tell copies apart (their series differ in ``instance`` only), so the
    samples are summed by name over the copies and read back once, after the last."""

    def __init__(self, reports: dict[str, SignalReport], end_ns: int, extra: dict[str, str],
                 transports: dict[str, HttpTransport | None],
                 say: Callable[[str], None] | None = None,
                 prom_query_path: str = "api/v1/query") -> None:
        self.reports, self.end_ns, self.extra = reports, end_ns, extra
        self.transports, self.say, self.prefix = transports, say, prom_query_path
        self.want: Counter[str] = Counter()
        self.range_s = 0
        self.found: dict[str, Verified] = {}
        self.copies = 0
        self.said: set[str] = set()

    def _readable(self, signal: str) -> HttpTransport | None:
        report = self.reports.get(signal)
        t = self.transports.get(signal)
        if report is None or report.failed or not report.accepted or report.unverified:
            return None
        if t is None:
            note = ("verify: cannot read this backend back (an OTLP receiver without "
                    "Tempo's API); not verified")
            if note not in report.notes:
                report.notes.append(note)
            return None
        if self.say and signal not in self.said:
            self.said.add(signal)
            self.say(f"verifying {signal}: reading back what the server holds")
        return t

    def _add(self, signal: str, check: Callable[[HttpTransport], Verified]) -> None:
        t = self._readable(signal)
        if t is None:
            return
        try:
            v = check(t)
        except TransportError as exc:
            self.reports[signal].notes.append(f"verify: could not read back ({exc}); not "
                                              "verified")
            self.reports[signal].unverified = True
            self.found.pop(signal, None)
            return
        before = self.found.get(signal)
        self.found[signal] = v if before is None else before + v

    def copy(self, shifted: Incident) -> None:
        """Read back this copy's logs and traces; remember its samples by metric name."""
        self.copies += 1
        self.want.update(samples_by_name(shifted))
        self.range_s = _range_s(shifted)
        self._add("logs", lambda t: verify_logs(t, shifted, self.end_ns))
        self._add("traces", lambda t: verify_traces(t, shifted))

    def finish(self) -> None:
        """Read back the metrics; write every signal's finding into its report."""
        self._add("metrics", lambda t: count_metrics(t, self.want, self.range_s, self.end_ns,
                                                     self.extra, self.prefix))
        for signal, v in self.found.items():
            report = self.reports[signal]
            report.notes.append(v.line())
            report.lost_after_accept += v.shortfall
