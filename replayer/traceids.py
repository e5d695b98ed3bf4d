"""Give a load its own trace IDs, consistently in every signal.

Two loads of the same scenario and seed carry the same trace IDs; into one Tempo they would
merge into each other's traces. XOR-ing every trace ID with a salt (spans, exemplars, log
structured metadata ``trace_id`` and ``otelTraceID``, ``trace_id=`` in log lines, the
ground truth's examples and the queries that name them) keeps them joined within the load
and apart from every other load.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

import numpy as np

from generator.model import Exemplars, Incident, LogStream, Series, frozen_array

TRACE_ID_METADATA = frozenset({"trace_id", "otelTraceID"})
_IN_LINE = re.compile(r"(trace_id=)([0-9a-f]{32})")
_HEX32 = re.compile(r"[0-9a-f]{32}")


def salt_of(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()[:16]


def _xor(ids: np.ndarray, salt: np.ndarray) -> np.ndarray:
    out = ids ^ salt[None, :]
    zero = ~out.any(axis=1)
    out[zero, 15] = 1  # an all-zero trace ID is invalid; vanishingly rare
    return frozen_array(out, np.uint8)


def _hex(tid: str, salt: bytes) -> str:
    return bytes(a ^ b for a, b in zip(bytes.fromhex(tid), salt)).hex()


def salt_trace_ids(incident: Incident, salt: bytes) -> Incident:
    if len(salt) != 16:
        raise ValueError("a trace-ID salt is 16 bytes")
    s = np.frombuffer(salt, np.uint8)
    series = []
    for x in incident.series:
        e = x.exemplars
        if len(e):
            x = Series(x.labels, x.t_ms, x.values,
                       Exemplars(e.t_ms, e.value, _xor(e.trace_id, s), e.span_id))
        series.append(x)
    streams = []
    for st in incident.log_streams:
        # the OTLP bridge writes the trace ID twice (trace_id, otelTraceID); the pairs that
        # do not change stay the objects they were
        meta = tuple(tuple((p[0], _hex(p[1], salt)) if p[0] in TRACE_ID_METADATA
                           and len(p[1]) == 32 else p for p in m) for m in st.metadata)
        lines = tuple(_IN_LINE.sub(lambda m: m.group(1) + _hex(m.group(2), salt), line)
                      if "trace_id=" in line else line for line in st.lines)
        streams.append(LogStream(st.labels, st.t_ns, lines, meta, st.time_prefix))
    tables = tuple(replace(t, trace_id=_xor(t.trace_id, s)) for t in incident.span_tables)
    truth = incident.truth
    salted = {t: _hex(t, salt) for t in truth.example_trace_ids}

    def queries(pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        # a query naming an example trace must name the trace this load sent
        return tuple((what, _HEX32.sub(lambda m: salted.get(m.group(0), m.group(0)), q))
                     for what, q in pairs)

    truth = replace(truth, example_trace_ids=tuple(salted.values()),
                    promql=queries(truth.promql), logql=queries(truth.logql),
                    traceql=queries(truth.traceql))
    return replace(incident, series=tuple(series), log_streams=tuple(streams),
                   span_tables=tables, truth=truth)
