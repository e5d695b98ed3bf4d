"""Recording files: JSON Lines (optionally gzip), streamed, deterministic, lossless.

The format is specified in ``recordings/README.md``. One JSON object per line, keys
sorted, no spaces: a ``header`` first, then ``series``, ``log_stream`` and ``spans``
records in any number, then an ``end`` record with counts that proves the file is whole.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from generator.model import (
    Exemplars,
    FaultTruth,
    GroundTruth,
    Incident,
    LogStream,
    MetricFamily,
    Phase,
    RedHerringTruth,
    Series,
    SpanEvent,
    SpanTable,
    frozen_array,
)

from .errors import RecordingError

FORMAT = "telemetry-replayer-recording"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 2 added span flags and scope schema_url
LOG_CHUNK = 5000
SPAN_CHUNK = 2000
_SPECIAL = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}


def _dumps(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _floats(values: np.ndarray) -> list[float | str]:
    plain: list[float] = values.tolist()
    if np.isfinite(values).all():
        return list(plain)
    return [v if math.isfinite(v) else ("NaN" if v != v else ("+Inf" if v > 0 else "-Inf"))
            for v in plain]


def _unfloats(values: list[Any]) -> np.ndarray:
    return np.array([_SPECIAL[v] if isinstance(v, str) else v for v in values], np.float64)


def _hexes(rows: np.ndarray) -> list[str]:
    return [bytes(r).hex() for r in rows]


def _unhex(values: list[str], width: int) -> np.ndarray:
    bad = [h for h in values if len(h) != 2 * width]
    if bad:
        raise ValueError(f"id {bad[0]!r} is not {width} bytes of hex")
    raw = bytes.fromhex("".join(values))
    return np.frombuffer(raw, np.uint8).reshape(len(values), width).copy()


# ---------------------------------------------------------------- writing

def header_record(incident: Incident) -> dict[str, Any]:
    return {
        "kind": "header", "format": FORMAT, "version": FORMAT_VERSION,
        "scenario": incident.scenario, "seed": incident.seed,
        "generator_version": incident.generator_version,
        "duration_ms": incident.duration_ms, "step_ms": incident.step_ms,
        "knobs": dict(incident.knobs), "source": dict(incident.source),
        "families": [{"name": f.name, "type": f.type, "help": f.help, "unit": f.unit}
                     for f in incident.families],
        "truth": truth_to_json(incident.truth),
    }


def truth_to_json(t: GroundTruth) -> dict[str, Any]:
    return {
        "summary": t.summary, "root_cause": {"component": t.root_cause_component,
                                             "kind": t.root_cause_kind,
                                             "identity": dict(t.root_cause_identity)},
        "onset_ms": t.onset_ms, "peak_ms": t.peak_ms, "recovery_ms": t.recovery_ms,
        "phases": [{"name": p.name, "start_ms": p.start_ms, "end_ms": p.end_ms}
                   for p in t.phases],
        "affected_signals": list(t.affected_signals),
        "example_trace_ids": list(t.example_trace_ids),
        "promql": [{"what": w, "query": q} for w, q in t.promql],
        "logql": [{"what": w, "query": q} for w, q in t.logql],
        "traceql": [{"what": w, "query": q} for w, q in t.traceql],
        "trace_sampling": dict(t.trace_sampling),
        # only an incident of several faults or with red herrings has these
        **({"faults": [_fault_json(f) for f in t.faults]} if t.faults else {}),
        **({"red_herrings": [{"kind": h.kind, "start_ms": h.start_ms, "end_ms": h.end_ms,
                              "what": h.what} for h in t.red_herrings]}
           if t.red_herrings else {}),
    }


def _fault_json(f: FaultTruth) -> dict[str, Any]:
    return {"kind": f.kind, "component": f.component, "root_cause_kind": f.root_cause_kind,
            "identity": dict(f.identity), "primary": f.primary,
            "phases": [{"name": p.name, "start_ms": p.start_ms, "end_ms": p.end_ms}
                       for p in f.phases], "summary": f.summary,
            "promql": [{"what": w, "query": q} for w, q in f.promql],
            "logql": [{"what": w, "query": q} for w, q in f.logql],
            "traceql": [{"what": w, "query": q} for w, q in f.traceql]}


def _fault_from_json(f: dict[str, Any]) -> FaultTruth:
    return FaultTruth(
        kind=f["kind"], component=f["component"], root_cause_kind=f["root_cause_kind"],
        identity=tuple(sorted(f["identity"].items())), primary=bool(f["primary"]),
        phases=tuple(Phase(p["name"], p["start_ms"], p["end_ms"]) for p in f["phases"]),
        summary=f["summary"], promql=tuple((q["what"], q["query"]) for q in f["promql"]),
        logql=tuple((q["what"], q["query"]) for q in f["logql"]),
        traceql=tuple((q["what"], q["query"]) for q in f["traceql"]))


def series_record(s: Series) -> dict[str, Any]:
    rec: dict[str, Any] = {"kind": "series", "labels": dict(s.labels), "t_ms": s.t_ms.tolist(),
                           "values": _floats(s.values)}
    if len(s.exemplars):
        e = s.exemplars
        rec["exemplars"] = {"t_ms": e.t_ms.tolist(), "value": _floats(e.value),
                            "trace_id": _hexes(e.trace_id), "span_id": _hexes(e.span_id)}
    return rec


def log_records(stream: LogStream) -> Iterator[dict[str, Any]]:
    for lo in range(0, max(len(stream), 1), LOG_CHUNK):
        hi = min(lo + LOG_CHUNK, len(stream))
        yield {"kind": "log_stream", "labels": dict(stream.labels),
               "time_prefix": stream.time_prefix, "t_ns": stream.t_ns[lo:hi].tolist(),
               "lines": list(stream.lines[lo:hi]),
               "metadata": [dict(m) for m in stream.metadata[lo:hi]]}


def span_records(table: SpanTable) -> Iterator[dict[str, Any]]:
    for lo in range(0, max(len(table), 1), SPAN_CHUNK):
        hi = min(lo + SPAN_CHUNK, len(table))
        spans = []
        flags = table.span_flags().tolist()
        for i in range(lo, hi):
            spans.append({
                "trace_id": bytes(table.trace_id[i]).hex(),
                "span_id": bytes(table.span_id[i]).hex(),
                "parent_span_id": bytes(table.parent_span_id[i]).hex(), "name": table.name[i],
                "kind": int(table.kind[i]), "start_ns": int(table.start_ns[i]),
                "end_ns": int(table.end_ns[i]), "status_code": int(table.status_code[i]),
                "status_message": table.status_message[i],
                "attributes": [[k, v] for k, v in table.attributes[i]],
                "events": [{"name": ev.name, "t_ns": ev.t_ns,
                            "attributes": [[k, v] for k, v in ev.attributes]}
                           for ev in table.events[i]],
                "flags": flags[i],
            })
        yield {"kind": "spans", "resource": [[k, v] for k, v in table.resource],
               "scope": {"name": table.scope_name, "version": table.scope_version,
                         "schema_url": table.scope_schema_url},
               "spans": spans}


def incident_records(incident: Incident) -> Iterator[dict[str, Any]]:
    yield header_record(incident)
    for s in incident.series:
        yield series_record(s)
    for stream in incident.log_streams:
        yield from log_records(stream)
    for table in incident.span_tables:
        yield from span_records(table)
    yield {"kind": "end", "counts": counts(incident)}


def counts(incident: Incident) -> dict[str, int]:
    return {"series": len(incident.series), "samples": incident.sample_count,
            "exemplars": incident.exemplar_count, "log_streams": len(incident.log_streams),
            "log_lines": incident.log_line_count, "spans": incident.span_count}


def _write_lines(records: Iterable[dict[str, Any]], out: IO[bytes] | gzip.GzipFile) -> None:
    """One JSON line per record; the 'end' record carries the SHA-256 of every line before
    it, so a file altered afterwards (a flipped digit in a value) is detected on reading."""
    digest = hashlib.sha256()
    for rec in records:
        if rec.get("kind") == "end":
            rec = {**rec, "sha256": digest.hexdigest()}
        line = _dumps(rec).encode("utf-8") + b"\n"
        digest.update(line)
        out.write(line)


def write_records(records: Iterable[dict[str, Any]], path: str | Path) -> None:
    """Write records one line each; ``.gz`` paths are gzip-compressed deterministically."""
    path = Path(path)
    with open(path, "wb") as raw:
        if path.suffix == ".gz":
            # mtime=0 and no file name keep the bytes the same run after run.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
                _write_lines(records, out)
        else:
            _write_lines(records, raw)


def write_recording(incident: Incident, path: str | Path) -> None:
    write_records(incident_records(incident), path)


def recording_bytes(incident: Incident) -> bytes:
    """The uncompressed content a recording of ``incident`` holds."""
    buf = io.BytesIO()
    _write_lines(incident_records(incident), buf)
    return buf.getvalue()


# ---------------------------------------------------------------- reading

@contextlib.contextmanager
def _open_read(path: Path) -> Iterator[IO[bytes] | gzip.GzipFile]:
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise RecordingError(f"{path}: cannot open recording: {exc.strerror}") from None
    with raw:
        magic = raw.read(2)
        raw.seek(0)
        if magic == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped
        else:
            yield raw


def iter_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, record)``; a malformed line raises :class:`RecordingError`,
    and so does an 'end' record whose SHA-256 does not match the lines before it (files
    written before the digest have none, and are read as they are)."""
    path = Path(path)
    digest = hashlib.sha256()
    with _open_read(path) as f:
        try:
            for lineno, line in enumerate(f, 1):
                try:
                    rec = json.loads(line)
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise RecordingError(f"{path}:{lineno}: not a JSON line ({exc})") from None
                if not isinstance(rec, dict) or "kind" not in rec:
                    raise RecordingError(
                        f"{path}:{lineno}: a record must be an object with 'kind'")
                if rec["kind"] == "end" and "sha256" in rec \
                        and rec["sha256"] != digest.hexdigest():
                    raise RecordingError(
                        f"{path}:{lineno}: the file was altered after it was written (its "
                        "SHA-256 does not match the one in the 'end' record); re-create or "
                        "re-download it")
                digest.update(line)
                yield lineno, rec
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise RecordingError(f"{path}: damaged file ({exc}); re-create or re-download it"
                                 ) from None


def read_recording(path: str | Path) -> Incident:
    """Read a whole recording back into an :class:`Incident` (lossless)."""
    path = Path(path)
    reader = _Assembler(path)
    for lineno, rec in iter_records(path):
        try:
            reader.take(lineno, rec)
        except RecordingError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise RecordingError(f"{path}:{lineno}: malformed {rec.get('kind')!r} record: "
                                 f"{what}") from None
    return reader.finish()


class _Assembler:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.header: dict[str, Any] | None = None
        self.series: list[Series] = []
        self.grids: dict[bytes, np.ndarray] = {}  # equal timestamp arrays, read once
        self.logs: list[dict[str, Any]] = []
        self.spans: list[dict[str, Any]] = []
        self.end: dict[str, Any] | None = None

    def take(self, lineno: int, rec: dict[str, Any]) -> None:
        kind = rec["kind"]
        if self.header is None and kind != "header":
            raise RecordingError(f"{self.path}:{lineno}: the first record must be the header")
        if self.end is not None:
            raise RecordingError(f"{self.path}:{lineno}: records after the 'end' record")
        if kind == "header":
            self._header(lineno, rec)
        elif kind == "series":
            self.series.append(_series(rec, self.grids))
        elif kind == "log_stream":
            _check_times(rec["t_ns"], "t_ns")
            self._merge(self.logs, rec, ("labels", "time_prefix"), ("t_ns", "lines", "metadata"))
        elif kind == "spans":
            _check_spans(rec["spans"])
            self._merge(self.spans, rec, ("resource", "scope"), ("spans",))
        elif kind == "end":
            self.end = rec
        else:
            raise RecordingError(f"{self.path}:{lineno}: unknown record kind {kind!r}")

    def _header(self, lineno: int, rec: dict[str, Any]) -> None:
        if self.header is not None:
            raise RecordingError(f"{self.path}:{lineno}: a second header")
        if rec.get("format") != FORMAT:
            raise RecordingError(f"{self.path}:{lineno}: not a telemetry-replayer recording "
                                 f"(format {rec.get('format')!r})")
        if rec.get("version") not in READABLE_VERSIONS:
            raise RecordingError(f"{self.path}:{lineno}: format version {rec.get('version')!r} "
                                 f"is not supported (this replayer reads "
                                 f"{', '.join(map(str, READABLE_VERSIONS))})")
        for key, low in (("seed", 0), ("duration_ms", 1), ("step_ms", 1)):
            value = rec.get(key)
            if type(value) is not int or value < low:
                raise RecordingError(f"{self.path}:{lineno}: header field {key!r} must be a "
                                     f"whole number >= {low}, got {value!r}")
        if rec["step_ms"] > rec["duration_ms"]:
            raise RecordingError(f"{self.path}:{lineno}: header step_ms {rec['step_ms']} is "
                                 f"longer than duration_ms {rec['duration_ms']}")
        self.header = rec

    @staticmethod
    def _merge(acc: list[dict[str, Any]], rec: dict[str, Any], keys: tuple[str, ...],
               parts: tuple[str, ...]) -> None:
        if acc and all(acc[-1][k] == rec[k] for k in keys):
            for p in parts:
                acc[-1][p] = acc[-1][p] + rec[p]
        else:
            acc.append({k: rec[k] for k in keys + parts})

    def finish(self) -> Incident:
        if self.header is None:
            raise RecordingError(f"{self.path}: empty file, no header")
        if self.end is None:
            raise RecordingError(f"{self.path}: truncated: no 'end' record (the file was cut "
                                 "short); re-create it")
        try:
            incident = self._incident()
        except RecordingError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            raise RecordingError(f"{self.path}: malformed header or records: {exc!r}") from None
        got, want = counts(incident), self.end.get("counts", {})
        if got != want:
            raise RecordingError(f"{self.path}: counts {got} do not match the end record "
                                 f"{want}; the file is damaged")
        return incident

    def _incident(self) -> Incident:
        h = self.header
        assert h is not None
        return Incident(
            scenario=h["scenario"], seed=int(h["seed"]), duration_ms=int(h["duration_ms"]),
            step_ms=int(h["step_ms"]),
            families=tuple(MetricFamily(f["name"], f["type"], f["help"], f.get("unit", ""))
                           for f in h["families"]),
            series=tuple(self.series), log_streams=tuple(_stream(r) for r in self.logs),
            span_tables=tuple(_table(r) for r in self.spans), truth=truth_from_json(h["truth"]),
            knobs=tuple(sorted(h.get("knobs", {}).items())),
            generator_version=h.get("generator_version", ""),
            source=tuple(sorted(h.get("source", {}).items())),
        )


def truth_from_json(t: dict[str, Any]) -> GroundTruth:
    return GroundTruth(
        summary=t["summary"], root_cause_component=t["root_cause"]["component"],
        root_cause_kind=t["root_cause"]["kind"], onset_ms=t["onset_ms"], peak_ms=t["peak_ms"],
        recovery_ms=t["recovery_ms"],
        phases=tuple(Phase(p["name"], p["start_ms"], p["end_ms"]) for p in t["phases"]),
        affected_signals=tuple(t["affected_signals"]),
        example_trace_ids=tuple(t["example_trace_ids"]),
        promql=tuple((q["what"], q["query"]) for q in t["promql"]),
        logql=tuple((q["what"], q["query"]) for q in t["logql"]),
        traceql=tuple((q["what"], q["query"]) for q in t["traceql"]),
        # absent from recordings written before the ground truth named it: no identity
        root_cause_identity=tuple(sorted(t["root_cause"].get("identity", {}).items())),
        # files written before the policy was recorded say nothing of it
        trace_sampling=tuple(sorted(t.get("trace_sampling", {"policy": "unknown"}).items())),
        faults=tuple(_fault_from_json(f) for f in t.get("faults", [])),
        red_herrings=tuple(RedHerringTruth(h["kind"], h["start_ms"], h["end_ms"], h["what"])
                           for h in t.get("red_herrings", [])),
    )


def _series(rec: dict[str, Any], grids: dict[bytes, np.ndarray]) -> Series:
    """``grids``: series with equal timestamps share one array, as generated ones do (less
    memory; the remote-write encoder encodes a shared array once)."""
    labels = tuple(sorted((str(k), str(v)) for k, v in rec["labels"].items()))
    if "__name__" not in rec["labels"]:
        raise ValueError("series labels need __name__")
    _check_times(rec["t_ms"], "t_ms")
    t_ms = frozen_array(rec["t_ms"], np.int64)
    if t_ms.shape[0] > 1 and not bool(np.all(np.diff(t_ms) > 0)):
        at = int(np.flatnonzero(np.diff(t_ms) <= 0)[0])
        raise ValueError(f"series t_ms must increase: {int(t_ms[at + 1])} follows "
                         f"{int(t_ms[at])} (a sample would be lost: a series holds one "
                         "value a timestamp)")
    t_ms = grids.setdefault(t_ms.tobytes(), t_ms)
    values = frozen_array(_unfloats(rec["values"]), np.float64)
    if t_ms.shape != values.shape:
        raise ValueError(f"{t_ms.shape[0]} timestamps but {values.shape[0]} values")
    ex = Exemplars.empty()
    if "exemplars" in rec:
        e = rec["exemplars"]
        ex = Exemplars(frozen_array(e["t_ms"], np.int64),
                       frozen_array(_unfloats(e["value"]), np.float64),
                       frozen_array(_unhex(e["trace_id"], 16), np.uint8),
                       frozen_array(_unhex(e["span_id"], 8), np.uint8))
    return Series(labels, t_ms, values, ex)


_MAX_TIME = 2**62  # |ns| from the window start: far past any window, well inside int64


def _check_times(values: list[Any], field: str) -> None:
    """Whole numbers within +-2**62 (times are from the window's start, and a line or span
    may begin before it): a string ("soon"), a float (1e30) or a bool would fail deep in
    numpy or wrap around silently."""
    if not values:
        return
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu" or arr.ndim != 1 or any(type(v) is bool for v in values[:1]):
        bad = next((v for v in values if type(v) is not int), values[0])
        raise ValueError(f"field {field!r}: {bad!r} is not a whole number of time units")
    if int(arr.min()) <= -_MAX_TIME or int(arr.max()) >= _MAX_TIME:
        raise ValueError(f"field {field!r}: {int(arr.max())} is out of range")


_SPAN_KINDS = range(0, 6)  # OTLP SpanKind: UNSPECIFIED .. CONSUMER
_STATUS_CODES = range(0, 3)  # OTLP Status: UNSET, OK, ERROR


def _check_spans(spans: list[dict[str, Any]]) -> None:
    for field, allowed in (("kind", _SPAN_KINDS), ("status_code", _STATUS_CODES)):
        values = [sp[field] for sp in spans]
        arr = np.asarray(values)
        if values and (arr.dtype.kind not in "iu" or int(arr.min()) < allowed.start
                       or int(arr.max()) >= allowed.stop):
            i = next(i for i, v in enumerate(values) if type(v) is not int or v not in allowed)
            raise ValueError(f"span {i}: field {field!r} must be {allowed.start}-"
                             f"{allowed.stop - 1} (OTLP), got {values[i]!r}")
    starts = [sp["start_ns"] for sp in spans]
    ends = [sp["end_ns"] for sp in spans]
    _check_times(starts, "start_ns")
    _check_times(ends, "end_ns")
    if spans and bool(np.any(np.asarray(ends) < np.asarray(starts))):
        i = int(np.flatnonzero(np.asarray(ends) < np.asarray(starts))[0])
        raise ValueError(f"span {i}: end_ns {ends[i]} before start_ns {starts[i]}")


def _stream(rec: dict[str, Any]) -> LogStream:
    n = len(rec["t_ns"])
    if len(rec["lines"]) != n or len(rec["metadata"]) != n:
        raise RecordingError("log_stream: t_ns, lines and metadata differ in length")
    return LogStream(
        labels=tuple(sorted(rec["labels"].items())), t_ns=frozen_array(rec["t_ns"], np.int64),
        lines=tuple(rec["lines"]),
        metadata=tuple(tuple(sorted(m.items())) for m in rec["metadata"]),
        time_prefix=rec["time_prefix"],
    )


def _attrs(pairs: list[list[Any]]) -> tuple[tuple[str, Any], ...]:
    return tuple((str(k), v) for k, v in pairs)


def _table(rec: dict[str, Any]) -> SpanTable:
    spans = rec["spans"]
    return SpanTable(
        resource=_attrs(rec["resource"]), scope_name=rec["scope"]["name"],
        scope_version=rec["scope"]["version"],
        trace_id=frozen_array(_unhex([s["trace_id"] for s in spans], 16), np.uint8),
        span_id=frozen_array(_unhex([s["span_id"] for s in spans], 8), np.uint8),
        parent_span_id=frozen_array(_unhex([s["parent_span_id"] for s in spans], 8), np.uint8),
        start_ns=frozen_array([s["start_ns"] for s in spans], np.int64),
        end_ns=frozen_array([s["end_ns"] for s in spans], np.int64),
        kind=frozen_array([s["kind"] for s in spans], np.int8),
        status_code=frozen_array([s["status_code"] for s in spans], np.int8),
        name=tuple(s["name"] for s in spans),
        status_message=tuple(s["status_message"] for s in spans),
        attributes=tuple(_attrs(s["attributes"]) for s in spans),
        events=tuple(tuple(SpanEvent(e["name"], int(e["t_ns"]), _attrs(e["attributes"]))
                           for e in s["events"]) for s in spans),
        # version 1 kept neither: no schema URL, flags 0
        scope_schema_url=rec["scope"].get("schema_url", ""),
        flags=frozen_array([s.get("flags", 0) for s in spans], np.uint32),
    )
