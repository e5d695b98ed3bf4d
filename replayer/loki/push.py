"""Push log streams to Loki: preflight, pacing under the ingestion limit, accounting.

What Loki answers (see tests/data captures): 204 on success; 429 when over the ingestion
rate (retried with backoff, honouring Retry-After); 400 listing what it refused while the
rest of the request was written (partial success); 413 for a body over its limit.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from generator.model import LogStream

from ..errors import AuthError, PreflightError, TlsError, TransportError
from ..pipeline import send_lanes
from ..prometheus import parse_prom_duration
from ..report import SignalReport
from ..transport import HttpTransport, Pacer, Response
from .encode import (
    JSON_HEADERS,
    PROTO_HEADERS,
    EntryBatch,
    StreamEncoder,
    compress,
    json_request,
    plan_range,
)

PUSH_PATH = "loki/api/v1/push"
DEFAULT_RATE = 3 * 1024 * 1024  # under Loki's default 4 MB/s ingestion limit
# `load`'s default requests in flight to Loki: the most it took in the benchmarks (README,
# "Figures"); 4 and 8 lanes took less than 2
LOKI_CONCURRENCY = 2


@dataclass(frozen=True)
class LokiOptions:
    format: str = "protobuf"  # protobuf | json
    max_entries: int = 10_000
    max_bytes: int = 2 << 20  # a push over 4 MB is refused (distributor to ingester gRPC)
    rate_bytes_s: float | None = None  # None: 80 % of what the server says, else DEFAULT_RATE
    concurrency: int = 1  # lanes posting at once; a stream always goes through one lane


@dataclass(frozen=True)
class LokiInfo:
    ready: bool
    version: str | None
    reject_old: bool | None
    max_age_ms: int | None
    rate_bytes_s: float | None
    structured_metadata: bool | None
    # limits_config.unordered_writes (Loki >= 2.4 defaults to true): a stream's entries
    # may arrive out of order, up to max_behind_ms behind its newest. None: not readable
    unordered_writes: bool | None = None
    # how far behind its stream's newest entry an entry may arrive (half the ingester's
    # max_chunk_age; 1 h by default); None: config not readable
    max_behind_ms: int | None = None


def _config_value(yaml: str, key: str, section: str | None = None) -> str | None:
    """``key``'s value in Loki's /config (the first one, or the one in the top-level
    ``section``: some keys, max_chunk_age among them, occur in several)."""
    if section is not None:
        m = re.search(rf"^{section}:[ \t]*\n((?:[ \t].*\n?|\n)*)", yaml, re.M)
        yaml = m.group(1) if m else ""
    m = re.search(rf"^\s*{key}:\s*(\S+)\s*$", yaml, re.M)
    return m.group(1).strip("\"'") if m else None


def preflight(transport: HttpTransport) -> LokiInfo:
    try:
        ready = transport.get("ready")
    except (AuthError, TlsError):
        raise  # reached, but refused: its own message says the fix
    except TransportError as exc:
        raise TransportError(f"cannot reach Loki at {transport.target.url} ({exc}); start it, "
                             "point --loki-url / LOKI_URL at it, or leave logs out with "
                             "--signals metrics,traces") from None
    build = transport.get("loki/api/v1/status/buildinfo")
    version = None
    if build.status == 200:
        import json

        try:
            version = json.loads(build.body).get("version") or "unknown (dev build)"
        except ValueError:
            version = None
    config = transport.get("config")
    yaml = config.body if config.status == 200 else ""
    reject = _config_value(yaml, "reject_old_samples")
    age = _config_value(yaml, "reject_old_samples_max_age")
    rate = _config_value(yaml, "ingestion_rate_mb")
    sm = _config_value(yaml, "allow_structured_metadata")
    unordered = _config_value(yaml, "unordered_writes")
    chunk_age = _config_value(yaml, "max_chunk_age", section="ingester")
    try:
        behind = parse_prom_duration(chunk_age) // 2 if chunk_age else None
    except ValueError:  # a form we do not read: entries then go in time order
        behind = None
    return LokiInfo(
        ready=ready.status == 200, version=version,
        reject_old=None if reject is None else reject == "true",
        max_age_ms=parse_prom_duration(age) if age else None,
        rate_bytes_s=float(rate) * 1024 * 1024 if rate else None,
        structured_metadata=None if sm is None else sm == "true",
        unordered_writes=None if unordered is None else unordered == "true",
        max_behind_ms=behind,
    )


def check(info: LokiInfo, url: str, start_ns: int, now_ns: int, uses_metadata: bool) -> None:
    if not info.ready:
        raise PreflightError(f"Loki at {url} is not ready (GET /ready); wait for it and retry")
    if info.reject_old and info.max_age_ms and start_ns < now_ns - info.max_age_ms * 1_000_000:
        raise PreflightError(
            f"Loki at {url} rejects entries older than reject_old_samples_max_age "
            f"({info.max_age_ms // 3_600_000} h) and this window starts before that.\n"
            "  fix: limits_config: {reject_old_samples_max_age: 30d} in Loki's config, or a "
            "later --end")
    if uses_metadata and info.structured_metadata is False:
        raise PreflightError(
            f"Loki at {url} does not accept structured metadata (trace_id, span_id).\n"
            "  fix: limits_config: {allow_structured_metadata: true} (schema v13, tsdb store)")


_IGNORED = re.compile(r"total ignored: (\d+) out of (\d+)")


def rejection(resp: Response, entries: int) -> tuple[int, str]:
    """How many entries a 400 refused, and why (Loki wrote the others)."""
    body = resp.body
    ignored = [int(n) for n, _ in _IGNORED.findall(body)]
    if "entry too far behind" in body:
        reason = "entry too far behind (over max_chunk_age/2 behind the stream's newest entry)"
    elif "timestamp too old" in body:
        reason = "timestamp too old (reject_old_samples_max_age)"
    else:
        first = body.strip().splitlines()[0] if body.strip() else "(empty body)"
        reason = first[:200]
    if ignored:
        return min(sum(ignored), entries), f"HTTP {resp.status}: {reason}"
    too_old = body.count("has timestamp too old")
    if too_old:
        return min(too_old, entries), f"HTTP {resp.status}: {reason}"
    return entries, f"HTTP {resp.status}: {reason}"


CHUNK_ENTRIES = 20_000  # entries of a stream read at once by an encoder
FIRST_CHUNK_ENTRIES = 2_500  # its first chunk: growing 4x a chunk up to CHUNK_ENTRIES

Item = tuple[EntryBatch, StreamEncoder]  # a batch and the encoder holding its entries


class LokiPusher:
    def __init__(self, transport: HttpTransport, streams: Sequence[LogStream],
                 options: LokiOptions, report: SignalReport, pacer: Pacer) -> None:
        self.transport, self.streams, self.options = transport, streams, options
        self.report, self.pacer = report, pacer

    def batches(self, si: int, lo: int = 0, hi: int | None = None) -> Iterator[Item]:
        """Stream ``si``'s batches of its entries ``lo:hi`` (all by default), read a chunk
        of entries at a time: memory holds one chunk, and the first chunk is small
        (:data:`FIRST_CHUNK_ENTRIES`, four times more each time up to
        :data:`CHUNK_ENTRIES`), so the first request goes out after reading about what
        it holds."""
        stream = self.streams[si]
        hi = len(stream) if hi is None else hi
        top = max(CHUNK_ENTRIES, self.options.max_entries)
        size = min(top, FIRST_CHUNK_ENTRIES)
        while lo < hi:
            enc = StreamEncoder(stream, lo, min(hi, lo + size))
            for b in plan_range(si, enc.costs, lo, self.options.max_entries,
                                self.options.max_bytes):
                yield b, enc
            lo, size = lo + size, min(top, size * 4)

    def body(self, item: Item) -> tuple[bytes, dict[str, str]]:
        b, enc = item
        if self.options.format == "json":
            return json_request(self.streams[b.stream], b.lo, b.hi), JSON_HEADERS
        return compress(enc.request(b.lo, b.hi)), PROTO_HEADERS

    def send(self, item: Item, encoded: tuple[bytes, dict[str, str]] | None = None) -> None:
        b, enc = item
        self.pacer.take(int(enc.costs[b.lo - enc.lo:b.hi - enc.lo].sum()))
        body, headers = encoded or self.body(item)
        resp, retries = self.transport.post(PUSH_PATH, body, headers)
        self.report.count_request(retries)
        if 200 <= resp.status < 300:
            self.report.add(accepted=b.entries)
        elif resp.status == 413 and b.entries > 1:
            mid = (b.lo + b.hi) // 2
            self.send((EntryBatch(b.stream, b.lo, mid), enc))
            self.send((EntryBatch(b.stream, mid, b.hi), enc))
        elif resp.status == 400:
            refused, reason = rejection(resp, b.entries)
            self.report.add(accepted=b.entries - refused, rejected=refused, reason=reason)
        else:
            text = resp.body.strip().splitlines()[0][:200] if resp.body.strip() else ""
            self.report.add(rejected=b.entries,
                            reason=f"HTTP {resp.status}: {text} (gave up after retries)")


def lane_order(per_stream: Sequence[Iterator[Item]], streams: Sequence[LogStream],
               lanes: int, spread: bool,
               then: Sequence[Iterator[Item]] = ()) -> Iterator[tuple[int, Item]]:
    """(lane, item) for ``lanes`` lanes, the streams' batches merged in time order so
    every lane has work from the start; each lane's batches stay in time order. The
    batches are taken from ``per_stream`` as they are sent; ``then`` (with ``spread``
    only): more batches of the streams, merged in time order the same way, sent after
    those of ``per_stream``.

    ``spread``: the batches go to the lanes in turn, a stream's too. Loki takes a stream's
    entries out of order up to half its max_chunk_age (1 h by default) behind its newest
    (unordered_writes), and the lanes
    stay within a few requests of one another (the encoder feeds them in turn, two queued
    at most), so a stream needs no lane of its own; an incident has only a few streams,
    one of them most of the lines. Else each stream keeps to one lane, so its entries
    arrive in order: the streams spread so the lanes carry about the same line bytes."""
    def at(item: Item) -> int:
        return int(streams[item[0].stream].t_ns[item[0].lo])

    # ties: the earlier stream first
    merged: Iterator[Item] = heapq.merge(*per_stream, key=at)
    if then:
        if not spread:
            raise ValueError("batches sent out of a stream's time order need spread lanes")
        merged = itertools.chain(merged, heapq.merge(*then, key=at))
    if lanes == 1:
        return ((0, item) for item in merged)
    if spread:
        return ((i % lanes, item) for i, item in enumerate(merged))
    weight = [sum(map(len, s.lines)) for s in streams]
    lane_of = [0] * len(streams)
    load = [0] * lanes
    for si in sorted(range(len(streams)), key=lambda i: -weight[i]):
        lane = min(range(lanes), key=load.__getitem__)
        lane_of[si] = lane
        load[lane] += weight[si]
    return ((lane_of[item[0].stream], item) for item in merged)


def onset_first(streams: Sequence[LogStream], info: LokiInfo,
                first_ns: int | None) -> list[int] | None:
    """Where each stream's entries from ``first_ns`` on begin, when the server takes them
    first and the ones before them after: it takes a stream's entries out of order
    (unordered_writes) up to ``max_behind_ms`` behind its newest, and each stream spans
    less than that. None otherwise (``first_ns`` None, the server's config unread or
    not allowing it): every stream then goes in time order."""
    if first_ns is None or info.unordered_writes is not True or info.max_behind_ms is None:
        return None
    limit = info.max_behind_ms * 1_000_000
    if any(len(s) and int(s.t_ns[-1]) - int(s.t_ns[0]) >= limit for s in streams):
        return None
    return [int(np.searchsorted(s.t_ns, first_ns, side="left")) for s in streams]


def push_logs(transport: HttpTransport, streams: Sequence[LogStream], options: LokiOptions,
              info: LokiInfo, report: SignalReport, pacer: Pacer | None = None,
              progress: Callable[[SignalReport], None] | None = None,
              first_ns: int | None = None) -> None:
    """Push ``streams``, each stream's entries in time order; with ``first_ns``, the
    entries from then on go first when the server allows it (see ``onset_first``), so
    the incident is in Loki before the calm start of the window."""
    rate = options.rate_bytes_s
    if rate is None:
        rate = 0.8 * info.rate_bytes_s if info.rate_bytes_s else DEFAULT_RATE
    pacer = pacer or Pacer(rate)
    report.sent += sum(len(s) for s in streams)
    pusher = LokiPusher(transport, streams, options, report, pacer)
    lanes = max(1, options.concurrency)
    spread = info.unordered_writes is not False
    cut = onset_first(streams, info, first_ns)
    if cut is None:
        order = lane_order([pusher.batches(si) for si in range(len(streams))], streams,
                           lanes, spread)
    else:
        order = lane_order([pusher.batches(si, at) for si, at in enumerate(cut)], streams,
                           lanes, spread, then=[pusher.batches(si, 0, at)
                                                for si, at in enumerate(cut)])
    send_lanes(order, lanes, pusher.body,
               lambda item, body: pusher.send(item, body),
               progress and (lambda: progress(report)),
               on_interrupt=transport.cancel, halted=transport.cancelled)
    if pacer.waited > 1:
        report.notes.append(f"paced under the ingestion limit ({rate / 1048576:.1f} MB/s): "
                            f"waited {pacer.waited:.1f} s")
