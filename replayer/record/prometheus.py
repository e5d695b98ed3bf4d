"""Read raw samples, exemplars and metadata of a window back out of Prometheus.

Series are discovered with ``/api/v1/series``; samples are read raw with range-vector
instant queries (``sel[<range>]`` at ``time``: the samples in ``(time - range, time]``), not
with step-aligned ``query_range``, and the window is cut into chunks so that no answer
holds more than ``max_points`` samples per series (Prometheus' 11,000 for query_range; we
keep range queries under the same bound).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from generator.model import Exemplars, Labels, MetricFamily, Series, frozen_array, make_labels

from ..errors import TransportError
from ..transport import HttpTransport, Response

MAX_POINTS = 11_000


@dataclass
class PromRecord:
    series: list[Series]
    families: list[MetricFamily]
    problems: list[str] = field(default_factory=list)
    requests: int = 0


def _data(resp: Response, what: str) -> object:
    if resp.status != 200:
        raise TransportError(f"{what}: HTTP {resp.status}: {resp.body.strip()[:300]}")
    try:
        body = json.loads(resp.body)
    except ValueError:
        raise TransportError(f"{what}: not JSON: {resp.body[:200]!r}") from None
    if body.get("status") != "success":
        raise TransportError(f"{what}: {body.get('errorType')}: {body.get('error')}")
    return body.get("data")


def _sec(ms: int) -> str:
    return f"{ms / 1000:.3f}"


def _selector(labels: Labels) -> str:
    esc = [(k, v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))
           for k, v in labels]
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc) + "}"


def discover(t: HttpTransport, matchers: Sequence[str], start_ms: int,
             end_ms: int) -> list[Labels]:
    params = [("match[]", m) for m in matchers] + [("start", _sec(start_ms)),
                                                    ("end", _sec(end_ms))]
    data = _data(t.get("api/v1/series", params), "series discovery")  # type: ignore[arg-type]
    assert isinstance(data, list)
    return sorted({make_labels(d) for d in data})


def chunk_bounds(start_ms: int, end_ms: int, chunk_ms: int) -> list[tuple[int, int]]:
    """Left-open chunks ``(lo, hi]`` covering ``[start, end]``."""
    out, lo = [], start_ms - 1
    while lo < end_ms:
        hi = min(lo + chunk_ms, end_ms)
        out.append((lo, hi))
        lo = hi
    return out


def read_samples(t: HttpTransport, selector: str, start_ms: int, end_ms: int,
                 chunk_ms: int) -> tuple[dict[Labels, tuple[list[int], list[float]]], int]:
    out: dict[Labels, tuple[list[int], list[float]]] = {}
    requests = 0
    for lo, hi in chunk_bounds(start_ms, end_ms, chunk_ms):
        resp = t.get("api/v1/query", {"query": f"{selector}[{hi - lo}ms]", "time": _sec(hi)})
        requests += 1
        data = _data(resp, f"raw samples of {selector}")
        assert isinstance(data, dict)
        for r in data.get("result", []):
            key = make_labels(r["metric"])
            ts, vs = out.setdefault(key, ([], []))
            for when, value in r.get("values", []):
                ts.append(int(round(float(when) * 1000)))
                vs.append(float(value))
    return out, requests


def read_exemplars(t: HttpTransport, selector: str, start_ms: int,
                   end_ms: int) -> dict[Labels, list[tuple[int, float, str, str]]]:
    data = _data(t.get("api/v1/query_exemplars", {"query": selector, "start": _sec(start_ms),
                                                   "end": _sec(end_ms)}), "exemplars")
    out: dict[Labels, list[tuple[int, float, str, str]]] = {}
    for group in data or []:  # type: ignore[attr-defined]
        key = make_labels(group["seriesLabels"])
        for e in group.get("exemplars", []):
            labels = e.get("labels", {})
            trace = labels.get("trace_id", labels.get("traceID", ""))
            span = labels.get("span_id", labels.get("spanID", ""))
            out.setdefault(key, []).append((int(round(float(e["timestamp"]) * 1000)),
                                            float(e["value"]), trace, span))
    return out


def read_metadata(t: HttpTransport) -> dict[str, MetricFamily]:
    resp = t.get("api/v1/metadata")
    if resp.status != 200:
        return {}
    data = _data(resp, "metadata")
    out = {}
    for name, entries in (data or {}).items():  # type: ignore[attr-defined]
        if entries:
            e = entries[0]
            out[name] = MetricFamily(name, e.get("type", "unknown"), e.get("help", ""),
                                     e.get("unit", ""))
    return out


def _exemplar_arrays(items: list[tuple[int, float, str, str]], start_ms: int) -> Exemplars:
    items = sorted(i for i in items if len(i[2]) == 32 and len(i[3]) == 16)
    if not items:
        return Exemplars.empty()
    return Exemplars(
        frozen_array([i[0] - start_ms for i in items], np.int64),
        frozen_array([i[1] for i in items], np.float64),
        frozen_array(np.frombuffer(bytes.fromhex("".join(i[2] for i in items)),
                                   np.uint8).reshape(-1, 16), np.uint8),
        frozen_array(np.frombuffer(bytes.fromhex("".join(i[3] for i in items)),
                                   np.uint8).reshape(-1, 8), np.uint8))


def record_prometheus(t: HttpTransport, matchers: Sequence[str], start_ms: int, end_ms: int,
                      step_hint_ms: int = 15_000) -> PromRecord:
    """Every series matching ``matchers`` in ``[start, end]``, times relative to ``start``."""
    labelsets = discover(t, matchers, start_ms, end_ms)
    rec = PromRecord([], [])
    rec.requests += 1
    # at most MAX_POINTS per series per answer, assuming no series is scraped faster than
    # every second; a denser series would show more points than the chunk can hold
    chunk_ms = max(1000, min(MAX_POINTS * 1000, MAX_POINTS * step_hint_ms))
    names = sorted({dict(ls)["__name__"] for ls in labelsets})
    samples: dict[Labels, tuple[list[int], list[float]]] = {}
    for name in names:
        selector = "{" + f'__name__="{name}"' + "".join(
            "," + m.strip("{}") for m in matchers if m.strip("{}")) + "}"
        got, n = read_samples(t, selector, start_ms, end_ms, chunk_ms)
        rec.requests += n
        samples.update(got)
    exemplars: dict[Labels, list[tuple[int, float, str, str]]] = {}
    bucket_names = [n for n in names if n.endswith("_bucket")]
    for name in bucket_names:
        exemplars.update(read_exemplars(t, f'{{__name__="{name}"}}', start_ms, end_ms))
        rec.requests += 1
    families = read_metadata(t)
    rec.requests += 1
    for ls in labelsets:
        if ls not in samples:
            rec.problems.append(f"series {_selector(ls)} was listed but returned no samples")
            continue
        ts, vs = samples[ls]
        order = np.argsort(np.array(ts, np.int64), kind="stable")
        t_rel = np.array(ts, np.int64)[order] - start_ms
        v = np.array(vs, np.float64)[order]
        rec.series.append(Series(ls, frozen_array(t_rel, np.int64), frozen_array(v, np.float64),
                                 _exemplar_arrays(exemplars.get(ls, []), start_ms)))
    base = {n.removesuffix(s) for n in names for s in ("_bucket", "_sum", "_count", "_total",
                                                       "_created", "")}
    rec.families = sorted((f for n, f in families.items() if n in base), key=lambda f: f.name)
    return rec
