"""After a load: the incident in clock time and links that open it (issue 18, defect 3)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

from replayer.whereto import grafana_explore_link, lines, prometheus_graph_link, where_to_look
from tests.conftest import cached_incident

START_NS = 1_795_000_000_000_000_000  # 2026-11-18T11:06:40Z


def test_times_are_the_truth_offsets_from_the_window_start() -> None:
    inc = cached_incident("slow_query")
    look = where_to_look(inc, START_NS, START_NS + inc.duration_ms * 10**6, None, None)
    assert look["onset"] == _iso(inc.truth.onset_ms)
    assert look["recovery"] == _iso(inc.truth.recovery_ms)
    phases = look["phases"]
    assert [p["name"] for p in phases] == [p.name for p in inc.truth.phases]
    assert phases[0]["start"] == "2026-11-18T11:06:40.000Z"
    assert all(a["end"] == b["start"] for a, b in zip(phases, phases[1:]))
    assert look["links"] == {}  # no Prometheus UI, no Grafana known
    assert lines(look)[0].startswith(f"incident   onset {_iso(inc.truth.onset_ms)}, peak ")


def _iso(offset_ms: int) -> str:
    import datetime as dt

    t = dt.datetime.fromtimestamp(START_NS / 1e9 + offset_ms / 1000, tz=dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def test_baseline_says_there_is_no_onset() -> None:
    inc = cached_incident("baseline")
    look = where_to_look(inc, START_NS, START_NS + inc.duration_ms * 10**6, None, None)
    assert look["onset"] is None
    assert lines(look)[0] == "incident   no onset in this window (root cause none / none)"


def test_prometheus_link_names_the_query_and_the_window() -> None:
    q = 'rate(x{a="b c"}[1m])'
    link = prometheus_graph_link("http://p:9090/", q, START_NS, START_NS + 90 * 60 * 10**9)
    parts = urlsplit(link)
    got = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.netloc == "p:9090" and parts.path == "/graph"
    assert got == {"g0.expr": q, "g0.tab": "0", "g0.range_input": "90m",
                   "g0.end_input": "2026-11-18 12:36:40"}
    assert " " not in link


def test_grafana_link_opens_explore_on_the_provisioned_datasource() -> None:
    link = grafana_explore_link("http://g:3000", "up", START_NS, START_NS + 60 * 10**9)
    parts = urlsplit(link)
    got = {k: v[0] for k, v in parse_qs(parts.query).items()}
    panes = json.loads(got["panes"])
    pane = panes["a"]
    assert parts.path == "/explore" and got["schemaVersion"] == "1"
    assert pane["queries"][0]["expr"] == "up"
    assert pane["queries"][0]["datasource"] == {"type": "prometheus", "uid": "prometheus"}
    assert pane["range"] == {"from": str(START_NS // 10**6), "to": str(START_NS // 10**6 + 60000)}
