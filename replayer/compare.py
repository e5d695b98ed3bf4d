"""`replayer compare A B`: two incidents side by side, phase by phase, each row judged.

A fingerprint is what an investigator reads off a dashboard: request rate, latency
quantiles per route, the 5xx ratio, the pool (used, pending, timeouts, wait), the database
sessions, slow-statement lines, how fast the incident reaches its peak, and which metric
names and label keys exist. Each incident's phases come from its own ground truth (a
generated one's drawn onset, a live one's incident switches), so two incidents of
different lengths, steps and onsets compare by what happened, not by clock time. A window
without an incident (``baseline``) is compared whole against each phase of the other.

A row is within tolerance when the two values are close enough for one to stand in for
the other: latency quantiles within a factor of 2, rates and ratios within 25 % (or both
negligible), mean counts (connections, sessions, waiting requests) within 25 % or half of
one, slow-statement lines within 25 % or 1.5 a minute, saturation and timeouts present on
both or on neither, onset to peak within two scrapes. A value one side lacks (no postgres
job scraped) is reported, not judged.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np

from generator.model import Incident, Series

HIST = "http_server_request_duration_seconds"
CLIENT_HIST = "http_client_request_duration_seconds"
OPERATOR_ROUTES = frozenset({"/incident"})
# postgres_exporter 0.11 (Debian's) labels every series with the server it read; the
# generator follows v0.16, which does not
EXPORTER_ONLY_LABELS = frozenset({"server"})
# labels a series has only when something failed (an empty value is no label): whether a
# window holds one failed request is not a naming difference
ON_FAILURE_LABELS = frozenset({"error_type"})
ROUTES = (("POST", "/payment"), ("GET", "/payments/{payment_id}"))
LATENCY_FACTOR = 2.0
RATE_TOLERANCE = 0.25
COUNT_SLACK = 0.5
LINES_SLACK = 1.5  # log lines per minute


@dataclass(frozen=True)
class Row:
    what: str
    phase: str
    a: float | None
    b: float | None
    rule: str  # factor2 | ratio25 | presence | scrapes2 | info
    verdict: str  # ok | outside | n/a
    unit: str = ""


@dataclass(frozen=True)
class Phases:
    """(start_ms, end_ms) of the calm before, the incident at its height, the calm after."""

    before: tuple[int, int]
    during: tuple[int, int] | None
    after: tuple[int, int] | None


def phases_of(inc: Incident) -> Phases:
    truth = inc.truth
    end = inc.duration_ms
    if truth.onset_ms is None:  # no incident: its whole calm stands for every phase
        return Phases((0, end), (0, end), (0, end))
    peak = next((p for p in truth.phases if p.name == "peak"), None)
    start, stop = (peak.start_ms, peak.end_ms) if peak else (truth.onset_ms,
                                                              truth.recovery_ms or end)
    after_phase = [p for p in truth.phases if p.name == "baseline" and p.start_ms >= stop]
    return Phases((0, truth.onset_ms), (start, stop),
                  (after_phase[0].start_ms, after_phase[0].end_ms) if after_phase else None)


def _at(s: Series, t_ms: int) -> float:
    """A counter's value at ``t_ms`` (its last sample at or before; the first after)."""
    i = int(np.searchsorted(s.t_ms, t_ms, side="right")) - 1
    return float(s.values[max(i, 0)])


def _increase(series: Iterable[Series], a: int, b: int) -> float:
    return sum(_at(s, b) - _at(s, a) for s in series)


def _select(inc: Incident, name: str, **labels: str) -> list[Series]:
    found = [s for s in inc.iter_series(name) if all(s.label(k) == v for k, v in labels.items())]
    if name.startswith(HIST):  # the service's own requests, not its upstream's (a scrape of
        # card-processor has the same names), nor live_app's incident switch (a recorder
        # polls it)
        jobs = _app_jobs(inc)
        found = [s for s in found if (s.label("job") in jobs or not jobs)
                 and s.label("http_route") not in OPERATOR_ROUTES]
    return found


def _app_jobs(inc: Incident) -> frozenset[str]:
    """The jobs that serve the payment routes (payment-service, whatever it is called)."""
    routes = {r for _, r in ROUTES}
    return frozenset(s.label("job") for s in inc.iter_series(HIST + "_count")
                     if s.label("http_route") in routes)


def card_call(inc: Incident, a: int, b: int, q: float = 0.5) -> float | None:
    """A quantile of the card-processor call as the service's HTTP client times it."""
    by_le: dict[float, list[Series]] = {}
    for s in _select(inc, CLIENT_HIST + "_bucket"):
        by_le.setdefault(float(s.label("le")), []).append(s)
    bounds = sorted(by_le)
    return quantile(q, bounds, [_increase(by_le[le], a, b) for le in bounds])


def _buckets(inc: Incident, method: str, route: str) -> dict[float, list[Series]]:
    out: dict[float, list[Series]] = {}
    for s in _select(inc, HIST + "_bucket", http_request_method=method, http_route=route):
        out.setdefault(float(s.label("le")), []).append(s)
    return out


def quantile(q: float, bounds: list[float], counts: list[float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts (sorted bounds)."""
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    k = next(i for i, c in enumerate(counts) if c >= rank)
    if math.isinf(bounds[k]):
        return bounds[k - 1] if k > 0 else None  # in the +Inf bucket: the highest bound
    lo = bounds[k - 1] if k > 0 else 0.0
    below = counts[k - 1] if k > 0 else 0.0
    inside = counts[k] - below
    return lo + (bounds[k] - lo) * ((rank - below) / inside if inside > 0 else 1.0)


def _latency_of(method: str, route: str, q: float, inc: Incident, a: int,
                b: int) -> float | None:
    return latency(inc, method, route, q, a, b)


def latency(inc: Incident, method: str, route: str, q: float, a: int, b: int) -> float | None:
    by_le = _buckets(inc, method, route)
    bounds = sorted(by_le)
    return quantile(q, bounds, [_increase(by_le[le], a, b) for le in bounds])


def _rate(inc: Incident, name: str, a: int, b: int, **labels: str) -> float | None:
    found = _select(inc, name, **labels)
    if not found or b <= a:
        return None
    return _increase(found, a, b) / ((b - a) / 1000.0)


def _gauge(inc: Incident, name: str, how: Callable[[np.ndarray], float], a: int, b: int,
           **labels: str) -> float | None:
    found = _select(inc, name, **labels)
    if not found:
        return None
    t = found[0].t_ms
    inside = (t >= a) & (t < b)
    if not inside.any():
        return None
    return float(how(np.sum([s.values[inside] for s in found], axis=0)))


def error_ratio(inc: Incident, a: int, b: int) -> float | None:
    total = _select(inc, HIST + "_count")
    if not total:
        return None
    all_ = _increase(total, a, b)
    bad = _increase([s for s in total if s.label("http_response_status_code").startswith("5")],
                    a, b)
    return bad / all_ if all_ > 0 else None


def pool_wait(inc: Incident, a: int, b: int) -> float | None:
    n = _rate(inc, "db_client_connection_wait_time_seconds_count", a, b)
    total = _rate(inc, "db_client_connection_wait_time_seconds_sum", a, b)
    return None if not n or total is None else total / n


def slow_lines_per_min(inc: Incident, a: int, b: int) -> float | None:
    pg = [s for s in inc.log_streams if dict(s.labels).get("service_name") in
          ("postgres", "postgresql")]
    if b <= a:
        return None
    if not pg:  # a generated incident leaves out a stream with no lines; a capture may
        # simply not have read the server's log
        return 0.0 if dict(inc.source).get("kind") == "generated" else None
    n = sum(int(np.count_nonzero([(a * 10**6 <= t < b * 10**6) and "duration:" in line
                                  for t, line in zip(s.t_ns.tolist(), s.lines)]))
            for s in pg)
    return n / ((b - a) / 60000.0)


def onset_to_peak_s(inc: Incident) -> float | None:
    """Seconds from the onset until POST /payment's p99 (over a minute) first reaches 90 %
    of its highest value during the incident."""
    ph = phases_of(inc)
    if ph.during is None or inc.truth.onset_ms is None:
        return None
    by_le = _buckets(inc, *ROUTES[0])
    if not by_le:
        return None
    bounds = sorted(by_le)
    t = by_le[bounds[0]][0].t_ms
    onset, stop = inc.truth.onset_ms, ph.during[1]
    points = [int(x) for x in t if onset <= x <= stop]
    p99 = [latency(inc, *ROUTES[0], 0.99, x - 60_000, x) for x in points]
    vals = [(x, v) for x, v in zip(points, p99) if v is not None]
    if not vals:
        return None
    peak = max(v for _, v in vals)
    first = next(x for x, v in vals if v >= 0.9 * peak)
    return (first - onset) / 1000.0


def exporter_version(inc: Incident) -> str:
    """The postgres_exporter a recording scraped (its header says); generated: v0.16's names."""
    return dict(inc.source).get("postgres_exporter", "0.16.0")


def _label_keys(inc: Incident) -> dict[str, frozenset[str]]:
    out: dict[str, set[str]] = {}
    for s in inc.series:
        out.setdefault(s.name, set()).update(k for k, _ in s.labels if k != "__name__" and not (
            k in EXPORTER_ONLY_LABELS and s.name.startswith("pg_"))
            and k not in ON_FAILURE_LABELS)
    return {k: frozenset(v) for k, v in out.items()}


def _judge(rule: str, a: float | None, b: float | None) -> str:
    if a is None or b is None or rule == "info":
        return "n/a"
    if rule == "factor2":
        if a <= 0 or b <= 0:
            return "ok" if a == b else "outside"
        return "ok" if max(a, b) / min(a, b) <= LATENCY_FACTOR else "outside"
    if rule == "ratio25":
        big = max(abs(a), abs(b))
        if big < 1e-3:  # both negligible
            return "ok"
        return "ok" if abs(a - b) <= RATE_TOLERANCE * big else "outside"
    if rule == "count25":  # a mean count of connections or requests: within 25 %, or
        # within half of one (a calm phase's means are fractions an eye cannot tell apart)
        return "ok" if abs(a - b) <= max(RATE_TOLERANCE * max(abs(a), abs(b)),
                                          COUNT_SLACK) else "outside"
    if rule == "lines25":  # a rate of rare log lines: within 25 %, or 1.5 a minute (a
        # line or two more in a phase of a minute is chance, not a different incident)
        return "ok" if abs(a - b) <= max(RATE_TOLERANCE * max(abs(a), abs(b)),
                                          LINES_SLACK) else "outside"
    if rule == "presence":
        return "ok" if (a > 0) == (b > 0) else "outside"
    raise ValueError(rule)


def compare(a: Incident, b: Incident) -> list[Row]:
    pa, pb = phases_of(a), phases_of(b)
    rows: list[Row] = []

    def row(what: str, phase: str, rule: str, unit: str,
            f: Callable[[Incident, int, int], float | None]) -> None:
        wa, wb = getattr(pa, phase), getattr(pb, phase)
        va = f(a, *wa) if wa else None
        vb = f(b, *wb) if wb else None
        if wa is None and wb is None:
            return
        rows.append(Row(what, phase, va, vb, rule, _judge(rule, va, vb), unit))

    for phase in ("before", "during", "after"):
        row("request rate", phase, "ratio25", "req/s",
            lambda i, x, y: _rate(i, HIST + "_count", x, y))
        for method, route in ROUTES:
            for q in (0.5, 0.99):
                row(f"p{int(q * 100)} {method} {route}", phase, "factor2", "s",
                    functools.partial(_latency_of, method, route, q))
        for q in (0.5, 0.99):
            row(f"p{int(q * 100)} card-processor call", phase, "factor2", "s",
                functools.partial(card_call, q=q))
        row("5xx ratio", phase, "ratio25", "", error_ratio)
        row("pool used (mean)", phase, "count25", "conns", lambda i, x, y: _gauge(
            i, "db_client_connections_usage_connections", np.mean, x, y, state="used"))
        row("pool idle (mean)", phase, "count25", "conns", lambda i, x, y: _gauge(
            i, "db_client_connections_usage_connections", np.mean, x, y, state="idle"))
        row("pool saturated (max used = max)", phase, "presence", "", lambda i, x, y: _saturated(
            i, x, y))
        row("pending requests (max)", phase, "presence", "", lambda i, x, y: _gauge(
            i, "db_client_connection_pending_requests", np.max, x, y))
        row("pending requests (mean)", phase, "count25", "", lambda i, x, y: _gauge(
            i, "db_client_connection_pending_requests", np.mean, x, y))
        row("pool timeouts", phase, "presence", "/s", lambda i, x, y: _rate(
            i, "db_client_connection_timeouts_total", x, y))
        row("pool wait (mean)", phase, "factor2", "s", pool_wait)
        row("db active sessions (mean)", phase, "count25", "", lambda i, x, y: _gauge(
            i, "pg_stat_activity_count", np.mean, x, y, datname="payments", state="active"))
        row("db idle in transaction (mean)", phase, "count25", "", lambda i, x, y: _gauge(
            i, "pg_stat_activity_count", np.mean, x, y, datname="payments",
            state="idle in transaction"))
        row("slow statement lines", phase, "lines25", "/min", slow_lines_per_min)
    oa, ob = onset_to_peak_s(a), onset_to_peak_s(b)
    if oa is not None or ob is not None:
        two = 2 * max(a.step_ms, b.step_ms) / 1000.0
        verdict = "n/a" if oa is None or ob is None else (
            "ok" if abs(oa - ob) <= two else "outside")
        rows.append(Row("onset to 90 % of peak p99", "during", oa, ob, "scrapes2", verdict, "s"))
    ka, kb = _label_keys(a), _label_keys(b)
    shared = sorted(ka.keys() & kb.keys())
    va, vb = exporter_version(a), exporter_version(b)
    if va != vb:  # different exporters label pg_* differently: not the generator's doing
        rows.append(Row(f"pg_* label keys (postgres_exporter {va} vs {vb}): not judged", "all",
                        None, None, "info", "n/a"))
        shared = [n for n in shared if not n.startswith("pg_")]
    differ = [n for n in shared if ka[n] != kb[n]]
    rows.append(Row("metric names only in A", "all", float(len(ka.keys() - kb.keys())), None,
                    "info", "n/a"))
    rows.append(Row("metric names only in B", "all", None, float(len(kb.keys() - ka.keys())),
                    "info", "n/a"))
    rows.append(Row("shared names whose label keys differ", "all", float(len(differ)),
                    float(len(differ)), "labels", "ok" if not differ else "outside"))
    return rows


def _saturated(inc: Incident, a: int, b: int) -> float | None:
    used = _gauge(inc, "db_client_connections_usage_connections", np.max, a, b, state="used")
    cap = _gauge(inc, "db_client_connection_max", np.max, a, b)
    if used is None or cap is None:
        return None
    return 1.0 if used >= cap else 0.0


def label_differences(a: Incident, b: Incident) -> list[str]:
    ka, kb = _label_keys(a), _label_keys(b)
    judged = exporter_version(a) == exporter_version(b)
    return [f"{n}: A {sorted(ka[n])} / B {sorted(kb[n])}" for n in sorted(ka.keys() & kb.keys())
            if ka[n] != kb[n] and (judged or not n.startswith("pg_"))]


def to_json(rows: list[Row]) -> list[dict[str, object]]:
    return [asdict(r) for r in rows]


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"
    return f"{v:.3g}" + (f" {unit}" if unit else "")


def render(rows: list[Row], name_a: str, name_b: str) -> str:
    width = max(len(r.what) for r in rows)
    lines = [f"A = {name_a}", f"B = {name_b}",
             f"{'':<{width}}  {'phase':<7} {'A':>14} {'B':>14}  verdict"]
    for r in rows:
        mark = {"ok": "ok", "outside": "OUTSIDE", "n/a": ""}[r.verdict]
        lines.append(f"{r.what:<{width}}  {r.phase:<7} {_fmt(r.a, r.unit):>14} "
                     f"{_fmt(r.b, r.unit):>14}  {mark}")
    out = sum(r.verdict == "outside" for r in rows)
    judged = sum(r.verdict != "n/a" for r in rows)
    lines.append(f"{judged - out} of {judged} judged rows within tolerance "
                 f"(latency x{LATENCY_FACTOR:g}, rates and ratios {RATE_TOLERANCE:.0%}, "
                 f"mean counts {RATE_TOLERANCE:.0%} or {COUNT_SLACK:g}, "
                 f"slow lines {RATE_TOLERANCE:.0%} or {LINES_SLACK:g}/min, "
                 "presence on both or neither, onset to peak within two scrapes)")
    return "\n".join(lines)
