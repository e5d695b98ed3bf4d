"""`replayer plot`: the incident at a glance (matplotlib, optional extra ``plot``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from generator.model import Incident, Series

from .errors import UsageError

PHASE_COLOURS = {"onset": "#fde68a", "peak": "#fca5a5", "recovery": "#bbf7d0"}


def histogram_quantile(q: float, buckets: list[Series], window_steps: int = 4) -> np.ndarray:
    """PromQL-like histogram_quantile over rate() of cumulative bucket series."""
    finite = sorted((float(s.label("le")), s) for s in buckets if s.label("le") != "+Inf")
    inf = next(s for s in buckets if s.label("le") == "+Inf")
    bounds = np.array([b for b, _ in finite])
    counts = np.stack([s.values for _, s in finite] + [inf.values])
    inc = counts[:, window_steps:] - counts[:, :-window_steps]
    total = inc[-1]
    out = np.full(total.shape, np.nan)
    for j in np.flatnonzero(total > 0):
        rank = q * total[j]
        i = int(np.searchsorted(inc[:, j], rank, side="left"))
        if i >= len(bounds):
            out[j] = bounds[-1]
            continue
        lo_b = bounds[i - 1] if i else 0.0
        lo_c = inc[i - 1, j] if i else 0.0
        span = inc[i, j] - lo_c
        out[j] = lo_b + (bounds[i] - lo_b) * ((rank - lo_c) / span if span else 1.0)
    return np.concatenate([np.full(window_steps, np.nan), out])


def summed(series: list[Series]) -> tuple[np.ndarray, np.ndarray]:
    """Sum of ``series`` on the union of their timestamps; a series counts as 0 where it has
    no sample yet (recorded series appear when first scraped)."""
    t = np.unique(np.concatenate([s.t_ms for s in series]))
    total = np.zeros(t.shape)
    for s in series:
        idx = np.searchsorted(s.t_ms, t, side="right") - 1
        total += np.where(idx >= 0, s.values[np.maximum(idx, 0)], 0.0)
    return t, total


def summed_buckets(incident: Incident, name: str, **match: str) -> list[Series]:
    """Buckets of ``name`` summed over every label but ``le`` (like sum by (le))."""
    by_le: dict[str, list[Series]] = {}
    for s in incident.iter_series(name + "_bucket"):
        if all(s.label(k) == v for k, v in match.items()):
            by_le.setdefault(s.label("le"), []).append(s)
    if not by_le:
        raise UsageError(f"the incident has no {name}_bucket series matching {match}")
    from generator.model import make_labels

    grid = np.unique(np.concatenate([s.t_ms for group in by_le.values() for s in group]))
    out = []
    for le, group in by_le.items():
        t, v = summed(group + [Series((), grid, np.zeros(grid.shape))])
        out.append(Series(make_labels({"__name__": name + "_bucket", "le": le}), t, v))
    return out


def build_figure(incident: Incident, end_ns: int | None = None):  # type: ignore[no-untyped-def]
    """The figure `replayer plot` writes. With ``end_ns`` (the --end a load used) the x axis
    is UTC clock time, as Prometheus and Grafana show it; else minutes into the window."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise UsageError("plot needs matplotlib: pip install 'telemetry-replayer[plot]'") from None
    start_ms = None if end_ns is None else end_ns // 1_000_000 - incident.duration_ms

    def x(t_ms: np.ndarray | float) -> np.ndarray:
        t = np.asarray(t_ms, dtype=float)
        if start_ms is None:
            return t / 60000.0
        # matplotlib's date numbers: days since 1970-01-01 (UTC)
        return (start_ms + t) / 86_400_000.0

    name = "http_server_request_duration_seconds"
    buckets = summed_buckets(incident, name, http_route="/payment", http_request_method="POST")
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    ax = axes[0]
    for q in (0.5, 0.9, 0.99):
        ax.plot(x(buckets[0].t_ms), histogram_quantile(q, buckets), label=f"p{int(q * 100)}")
    top = max(float(b.label("le")) for b in buckets if b.label("le") != "+Inf")
    # histogram_quantile cannot go past the top finite bucket: a flat line there means
    # "at least this", not a measured latency
    ax.axhline(top, color="grey", linestyle=":", lw=1,
               label=f"top bucket ({top:g} s): a quantile above it reads {top:g} s")
    ax.set_yscale("log")
    ax.set_ylabel("POST /payment latency (s)")
    shades = [Patch(facecolor=c, alpha=0.5, label=f"{n} phase")
              for n, c in PHASE_COLOURS.items()
              if any(p.name == n for p in incident.truth.phases)]
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + shades, loc="upper left", fontsize=8)
    _rates(axes[1], incident, x)
    pool = axes[2]
    for s in incident.iter_series("db_client_connections_usage_connections"):
        pool.plot(x(s.t_ms), s.values, label=f"pool {s.label('state')}")
    pool.set_ylabel("connections (used / idle)")
    pending = [s for s in incident.iter_series("db_client_connection_pending_requests")]
    lines, labels = pool.get_legend_handles_labels()
    if pending:
        # waiters reach hundreds where used / idle stay within the pool's 15: own axis
        right = pool.twinx()
        for s in pending:
            right.plot(x(s.t_ms), s.values, label="pending (right axis)", linestyle="--",
                       color="black")
        right.set_ylabel("requests waiting for a connection")
        more, more_labels = right.get_legend_handles_labels()
        lines, labels = lines + more, labels + more_labels
    pool.legend(lines, labels, loc="upper left", fontsize=8)
    _db(axes[3], incident, x)
    for a in axes:
        for p in incident.truth.phases:
            if p.name in PHASE_COLOURS:
                a.axvspan(float(x(p.start_ms)), float(x(p.end_ms)), color=PHASE_COLOURS[p.name],
                          alpha=0.5, lw=0)
    if start_ms is None:
        axes[-1].set_xlabel("minutes into the window")
    else:
        axes[-1].xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=mdates.UTC))
        day = mdates.num2date(float(x(0)), tz=mdates.UTC).strftime("%Y-%m-%d")
        axes[-1].set_xlabel(f"time (UTC), {day}")
    fig.suptitle(f"{incident.scenario} (seed {incident.seed}): {incident.truth.root_cause_kind}")
    fig.tight_layout()
    return fig


def plot_incident(incident: Incident, output: Path, end_ns: int | None = None) -> None:
    import matplotlib.pyplot as plt

    fig = build_figure(incident, end_ns)
    fig.savefig(output, dpi=90)
    plt.close(fig)


def _per_second(values: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
    return np.concatenate([[np.nan], np.diff(values) / (np.diff(t_ms) / 1000.0)])


def _rates(ax, incident: Incident, x) -> None:  # type: ignore[no-untyped-def]
    counts = [s for s in incident.iter_series("http_server_request_duration_seconds_count")
              if s.label("job") != "card-processor"]  # the service's requests, not its upstream's
    if not counts:
        raise UsageError("the incident has no http_server_request_duration_seconds_count")
    t, total = summed(counts)
    ax.plot(x(t), _per_second(total, t), label="requests/s")
    errors = [s for s in counts if s.label("http_response_status_code").startswith("5")]
    if errors:
        te, err = summed(errors)
        ax.plot(x(te), _per_second(err, te), label="5xx/s", color="red")
    ax.set_ylabel("rate")
    ax.legend(loc="upper left")


def _db(ax, incident: Incident, x) -> None:  # type: ignore[no-untyped-def]
    for s in incident.iter_series("pg_stat_activity_count"):
        if s.label("datname") == "payments" and s.values.max() > 0:
            tag = s.label("state") + (f" ({s.label('wait_event')})" if s.label("wait_event")
                                      else "")
            if s.label("application_name"):  # whose sessions: several apps share a state
                tag = f"{s.label('application_name')}: {tag}"
            if s.label("backend_type") and s.label("backend_type") != "client backend":
                tag += f" ({s.label('backend_type')})"
            ax.plot(x(s.t_ms), s.values, label=tag)
    for s in incident.iter_series("pg_stat_user_tables_seq_scan"):
        ax.plot(x(s.t_ms), _per_second(s.values, s.t_ms), label="seq scans/s",
                linestyle=":")
    for s in incident.iter_series("db_client_connection_wait_time_seconds_count"):
        ax.plot(x(s.t_ms), _per_second(s.values, s.t_ms), label="checkouts/s",
                linestyle="--")
    ax.set_ylabel("PostgreSQL")
    ax.legend(loc="upper left", fontsize=8)
