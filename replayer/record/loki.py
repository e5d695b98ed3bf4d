"""Read log entries of a window back out of Loki, page by page.

``query_range`` forward with ``limit`` <= 5000 (Loki refuses more); the next page starts at
the last timestamp seen (start is inclusive), and entries already read at that exact
timestamp are skipped. Loki 3 answers with structured metadata merged into the stream
labels; the index labels are told apart with ``/loki/api/v1/labels``, and Loki's own
``detected_level`` is dropped, so a replayed stream records as it was sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from generator.model import LogStream, frozen_array, make_labels

from ..errors import TransportError
from ..timeshift import shift_metadata
from ..transport import HttpTransport

PAGE_LIMIT = 5000
LOKI_ADDED = frozenset({"detected_level"})


@dataclass
class LokiRecord:
    streams: list[LogStream]
    problems: list[str] = field(default_factory=list)
    requests: int = 0
    pages: int = 0


def _json(resp, what: str) -> dict:  # type: ignore[no-untyped-def]
    if resp.status != 200:
        raise TransportError(f"{what}: HTTP {resp.status}: {resp.body.strip()[:300]}")
    try:
        return json.loads(resp.body)
    except ValueError:
        raise TransportError(f"{what}: not JSON: {resp.body[:200]!r}") from None


def index_labels(t: HttpTransport, start_ns: int, end_ns: int) -> set[str]:
    body = _json(t.get("loki/api/v1/labels", {"start": str(start_ns), "end": str(end_ns)}),
                 "label names")
    return set(body.get("data") or [])


def record_loki(t: HttpTransport, logql: str, start_ns: int, end_ns: int,
                page_limit: int = PAGE_LIMIT, max_pages: int = 100_000) -> LokiRecord:
    """Every entry of ``logql`` in ``[start, end]``, times relative to ``start``."""
    if not 0 < page_limit <= PAGE_LIMIT:
        raise ValueError(f"page limit must be 1..{PAGE_LIMIT} (Loki's max_entries_limit)")
    rec = LokiRecord([])
    keep = index_labels(t, start_ns, end_ns + 1)
    rec.requests += 1
    entries: dict[tuple, list[tuple[int, str, tuple]]] = {}
    cursor = start_ns
    seen_at_cursor: set[tuple] = set()
    while True:
        body = _json(t.get("loki/api/v1/query_range", {
            "query": logql, "start": str(cursor), "end": str(end_ns + 1),
            "limit": str(page_limit), "direction": "forward"}), "log query")
        rec.requests += 1
        rec.pages += 1
        page: list[tuple[int, tuple, str, tuple]] = []
        for stream in body.get("data", {}).get("result", []):
            labels = stream.get("stream", {})
            index = make_labels({k: v for k, v in labels.items() if k in keep})
            meta = tuple(sorted((k, v) for k, v in labels.items()
                                if k not in keep and k not in LOKI_ADDED))
            for ts, line in (v[:2] for v in stream.get("values", [])):
                page.append((int(ts), index, line, meta))
        new = [e for e in page if (e[0], e[1], e[2], e[3]) not in seen_at_cursor]
        for ts, index, line, meta in new:
            entries.setdefault(index, []).append((ts, line, meta))
        if len(page) < page_limit:
            break
        last = max(e[0] for e in page)
        if not new:
            rec.problems.append(
                f"more than {page_limit} entries share the timestamp {last}; some of them could "
                "not be read (Loki pages by time)")
            break
        seen_at_cursor = {(e[0], e[1], e[2], e[3]) for e in page if e[0] == last} | (
            seen_at_cursor if last == cursor else set())
        cursor = last
        if rec.pages >= max_pages:
            rec.problems.append(f"stopped after {max_pages} pages; the window is larger")
            break
    for index in sorted(entries):
        items = sorted(entries[index], key=lambda e: e[0])
        rec.streams.append(LogStream(
            index, frozen_array([e[0] - start_ns for e in items], np.int64),
            tuple(e[1] for e in items), shift_metadata(tuple(e[2] for e in items), -start_ns),
            None))
    return rec
