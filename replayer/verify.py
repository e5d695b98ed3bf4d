"""`load --verify`: after a load, count back what each backend stored for the window.

A server can lose what it accepted: in ~30 multi-hour backfills into an empty Prometheus
2.42, three lost samples after answering 204 (an out-of-order/compaction race in the
server). The answers cannot show that; reading back can. For each signal:

- metrics: per metric name, ``sum(count_over_time({__name__="x", <labels of this load>}
  [window]))`` at the window's end, against the samples this load accepted of that name;
- logs: per stream, LogQL ``sum(count_over_time({<stream labels>}[window]))``;
- traces: a sample of trace IDs (up to ``TRACE_SAMPLE``, spread over the load), each
  fetched from Tempo, its span count against the load's.

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
from .record.tempo import fetch
from .report import SignalReport
from .transport import HttpTransport

TRACE_SAMPLE = 25


@dataclass
class Verified:
    expected: int
    stored: int
    what: str  # "samples" | "lines" | "spans of N sampled traces"

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


def verify_metrics(t: HttpTransport, shifted: Incident, end_ns: int,
                   extra: dict[str, str], prefix: str = "api/v1/query") -> Verified:
    """``shifted``: the incident as loaded (absolute times, extra labels on)."""
    want: Counter[str] = Counter()
    for s in shifted.series:
        want[s.name] += len(s)
    stored = 0
    for name in sorted(want):
        sel = _selector({"__name__": name, **extra})
        resp = t.get(prefix, {"query": f"sum(count_over_time({sel}[{_range_s(shifted)}s]))",
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


def verify_traces(t: HttpTransport, shifted: Incident,
                  sample: int = TRACE_SAMPLE) -> Verified:
    per_trace: Counter[bytes] = Counter()
    for table in shifted.span_tables:
        for tid in table.trace_id:
            per_trace[bytes(tid)] += 1
    ids = sorted(per_trace)
    if not ids:
        return Verified(0, 0, "spans")
    step = max(len(ids) // sample, 1)
    picked = ids[::step][:sample]
    expected = stored = 0
    for tid in picked:
        expected += per_trace[tid]
        got = sum(len(ss.spans) for rs in fetch(t, tid.hex()) for ss in rs.scope_spans)
        stored += min(got, per_trace[tid])
    return Verified(expected, stored, f"spans of {len(picked)} sampled traces")


def verify_all(reports: dict[str, SignalReport], shifted: Incident, end_ns: int,
               extra: dict[str, str], transports: dict[str, HttpTransport | None],
               say: Callable[[str], None] | None = None,
               prom_query_path: str = "api/v1/query") -> None:
    """Read back every signal that was loaded; a shortfall becomes a loss in its report."""
    checks = {
        "metrics": lambda t: verify_metrics(t, shifted, end_ns, extra, prom_query_path),
        "logs": lambda t: verify_logs(t, shifted, end_ns),
        "traces": lambda t: verify_traces(t, shifted),
    }
    for signal, report in reports.items():
        t = transports.get(signal)
        if report.failed or not report.accepted or t is None:
            if t is None and report.accepted:
                report.notes.append("verify: cannot read this backend back (an OTLP "
                                    "receiver without Tempo's API); not verified")
            continue
        if say:
            say(f"verifying {signal}: reading back what the server holds")
        try:
            v = checks[signal](t)
        except TransportError as exc:
            report.notes.append(f"verify: could not read back ({exc}); not verified")
            report.unverified = True
            continue
        report.notes.append(v.line())
        report.lost_after_accept += v.shortfall
