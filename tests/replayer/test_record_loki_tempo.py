"""The Loki and Tempo recorders against the shapes of the real captured answers."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest
import responses

from replayer.record.assemble import span_tables
from replayer.record.loki import PAGE_LIMIT, record_loki
from replayer.record.tempo import SETTLE_S, normalise_trace_id, record_tempo
from replayer.transport import HttpTransport, TargetConfig
from tests.replayer.captures import capture

LOKI = "http://loki.test:3100"
TEMPO = "http://tempo.test:3200"


def _entries() -> list[tuple[int, dict[str, str], str, dict[str, str]]]:
    """12,001 entries in two streams; 30 share the timestamp at the first page boundary."""
    out = []
    base = 1_795_777_663_000_000_000
    for i in range(12_001):
        ts = base + (4_990 if 4_990 <= i < 5_020 else i) * 1_000_000
        level = "error" if i % 7 == 0 else "info"
        meta = {"trace_id": f"{i:032x}", "span_id": f"{i:016x}"} if i % 3 == 0 else {}
        out.append((ts, {"service_name": "payment-service", "level": level}, f"line {i}", meta))
    return out


def _loki_server(entries) -> None:  # type: ignore[no-untyped-def]
    body = capture("loki_labels")["response"]["body"]
    responses.get(f"{LOKI}/loki/api/v1/labels", json=body)

    def query(request):  # type: ignore[no-untyped-def]
        q = parse_qs(urlparse(request.url).query)
        limit = int(q["limit"][0])
        if limit > PAGE_LIMIT:
            cap = capture("loki_query_range_limit_too_big")["response"]
            return cap["status"], {}, cap["body"]
        start, end = int(q["start"][0]), int(q["end"][0])
        chosen = sorted((e for e in entries if start <= e[0] < end), key=lambda e: e[0])[:limit]
        streams: dict[str, dict] = {}
        for ts, labels, line, meta in chosen:
            merged = {**labels, **meta, "detected_level": labels["level"]}  # as Loki 3 answers
            key = json.dumps(merged, sort_keys=True)
            streams.setdefault(key, {"stream": merged, "values": []})["values"].append(
                [str(ts), line])
        shape = capture("loki_query_range_forward_limit5")["response"]["body"]
        return 200, {}, json.dumps({**shape, "data": {"resultType": "streams",
                                                      "result": list(streams.values())}})

    responses.add_callback(responses.GET, f"{LOKI}/loki/api/v1/query_range", callback=query)


@responses.activate
def test_pages_over_5000_lines_without_loss_or_duplicates() -> None:
    entries = _entries()
    _loki_server(entries)
    start = entries[0][0]
    rec = record_loki(HttpTransport(TargetConfig(LOKI)), '{service_name="payment-service"}',
                      start, entries[-1][0])
    assert rec.pages >= 3 and not rec.problems
    got = sorted((int(t) + start, dict(s.labels)["level"], line, dict(meta))
                 for s in rec.streams for t, line, meta in zip(s.t_ns, s.lines, s.metadata))
    want = sorted((ts, labels["level"], line, meta) for ts, labels, line, meta in entries)
    assert got == want
    assert {tuple(dict(s.labels)) for s in rec.streams} == {("level", "service_name")}


@responses.activate
def test_a_page_of_one_timestamp_is_reported_not_looped() -> None:
    entries = [(1_000, {"service_name": "s", "level": "info"}, f"l{i}", {}) for i in range(12)]
    _loki_server(entries)
    rec = record_loki(HttpTransport(TargetConfig(LOKI)), '{service_name="s"}', 0, 10_000,
                      page_limit=5)
    assert rec.problems and "share the timestamp" in rec.problems[0]


def test_page_limit_above_lokis_maximum_is_refused() -> None:
    with pytest.raises(ValueError, match="5000"):
        record_loki(HttpTransport(TargetConfig(LOKI)), "{}", 0, 1, page_limit=6000)


@pytest.mark.parametrize("raw, full", [("af7651916cd43dd8448eb211c80319c",
                                        "0af7651916cd43dd8448eb211c80319c"),
                                       ("1", "0" * 31 + "1")])
def test_trace_ids_from_search_are_left_padded(raw: str, full: str) -> None:
    assert normalise_trace_id(raw) == full
    with pytest.raises(ValueError):
        normalise_trace_id("xyz")


@responses.activate
def test_search_then_fetch_by_id_reports_missing_traces() -> None:
    responses.get(f"{TEMPO}/api/search", json={"traces": [
        {"traceID": "af7651916cd43dd8448eb211c80319c"},  # Tempo dropped the leading zero
        {"traceID": "ffffffffffffffffffffffffffffffff"}], "metrics": {}})
    found = capture("tempo_trace_v2_json")["response"]
    responses.get(f"{TEMPO}/api/v2/traces/0af7651916cd43dd8448eb211c80319c",
                  json=found["body"], content_type=found["content_type"])
    missing = capture("tempo_trace_missing")["response"]
    responses.get(f"{TEMPO}/api/v2/traces/ffffffffffffffffffffffffffffffff",
                  json=missing["body"], content_type=missing["content_type"])
    slept: list[float] = []
    t = HttpTransport(TargetConfig(TEMPO), sleep=slept.append, clock=lambda: sum(slept))
    rec = record_tempo(t, "{ }", 0, 10, limit=20)
    assert rec.trace_ids == ["0af7651916cd43dd8448eb211c80319c",
                             "ffffffffffffffffffffffffffffffff"]
    assert rec.missing == ["ffffffffffffffffffffffffffffffff"]
    # asked for again (Tempo may be writing it to a block) for SETTLE_S, with backoff;
    # the trace it found was asked for once
    asked = [c.request.url.rsplit("/", 1)[1] for c in responses.calls
             if "/api/v2/traces/" in c.request.url]
    assert asked.count("0af7651916cd43dd8448eb211c80319c") == 1
    assert 3 < asked.count("ffffffffffffffffffffffffffffffff") < 15
    assert abs(sum(slept) - SETTLE_S) < 1e-9 and max(slept) <= 2.0
    assert rec.problems and "could not be fetched" in rec.problems[0]
    (table,) = span_tables(rec.resource_spans, 1_795_778_580_000_000_000)
    assert bytes(table.trace_id[0]).hex() == "0af7651916cd43dd8448eb211c80319c"
    assert table.name[0] == "POST /payment" and dict(table.resource)["service.name"] == \
        "payment-service"
    assert table.start_ns[0] == 1_795_778_583_446_477_942 - 1_795_778_580_000_000_000


@responses.activate
def test_search_hitting_its_limit_is_a_problem() -> None:
    responses.get(f"{TEMPO}/api/search", json={"traces": [{"traceID": "1"}, {"traceID": "2"}]})
    for tid in ("0" * 31 + "1", "0" * 31 + "2"):
        responses.get(f"{TEMPO}/api/v2/traces/{tid}", json={"trace": {}},
                      content_type="application/json")
    rec = record_tempo(HttpTransport(TargetConfig(TEMPO)), "{ }", 0, 10, limit=2, settle_s=0)
    assert any("returned its limit" in p for p in rec.problems)


@responses.activate
def test_an_answer_that_does_not_decode_is_a_problem_not_a_crash() -> None:
    # the captured protobuf answer is cut short (the capture kept its first 300 bytes)
    cut = capture("tempo_trace_v2_protobuf")["response"]
    responses.get(f"{TEMPO}/api/search", json={"traces": [
        {"traceID": "af7651916cd43dd8448eb211c80319c"}]})
    responses.get(f"{TEMPO}/api/v2/traces/0af7651916cd43dd8448eb211c80319c",
                  body=bytes.fromhex(cut["body"]), content_type=cut["content_type"])
    rec = record_tempo(HttpTransport(TargetConfig(TEMPO)), "{ }", 0, 10, limit=20)
    assert rec.resource_spans == [] and "does not decode" in rec.problems[0]
