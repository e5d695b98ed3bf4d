"""Read traces of a window back out of Tempo: TraceQL search, then every trace by ID.

Search results drop leading zeros of hex trace IDs (``0af7...`` comes back as ``af7...``):
IDs are left-padded to 32 hex digits. An unknown ID is answered with 200 and an empty
trace, or 404: such traces are asked for again, with backoff, for up to ``SETTLE_S`` (Tempo
3.0.3 does not find a trace by ID for a second or two while it writes the trace from its
live traces to a block), and are reported as missing if they still cannot be fetched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1 import trace_pb2

from ..errors import TransportError
from ..transport import HttpTransport
from ..wire import read_fields


@dataclass
class TempoRecord:
    resource_spans: list[trace_pb2.ResourceSpans]
    trace_ids: list[str]
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    requests: int = 0


def normalise_trace_id(raw: str) -> str:
    """Tempo's search prints trace IDs without leading zeros; OTLP IDs are 16 bytes."""
    text = raw.strip().lower()
    if not text or len(text) > 32 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"not a hex trace ID: {raw!r}")
    return text.rjust(32, "0")


def search(t: HttpTransport, traceql: str, start_s: int, end_s: int, limit: int,
           spss: int = 3) -> tuple[list[str], bool]:
    """Trace IDs found, and whether the answer hit ``limit`` (so some may be missing)."""
    resp = t.get("api/search", {"q": traceql, "start": str(start_s), "end": str(end_s),
                                "limit": str(limit), "spss": str(spss)})
    if resp.status != 200:
        raise TransportError(f"trace search: HTTP {resp.status}: {resp.body.strip()[:300]}")
    traces = json.loads(resp.body).get("traces") or []
    ids = sorted({normalise_trace_id(tr["traceID"]) for tr in traces})
    return ids, len(traces) >= limit


def fetch(t: HttpTransport, trace_id: str) -> list[trace_pb2.ResourceSpans]:
    """The trace's resource spans (``/api/v2/traces/<id>`` as OTLP protobuf)."""
    resp = t.get(f"api/v2/traces/{trace_id}", headers={"Accept": "application/protobuf"})
    if resp.status == 404:
        return []
    if resp.status != 200:
        raise TransportError(f"trace {trace_id}: HTTP {resp.status}: {resp.body[:300]}")
    try:
        if "json" in resp.headers.get("Content-Type", ""):
            return _from_json(json.loads(resp.raw or b"{}"))
        return _from_proto(resp.raw)
    except (ValueError, DecodeError, json_format.ParseError) as exc:
        raise TransportError(f"trace {trace_id}: the answer does not decode ({exc})") from None


def _from_proto(body: bytes) -> list[trace_pb2.ResourceSpans]:
    """``TraceByIDResponse{trace = 1: Trace{resource_spans = 1}}``."""
    out: list[trace_pb2.ResourceSpans] = []
    for number, value in read_fields(body):
        if number == 1 and isinstance(value, bytes):
            out.extend(trace_pb2.TracesData.FromString(value).resource_spans)
    return out


def _from_json(body: dict) -> list[trace_pb2.ResourceSpans]:
    trace = body.get("trace") or {}
    data = trace_pb2.TracesData()
    json_format.ParseDict({"resourceSpans": trace.get("resourceSpans", [])}, data,
                          ignore_unknown_fields=True)
    return list(data.resource_spans)


FETCH_WORKERS = 8  # traces fetched by ID at once (the transport pools 8 connections)
SETTLE_S = 15.0  # how long a trace Tempo does not (yet) find by ID is asked for again


def record_tempo(t: HttpTransport, traceql: str, start_s: int, end_s: int,
                 limit: int = 1000, workers: int = FETCH_WORKERS,
                 settle_s: float = SETTLE_S) -> TempoRecord:
    ids, truncated = search(t, traceql, start_s, end_s, limit)
    rec = TempoRecord([], ids, requests=1)
    if truncated:
        rec.problems.append(f"the search returned its limit ({limit} traces); more may exist: "
                            "raise --trace-limit or narrow --traceql")

    def one(tid: str) -> tuple[list[trace_pb2.ResourceSpans], str | None]:
        try:
            return fetch(t, tid), None
        except TransportError as exc:
            return [], str(exc)

    # one request per trace: several at once, results kept in the search's order
    found: dict[str, list[trace_pb2.ResourceSpans]] = {}
    failed: set[str] = set()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        todo = ids
        deadline, wait = t.clock() + settle_s, 0.25
        while True:
            empty = []
            for tid, (spans, problem) in zip(todo, pool.map(one, todo)):
                rec.requests += 1
                if problem:
                    rec.problems.append(problem)
                    failed.add(tid)
                elif not spans:
                    empty.append(tid)
                found[tid] = spans
            if not empty or t.clock() >= deadline:
                break
            t.sleep(min(wait, max(deadline - t.clock(), 0.0)))  # being written: ask again
            wait, todo = min(wait * 2, 2.0), empty
    rec.missing = [tid for tid in ids if not found.get(tid) and tid not in failed]
    for tid in ids:
        rec.resource_spans.extend(found.get(tid, []))
    if rec.missing:
        rec.problems.append(f"{len(rec.missing)} traces found by search could not be fetched "
                            f"by ID (empty answer): {', '.join(rec.missing[:5])}")
    return rec


def all_spans(resource_spans: Iterable[trace_pb2.ResourceSpans]) -> int:
    return sum(len(ss.spans) for rs in resource_spans for ss in rs.scope_spans)
