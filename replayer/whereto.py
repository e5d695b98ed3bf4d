"""After a load: when the incident happened, in clock time, and links that open it.

`inspect` gives the phases in minutes from the window start; after a load the user needs
them as the clock times their Prometheus and Grafana show, and a link to the ground
truth's first query over exactly the loaded window.
"""

from __future__ import annotations

import datetime as dt
import json
from urllib.parse import quote, urlencode

from generator.model import Incident

from .timeshift import iso


def _at(start_ns: int, offset_ms: int | None) -> str | None:
    return None if offset_ms is None else iso(start_ns + offset_ms * 1_000_000)


def incident_times(incident: Incident, start_ns: int) -> dict[str, object]:
    """Onset, peak and recovery as RFC 3339, and each phase's span, for a load whose
    window starts at ``start_ns``."""
    t = incident.truth
    return {
        "onset": _at(start_ns, t.onset_ms), "peak": _at(start_ns, t.peak_ms),
        "recovery": _at(start_ns, t.recovery_ms),
        "phases": [{"name": p.name, "start": _at(start_ns, p.start_ms),
                    "end": _at(start_ns, p.end_ms)} for p in t.phases],
        "root_cause": {"component": t.root_cause_component, "kind": t.root_cause_kind},
    }


def _duration_input(ms: int) -> str:
    """Prometheus' range box: whole hours or minutes ("30m", "2h"), else seconds."""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{max(1, ms // 1000)}s"


def prometheus_graph_link(prometheus_url: str, query: str, start_ns: int, end_ns: int) -> str:
    """Prometheus' own graph page (2.x and 3.x take these parameters) showing ``query``
    over exactly the window; the end box is read as UTC."""
    end = dt.datetime.fromtimestamp(end_ns / 1e9, tz=dt.timezone.utc)
    params = {"g0.expr": query, "g0.tab": "0",
              "g0.range_input": _duration_input((end_ns - start_ns) // 1_000_000),
              "g0.end_input": end.strftime("%Y-%m-%d %H:%M:%S")}
    return f"{prometheus_url.rstrip('/')}/graph?{urlencode(params, quote_via=quote)}"


def grafana_explore_link(grafana_url: str, query: str, start_ns: int, end_ns: int,
                         datasource_uid: str = "prometheus") -> str:
    """Grafana (10.x, 11.x) Explore with ``query`` on the provisioned Prometheus datasource
    (uid ``prometheus``, infra/grafana/provisioning) over the window."""
    panes = {"a": {"datasource": datasource_uid, "queries": [{
        "refId": "A", "expr": query, "datasource": {"type": "prometheus",
                                                    "uid": datasource_uid}}],
        "range": {"from": str(start_ns // 1_000_000), "to": str(end_ns // 1_000_000)}}}
    params = {"schemaVersion": "1", "orgId": "1",
              "panes": json.dumps(panes, separators=(",", ":"))}
    return f"{grafana_url.rstrip('/')}/explore?{urlencode(params, quote_via=quote)}"


def where_to_look(incident: Incident, start_ns: int, end_ns: int, prometheus_url: str | None,
                  grafana_url: str | None) -> dict[str, object]:
    """Everything `load` prints after the summary (and puts under "incident" in --json).
    ``prometheus_url``: None when the metrics did not go to a Prometheus with its own UI."""
    out = incident_times(incident, start_ns)
    promql = incident.truth.promql
    links: dict[str, str] = {}
    if promql:
        what, query = promql[0]
        out["query"] = {"what": what, "promql": query}
        if prometheus_url:
            links["prometheus"] = prometheus_graph_link(prometheus_url, query, start_ns, end_ns)
        if grafana_url:
            links["grafana"] = grafana_explore_link(grafana_url, query, start_ns, end_ns)
    out["links"] = links
    return out


def lines(look: dict[str, object]) -> list[str]:
    """The human form of :func:`where_to_look`."""
    rc = look["root_cause"]
    assert isinstance(rc, dict)
    if look["onset"] is None:
        head = [f"incident   no onset in this window (root cause {rc['component']} / "
                f"{rc['kind']})"]
    else:
        head = [f"incident   onset {look['onset']}, peak {look['peak']}, recovery "
                f"{look['recovery']} (root cause {rc['component']} / {rc['kind']})"]
    query = look.get("query")
    if isinstance(query, dict):
        head.append(f"look at    {query['what']}: {query['promql']}")
    links = look["links"]
    assert isinstance(links, dict)
    for name, url in links.items():
        head.append(f"{name:<10} {url}")
    return head
