"""Load metrics into Prometheus (or any remote-write 1.0 receiver): preflight, push, isolate.

Prometheus 2.42 writes a request in one transaction: the first bad sample rolls back the
whole request (400 for out-of-bounds/out-of-order, 500 for "too old sample"). So a
rejected request is split until the bad part is alone, everything else is written, and
the bad part is reported with the server's reason.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from generator.model import Exemplars, Incident, Series, frozen_array

from .errors import AuthError, PreflightError, TlsError, TransportError
from .pipeline import send_lanes
from .remote_write.encode import (
    HEADERS,
    Piece,
    SeriesEncoder,
    compress,
    iter_pieces,
    metadata_request,
)
from .report import SignalReport, group_reason
from .timeshift import iso
from .transport import HttpTransport, Pacer, Response

WRITE_PATH = "api/v1/write"
HEAD_WINDOW_MS = 3_600_000  # chunkRange/2 of the default 2 h block: how far back 2.42 accepts
CLIP_MARGIN_MS = 120_000  # the head keeps moving while we load
# rejections that hold for every sample older than some time: a piece is bisected in time
# (Prometheus 2.42's phrases, and Mimir's documented error IDs)
_MONOTONE = ("too old sample", "out of bounds", "out of order sample",
             "err-mimir-sample-timestamp-too-old", "err-mimir-sample-out-of-order",
             "err-mimir-too-far-in-past")
MAX_SPLIT_DEPTH = 6
PACE = 0.95  # of a receiver's ingestion rate and burst: its bucket and ours drift apart
# Mimir's refusals by one tenant-wide time: every sample older than the head's newest
# minus the out-of-order window (or than now minus past_grace_period) is refused, across
# all series, and Mimir stores the rest of the request
_TIME_CUTOFF = ("err-mimir-sample-timestamp-too-old", "err-mimir-too-far-in-past")


@dataclass(frozen=True)
class ServerInfo:
    version: str | None
    receiver: bool | None  # remote-write receiver on? None: could not tell (not Prometheus)
    exemplar_storage: bool | None
    ooo_window_ms: int | None
    head_max_ms: int | None
    head_window_ms: int = HEAD_WINDOW_MS  # half the minimum block duration
    # storage.exemplars.max_exemplars: a ring of this many, over all series (None: unknown)
    max_exemplars: int | None = None
    application: str | None = None  # buildinfo's "application" (Mimir names itself)
    # Mimir: the tenant's limits from /api/v1/user_limits (None: not readable)
    tenant_limits: dict | None = None

    @property
    def mimir(self) -> bool:
        return bool(self.application and "Mimir" in self.application)

    @property
    def exemplars_off_reason(self) -> str:
        if self.mimir:
            return ("Mimir keeps no exemplars for this tenant "
                    "(limits.max_global_exemplars_per_user is 0, Mimir's default)")
        return "server has exemplar storage off (--enable-feature=exemplar-storage)"

    @property
    def stores_out_of_order(self) -> bool:
        """Whether a newer sample may go before an older one (a window, or Mimir)."""
        return bool(self.ooo_window_ms) or self.mimir

    @property
    def ingestion(self) -> tuple[float, float] | None:
        """Mimir: the tenant's ingestion rate (samples and exemplars a second) and its
        burst, where its limits were read; a request over the burst is never taken."""
        limits = self.tenant_limits or {}
        rate = limits.get("ingestion_rate")
        if not self.mimir or not isinstance(rate, (int, float)) or rate <= 0:
            return None
        factor = limits.get("ingestion_burst_factor") or 0
        burst = (rate * factor if isinstance(factor, (int, float)) and factor > 0
                 else limits.get("ingestion_burst_size"))
        return float(rate), float(burst if isinstance(burst, (int, float)) and burst > 0
                                  else rate)

    def accepts_from_ms(self, end_ms: int) -> int:
        head = max(self.head_max_ms or 0, end_ms)
        return head - max(self.head_window_ms, self.ooo_window_ms or 0)


@dataclass(frozen=True)
class PushOptions:
    max_samples: int = 20000  # bigger requests: fewer round trips, more samples/s
    concurrency: int = 4
    clip: bool = False
    send_exemplars: bool = True
    # where remote-write requests go: below --prometheus-url by default; a full URL for
    # receivers whose write path differs (Mimir: http://mimir:8080/api/v1/push)
    write_url: str = WRITE_PATH


_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 604_800_000, "y": 31_536_000_000}


def parse_prom_duration(text: str) -> int:
    """Milliseconds of a Prometheus duration such as ``2h30m`` (``0s`` -> 0)."""
    text = text.strip().strip('"')
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_MS[u] for n, u in parts)


def _json_data(resp: Response) -> object | None:
    if resp.status != 200:
        return None
    try:
        return json.loads(resp.body).get("data")
    except (ValueError, AttributeError):
        return None


def preflight(transport: HttpTransport) -> ServerInfo:
    """Ask the server what it accepts. Unreachable servers raise :class:`TransportError`."""
    try:
        build = _json_data(transport.get("api/v1/status/buildinfo"))
    except (AuthError, TlsError):
        raise  # reached, but refused: its own message says the fix
    except TransportError as exc:
        raise TransportError(f"cannot reach Prometheus at {transport.target.url} ({exc}); start "
                             "it (`replayer stack up` starts a local one), or point "
                             "--prometheus-url / PROMETHEUS_URL at it") from None
    flags = _json_data(transport.get("api/v1/status/flags"))
    config = _json_data(transport.get("api/v1/status/config"))
    tsdb = _json_data(transport.get("api/v1/status/tsdb"))
    version = build.get("version") if isinstance(build, dict) else None
    receiver = exemplars = None
    head_window = HEAD_WINDOW_MS
    if isinstance(flags, dict):
        block = flags.get("storage.tsdb.min-block-duration")
        head_window = parse_prom_duration(block) // 2 if block else HEAD_WINDOW_MS
        features = flags.get("enable-feature", "")
        receiver = (flags.get("web.enable-remote-write-receiver") == "true"
                    or "remote-write-receiver" in features)
        exemplars = "exemplar-storage" in features
    ooo = max_exemplars = None
    if isinstance(config, dict):
        m = re.search(r"^\s*out_of_order_time_window:\s*(\S+)\s*$", config.get("yaml", ""), re.M)
        ooo = parse_prom_duration(m.group(1)) if m else 0
        m = re.search(r"^\s*max_exemplars:\s*(\d+)\s*$", config.get("yaml", ""), re.M)
        max_exemplars = int(m.group(1)) if m else None
    head = None
    if isinstance(tsdb, dict):
        max_t = (tsdb.get("headStats") or {}).get("maxTime")
        # an empty head reports math.MinInt64
        head = int(max_t) if isinstance(max_t, int) and max_t > 0 else None
    application = build.get("application") if isinstance(build, dict) else None
    limits = None
    if application and "Mimir" in application:
        # Mimir 3.x: no flags, config or tsdb status; the tenant's limits are at the root
        # (/api/v1/user_limits, registered when runtime_config is set), a 401 without
        # a tenant
        receiver = True
        limits = _json_body(transport.get(_root(transport.target.url) + "/api/v1/user_limits"))
        ooo = mimir_window(transport, transport.target.tenant)
        if isinstance(limits, dict) and "max_global_exemplars_per_user" in limits:
            max_exemplars = int(limits["max_global_exemplars_per_user"])
            exemplars = max_exemplars > 0
            max_exemplars = max_exemplars or None
    return ServerInfo(version, receiver, exemplars, ooo, head, head_window, max_exemplars,
                      application, limits if isinstance(limits, dict) else None)


def mimir_window(transport: HttpTransport, tenant: str | None) -> int | None:
    """The tenant's out_of_order_time_window in ms, from Mimir's admin endpoints: the
    limits in ``/config?mode=diff`` (absent there: the default, 0) and the tenant's entry
    in ``/runtime_config``. None where they cannot be read (a gateway that keeps admin
    pages to itself): Mimir shows no tenant its own window."""
    import yaml

    root = _root(transport.target.url)
    try:
        cfg, rt = transport.get(root + "/config?mode=diff"), transport.get(
            root + "/runtime_config")
    except (AuthError, TransportError):
        return None
    if cfg.status != 200:
        return None
    try:
        limits = (yaml.safe_load(cfg.body) or {}).get("limits") or {}
        window = str(limits.get("out_of_order_time_window", "0s"))
        if rt.status == 200 and tenant:
            own = ((yaml.safe_load(rt.body) or {}).get("overrides") or {}).get(tenant) or {}
            window = str(own.get("out_of_order_time_window", window))
        return parse_prom_duration(window)
    except (yaml.YAMLError, AttributeError, ValueError):
        return None


def _root(url: str) -> str:
    """Mimir's root below its Prometheus API prefix (``http://m:9009/prometheus``)."""
    url = url.rstrip("/")
    return url[: -len("/prometheus")] if url.endswith("/prometheus") else url


def _json_body(resp: Response) -> object | None:
    if resp.status != 200:
        return None
    try:
        return json.loads(resp.body)
    except ValueError:
        return None


def check_server(info: ServerInfo, url: str, send_exemplars: bool) -> list[str]:
    """Stop on what cannot work; return notes on what will be degraded."""
    if info.receiver is False:
        raise PreflightError(
            f"Prometheus at {url} does not accept remote write (version {info.version}).\n"
            "  fix: start it with --web.enable-remote-write-receiver "
            "(and --enable-feature=exemplar-storage for exemplars)")
    notes = []
    if info.mimir:
        rate = info.ingestion
        limits = ("its tenant's limits read" + (
            f" (ingestion_rate {rate[0]:,.0f}/s, burst {rate[1]:,.0f}: paced under them)"
            if rate else "")) if info.tenant_limits is not None else (
            "its tenant's limits not readable (/api/v1/user_limits answers only where "
            "runtime_config is set)")
        window = (f"out-of-order window {info.ooo_window_ms // 60_000} min (from its "
                  "/config and /runtime_config)" if info.ooo_window_ms is not None else
                  "its out-of-order window not readable (Mimir shows a tenant none; "
                  "/config and /runtime_config are admin pages), so the window is not "
                  "checked before sending: pass --verify to count back what it stored")
        notes.append(f"{info.application} {info.version}: {limits}; {window}")
        if send_exemplars and info.exemplar_storage is False:
            notes.append("Mimir keeps no exemplars for this tenant (its default): set "
                         "max_global_exemplars_per_user in Mimir's runtime config, e.g.\n"
                         "    overrides:\n      <tenant>:\n"
                         "        max_global_exemplars_per_user: 100000\n"
                         "  or pass --no-exemplars")
        return notes
    if info.receiver is None:
        notes.append("the server did not describe itself (not Prometheus?); limits unchecked")
    if send_exemplars and info.exemplar_storage is False:
        notes.append("exemplar storage is off: the server drops exemplars silently; start it "
                     "with --enable-feature=exemplar-storage, or pass --no-exemplars")
    return notes


def _iso_ms(ms: int) -> str:
    return iso(ms * 1_000_000)


def window_fix(info: ServerInfo, start_ms: int, end_ms: int) -> str:
    """The refusal of a window reaching further back than the server takes, with the
    out-of-order window that takes it: measured from the server's newest sample (its own
    scrapes, or an earlier replay), not this load's end, or the advice is too short."""
    head = max(info.head_max_ms or 0, end_ms)
    need_min = -(-(head - start_ms) // 60_000) + 10
    if info.mimir:
        return (f"Mimir takes this tenant's samples only from "
                f"{_iso_ms(info.accepts_from_ms(end_ms))} on (its out-of-order window is "
                f"{(info.ooo_window_ms or 0) // 60_000} min, behind the load's newest sample "
                f"{_iso_ms(head)}), but this window starts at {_iso_ms(start_ms)}.\n"
                "  fix: a longer window for the tenant in Mimir's runtime config (re-read "
                "while it runs):\n    overrides:\n      <tenant>:\n"
                f"        out_of_order_time_window: {need_min}m\n"
                "  or: --clip to load only the part it accepts, or a shorter --duration")
    return (f"Prometheus accepts samples only from {_iso_ms(info.accepts_from_ms(end_ms))} on "
            f"(about {max(info.head_window_ms, info.ooo_window_ms or 0) // 60_000} min behind its "
            f"newest sample, {_iso_ms(head)}), but this window starts at {_iso_ms(start_ms)}.\n"
            "  fix: allow backfill in prometheus.yml and restart Prometheus:\n"
            "    storage:\n      tsdb:\n"
            f"        out_of_order_time_window: {need_min}m\n"
            "  or: --clip to load only the part it accepts, or a shorter --duration")


def clip_series(series: Sequence[Series], from_ms: int) -> tuple[tuple[Series, ...], int]:
    """Drop samples (and exemplars) older than ``from_ms``; return them and how many went."""
    out, dropped = [], 0
    for s in series:
        keep = s.t_ms >= from_ms
        dropped += int((~keep).sum())
        e = s.exemplars
        ek = e.t_ms >= from_ms
        ex = Exemplars(frozen_array(e.t_ms[ek], np.int64), frozen_array(e.value[ek], np.float64),
                       frozen_array(e.trace_id[ek], np.uint8),
                       frozen_array(e.span_id[ek], np.uint8))
        if keep.any():
            out.append(Series(s.labels, frozen_array(s.t_ms[keep], np.int64),
                              frozen_array(s.values[keep], np.float64), ex))
    return tuple(out), dropped


def _reason(resp: Response) -> str:
    text = resp.body.strip().splitlines()[0] if resp.body.strip() else ""
    return f"HTTP {resp.status}: {text}" if resp.status else text


def _final(resp: Response) -> bool:
    """An answer that will never succeed as it is: 2.42's 500 for a too-old sample or
    invalid labels; Mimir's 429 for a request larger than the tenant's burst."""
    body = resp.body.lower()
    return (resp.status == 500 and ("too old sample" in body or "label" in body
                                    or "native histograms are disabled" in body)) \
        or _over_burst(resp)


def _over_burst(resp: Response) -> bool:
    """Mimir's refusal of a request bigger than the tenant's ingestion burst: retrying
    cannot help (tests/data/mimir-3.0.2.json), a smaller request can."""
    return resp.status == 429 and "burst size limit" in resp.body


# words of answers about particular samples or series: those can succeed in part, so a
# request refused for them is split until the refused part is alone
_PER_ITEM = ("sample", "series", "label", "bounds", "timestamp", "exemplar", "{", "metadata",
             "histogram")


def _blanket(whole: Response, halves: Sequence[Response]) -> bool:
    reason = _reason(whole)
    return (all(not 200 <= h.status < 300 and _reason(h) == reason for h in halves)
            and not any(w in whole.body.lower() for w in _PER_ITEM))


class Pusher:
    """Sends pieces of series; splits rejected requests until the bad part is alone."""

    def __init__(self, transport: HttpTransport, series: Sequence[Series], report: SignalReport,
                 ooo_allowed: bool, exemplars_kept: bool, write_url: str = WRITE_PATH,
                 partial: bool = False, pacer: Pacer | None = None) -> None:
        self.transport = transport
        self.write_url = write_url
        self.encoder = SeriesEncoder(series)
        self.report = report
        self.ooo_allowed = ooo_allowed
        self.exemplars_kept = exemplars_kept
        # the receiver stores what it can of a refused request (Mimir), so a refusal by a
        # time cutoff is located with one-sample probes instead of re-sending halves
        self.partial = partial
        self.pacer = pacer  # under the tenant's ingestion rate (Mimir), where it is known

    def encode(self, pieces: Sequence[Piece]) -> bytes:
        return compress(self.encoder.write_request(pieces))

    def _post(self, pieces: Sequence[Piece], body: bytes | None = None) -> Response:
        body = body if body is not None else self.encode(pieces)
        if self.pacer is not None:
            self.pacer.take(sum(p.samples + p.exemplars for p in pieces))
        resp, retries = self.transport.post(self.write_url, body, HEADERS, final=_final)
        self.report.count_request(retries)
        return resp

    def send(self, pieces: Sequence[Piece], depth: int = 0, body: bytes | None = None) -> None:
        """Post ``pieces`` (``body``: already encoded); split and retry parts on rejection."""
        resp = self._post(pieces, body)
        if 200 <= resp.status < 300:
            self.report.add(accepted=sum(p.samples for p in pieces),
                            exemplars=sum(p.exemplars for p in pieces),
                            exemplars_ok=self.exemplars_kept)
            return
        if _over_burst(resp) and self._smaller(pieces, depth):
            return
        isolatable = resp.status in (400, 500) and (resp.status == 400 or _final(resp))
        if not isolatable:
            self._reject(pieces, f"{_reason(resp)} (gave up after retries)")
            return
        if self._by_cutoff(pieces, resp, depth):
            return
        if len(pieces) > 1:
            mid = len(pieces) // 2
            halves = (pieces[:mid], pieces[mid:])
            answers = [self._post(h) for h in halves]
            if _blanket(resp, answers):
                # both halves refused exactly as the whole, for a reason that names no
                # sample or series: the server refuses every request alike, and splitting
                # down to single pieces would only multiply the requests (74x seen)
                self._reject(pieces, f"{_reason(resp)} (every request refused alike: "
                                     "not split further)")
                return
            for half, answer in zip(halves, answers):
                self._answered(half, answer, depth)
            return
        self._split_piece(pieces[0], resp, depth)

    def _answered(self, pieces: Sequence[Piece], resp: Response, depth: int) -> None:
        """Account ``pieces`` that were posted and answered ``resp``; split on rejection."""
        if 200 <= resp.status < 300:
            self.report.add(accepted=sum(p.samples for p in pieces),
                            exemplars=sum(p.exemplars for p in pieces),
                            exemplars_ok=self.exemplars_kept)
            return
        if _over_burst(resp) and self._smaller(pieces, depth):
            return
        if not (resp.status == 400 or _final(resp)):
            self._reject(pieces, f"{_reason(resp)} (gave up after retries)")
            return
        if self._by_cutoff(pieces, resp, depth):
            return
        if len(pieces) > 1:
            mid = len(pieces) // 2
            self.send(pieces[:mid], depth)
            self.send(pieces[mid:], depth)
            return
        self._split_piece(pieces[0], resp, depth)

    def _smaller(self, pieces: Sequence[Piece], depth: int) -> bool:
        """Send ``pieces`` again in two halves: the request was bigger than the receiver
        takes at once (its limits were not readable, so requests were not sized under
        them). False when there is nothing left to halve."""
        if len(pieces) > 1:
            halves = [pieces[:len(pieces) // 2], pieces[len(pieces) // 2:]]
        elif pieces[0].samples > 1:
            halves = [[h] for h in self._halves(pieces[0])]
        else:
            return False
        for half in halves:
            self.send(half, depth + 1)
        return True

    def _by_cutoff(self, pieces: Sequence[Piece], resp: Response, depth: int) -> bool:
        """Account a request Mimir refused in part by a tenant-wide time cutoff, without
        sending its refused samples again: each re-send of a too-old sample raises Mimir's
        own ``cortex_discarded_samples_total`` once more (halving re-sent them at every
        level: 408,000 discards counted for 44,880 samples refused).

        The cutoff is found by bisecting the request's distinct timestamps with probes of
        one sample each (no exemplars), so at most one refused sample per probe is sent
        again. What is older is refused; the rest, which Mimir stored with the first post,
        is posted once more to confirm it (duplicates to Mimir: nothing is discarded, and a
        refusal there for any other reason is isolated as usual). False: not this case.
        The search assumes the tenant's newest sample does not move while it runs."""
        if not (self.partial and resp.status == 400 and depth < 64
                and any(c in resp.body for c in _TIME_CUTOFF)):
            return False
        series = self.encoder.series
        stamps = np.unique(np.concatenate([series[p.series].t_ms[p.lo:p.hi] for p in pieces]))
        refused, taken = -1, len(stamps)  # stamps[:refused+1] refused, stamps[taken:] stored
        while taken - refused > 1:
            mid = (refused + taken) // 2
            r = self._post([self._probe(pieces, int(stamps[mid]))])
            if 200 <= r.status < 300:
                taken = mid
            elif r.status == 400 and any(c in r.body for c in _TIME_CUTOFF):
                refused = mid
            else:  # refused for something else: isolate by halving after all
                return False
        cutoff = int(stamps[taken]) if taken < len(stamps) else None
        older, newer = [], []
        for p in pieces:
            o, n = self._cut(p, cutoff)
            older += [o] if o.samples else []
            newer += [n] if n.samples else []
        if older:
            # Mimir keeps the exemplars of samples it refuses as too old (all 2,520 of a
            # load half beyond the window were stored, 3.0.2): they count as kept
            self.report.add(rejected=sum(p.samples for p in older), reason=_reason(resp),
                            exemplars=sum(p.exemplars for p in older),
                            exemplars_ok=self.exemplars_kept)
        if newer:
            self.send(newer, depth + 1)
        return True

    def _probe(self, pieces: Sequence[Piece], t_ms: int) -> Piece:
        """One sample at ``t_ms`` from ``pieces``, without its exemplars."""
        for p in pieces:
            t = self.encoder.series[p.series].t_ms
            i = p.lo + int(np.searchsorted(t[p.lo:p.hi], t_ms, "left"))
            if i < p.hi and t[i] == t_ms:
                return Piece(p.series, i, i + 1, p.ex_lo, p.ex_lo)
        raise AssertionError(f"no sample at {t_ms} in the request")  # stamps come from them

    def _cut(self, p: Piece, cutoff: int | None) -> tuple[Piece, Piece]:
        """``p`` split into its samples before ``cutoff`` and from it on."""
        s = self.encoder.series[p.series]
        if cutoff is None:
            return p, Piece(p.series, p.hi, p.hi, p.ex_hi, p.ex_hi)
        mid = p.lo + int(np.searchsorted(s.t_ms[p.lo:p.hi], cutoff, "left"))
        ex_mid = p.ex_lo + int(np.searchsorted(s.exemplars.t_ms[p.ex_lo:p.ex_hi], cutoff, "left"))
        return (Piece(p.series, p.lo, mid, p.ex_lo, ex_mid),
                Piece(p.series, mid, p.hi, ex_mid, p.ex_hi))

    def _split_piece(self, p: Piece, resp: Response, depth: int) -> None:
        reason = _reason(resp)
        monotone = any(m in resp.body for m in _MONOTONE)
        # With an out-of-order window the search is binary (two requests a level), so it can
        # go down to a single sample; without one, both halves are tried in time order and
        # the depth is capped to bound the requests.
        limit = 64 if self.ooo_allowed else MAX_SPLIT_DEPTH
        if not monotone or p.samples < 2 or depth >= limit:
            self._reject([p], reason)
            return
        older, newer = self._halves(p)
        if self.ooo_allowed:
            # Writing out of order is allowed: try the newer half; if even that is too old,
            # the older half is too (the reasons are monotone in time).
            r = self._post([newer])
            if 200 <= r.status < 300:
                self.report.add(accepted=newer.samples, exemplars=newer.exemplars,
                                exemplars_ok=self.exemplars_kept)
                self.send([older], depth + 1)
            else:
                self._reject([older], reason)
                self._split_piece(newer, r, depth + 1)
            return
        self.send([older], depth + 1)  # keep per-series time order
        self.send([newer], depth + 1)

    def _halves(self, p: Piece) -> tuple[Piece, Piece]:
        """``p`` cut at its middle sample (a series' times are distinct)."""
        return self._cut(p, int(self.encoder.series[p.series].t_ms[(p.lo + p.hi) // 2]))

    def _reject(self, pieces: Sequence[Piece], reason: str) -> None:
        self.report.add(rejected=sum(p.samples for p in pieces), reason=reason)
        lost = sum(p.exemplars for p in pieces)
        if lost:
            with self.report._lock:
                key = group_reason(reason)[0]
                self.report.exemplars_dropped[f"with their samples: {key}"] += lost


def lane_batches(pieces: Iterable[Piece], lanes: int,
                 max_samples: int) -> Iterator[tuple[int, list[Piece]]]:
    """(lane, batch) as each batch fills, then the partly filled ones: a series always
    stays in one lane, so its pieces go in order. Lazy, so sending starts at once."""
    filling: list[list[Piece]] = [[] for _ in range(lanes)]
    fill = [0] * lanes
    for p in pieces:
        lane = p.series % lanes
        if filling[lane] and fill[lane] + p.samples > max_samples:
            yield lane, filling[lane]
            filling[lane], fill[lane] = [], 0
        filling[lane].append(p)
        fill[lane] += p.samples
    for lane, batch in enumerate(filling):
        if batch:
            yield lane, batch


def check_window(series: Sequence[Series], info: ServerInfo, options: PushOptions,
                 report: SignalReport, start_ms: int, newest_ms: int) -> tuple[Series, ...]:
    """Stop (or, with --clip, cut) when the window reaches further back than the server
    takes samples, counted from the newest sample this load will write."""
    accept_from = info.accepts_from_ms(newest_ms)
    if info.receiver is None or (info.mimir and info.ooo_window_ms is None) \
            or start_ms >= accept_from:
        return tuple(series)  # nothing known to check against, or it fits
    if not options.clip:
        raise PreflightError(window_fix(info, start_ms, newest_ms))
    kept, clipped = clip_series(series, accept_from + CLIP_MARGIN_MS)
    report.clipped += clipped
    report.notes.append(f"--clip: left out {clipped} samples older than what the server accepts")
    if not any(len(s) for s in kept):
        # nothing left to load is a loss, not a success: exit 1 with the fix
        report.failed = ("--clip left out every sample: the whole window is older than the "
                         "server accepts.\n" + window_fix(info, start_ms, newest_ms))
        report.failure_code = 1
    return kept


def send_metadata(transport: HttpTransport, incident: Incident, report: SignalReport,
                  write_url: str = WRITE_PATH) -> None:
    meta, retries = transport.post(write_url, compress(metadata_request(incident.families)),
                                   HEADERS)
    report.count_request(retries)  # a request like the others, and its retries with them
    if not 200 <= meta.status < 300:
        report.notes.append(f"metadata not accepted: {_reason(meta)}")


def push_series(transport: HttpTransport, series: Sequence[Series], info: ServerInfo,
                options: PushOptions, report: SignalReport,
                progress: Callable[[SignalReport], None] | None = None,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> None:
    """Send ``series`` (absolute times) in parallel lanes; account for every sample."""
    if not options.send_exemplars:
        series = tuple(replace(s, exemplars=Exemplars.empty()) for s in series)
    exemplars = sum(len(s.exemplars) for s in series)
    samples = sum(len(s) for s in series)
    report.sent += samples
    before = report.exemplars_sent  # earlier copies and slices fill the same ring
    report.exemplars_sent += exemplars
    exemplars_kept = info.exemplar_storage is not False
    if not exemplars_kept and exemplars:
        report.exemplars_dropped[info.exemplars_off_reason] += exemplars
    over = (exemplar_overflow(info, before + exemplars) - exemplar_overflow(info, before)
            if exemplars_kept else 0)
    if over:
        # a ring: the server answers 204 for every one and keeps only the newest
        report.exemplars_dropped[_overflow_reason(info)] += over
    max_samples, pacer = options.max_samples, None
    if info.ingestion is not None:
        # Mimir refuses (429) what goes over the tenant's rate: pace under it, and keep
        # each request inside the burst (samples and exemplars count alike)
        rate, burst = info.ingestion
        pacer = Pacer(rate * PACE, clock=clock, sleep=sleep, burst=burst * PACE)
        max_samples = max(1, min(max_samples, int(burst * PACE / 2)))
        total = samples + exemplars
        note = (f"paced under Mimir's ingestion_rate for this tenant ({rate:,.0f} samples "
                f"and exemplars a second, burst {burst:,.0f}): at least "
                f"{(total - burst) / rate:.0f} s; raise ingestion_rate / "
                "ingestion_burst_size in Mimir's runtime config to load faster")
        if total > burst and note not in report.notes:
            report.notes.append(note)
    pusher = Pusher(transport, series, report, info.stores_out_of_order, exemplars_kept,
                    options.write_url, partial=info.mimir, pacer=pacer)
    batches = lane_batches(iter_pieces(series, max_samples), options.concurrency,
                           max_samples)

    send_lanes(batches, options.concurrency, pusher.encode, pusher.send,
               progress and (lambda: progress(report)), on_interrupt=transport.cancel,
               halted=transport.cancelled)
    if over:
        report.exemplars_accepted = max(report.exemplars_accepted - over, 0)


def exemplar_overflow(info: ServerInfo, exemplars: int) -> int:
    """How many of ``exemplars`` the server cannot keep: its exemplar storage is a ring of
    ``max_exemplars`` over every series (100,000 by default), the oldest overwritten."""
    if info.max_exemplars is None or exemplars <= info.max_exemplars:
        return 0
    return exemplars - info.max_exemplars


def _overflow_reason(info: ServerInfo) -> str:
    if info.mimir:
        return (f"Mimir keeps at most {info.max_exemplars} exemplars for this tenant "
                "(max_global_exemplars_per_user); the oldest are overwritten")
    return (f"Prometheus keeps at most {info.max_exemplars} exemplars "
            "(storage.exemplars.max_exemplars); the oldest are overwritten")


def exemplar_note(info: ServerInfo, exemplars: int, about: bool = False) -> str | None:
    """Said before sending: what cannot be kept, and the fix (``about``: ``exemplars`` is
    an estimate, the load's spans not generated yet)."""
    over = exemplar_overflow(info, exemplars)
    if not over:
        return None
    fix = (f"raise max_global_exemplars_per_user in Mimir's runtime config to {exemplars} "
           "or more" if info.mimir else
           f"raise storage.exemplars.max_exemplars in prometheus.yml to {exemplars} or more "
           "(and restart)")
    return (f"this load has {'about ' if about else ''}{exemplars} exemplars and "
            f"{'Mimir' if info.mimir else 'Prometheus'} keeps at most {info.max_exemplars}: "
            f"the oldest {over} will be overwritten.\n  fix: {fix}, or pass --no-exemplars")


# A span of a long window goes out in slices of this much time, every series' samples of
# one slice before the next: as scrapes would arrive. Sent series by series over hours
# instead, Prometheus 2.42 took part of a series' samples in order and part out of order
# (those an hour behind its newest), and lost some while it compacted its head: 3,617 of
# 1.1 M samples of 50 h in 9 spans, found by --verify, none when sliced.
SLICE_MS = 30 * 60_000


def push_metrics(transport: HttpTransport, incident: Incident, info: ServerInfo,
                 options: PushOptions, report: SignalReport, start_ms: int, end_ms: int,
                 progress: Callable[[SignalReport], None] | None = None,
                 sliced: bool = False) -> None:
    """Push ``incident``'s (already time-shifted) series: window check, metadata, samples
    (``sliced``: in time order, :data:`SLICE_MS` at a time)."""
    series = check_window(incident.series, info, options, report, start_ms, end_ms)
    if report.failed:
        return  # --clip left nothing to send
    send_metadata(transport, incident, report, options.write_url)
    if sliced:
        push_slices(transport, series, info, options, report, progress)
    else:
        push_series(transport, series, info, options, report, progress)


def push_slices(transport: HttpTransport, series: Sequence[Series], info: ServerInfo,
                options: PushOptions, report: SignalReport,
                progress: Callable[[SignalReport], None] | None = None) -> None:
    """:func:`push_series`, :data:`SLICE_MS` of every series at a time, in time order."""
    from .slicing import slice_series

    times = [s.t_ms for s in series if len(s)]
    if not times:
        return
    lo = min(int(t[0]) for t in times)
    hi = max(int(t[-1]) for t in times)
    for a in range(lo - lo % SLICE_MS, hi + 1, SLICE_MS):
        part = slice_series(series, a, a + SLICE_MS)
        if part:
            push_series(transport, part, info, options, report, progress)


def probe_series(series: Sequence[Series]) -> Series | None:
    """The series whose values tell two loads apart best (most distinct values)."""
    best, score = None, 1
    for s in series:
        n = int(np.unique(s.values).shape[0])
        if n > score:
            best, score = s, n
    return best


def _selector(s: Series) -> str:
    return label_selector(s.labels)


def label_selector(labels: Iterable[tuple[str, str]]) -> str:
    """A PromQL (and LogQL) selector matching exactly these label values."""
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(parts) + "}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def stored_samples(transport: HttpTransport, s: Series, from_ms: int,
                   to_ms: int) -> dict[int, float]:
    """Raw samples the server holds for ``s``'s label set in [from_ms, to_ms]."""
    range_s = max(1, -(-(to_ms - from_ms) // 1000))
    resp = transport.get("api/v1/query", {"query": f"{_selector(s)}[{range_s}s]",
                                          "time": f"{to_ms / 1000:.3f}"})
    data = _json_data(resp)
    if resp.status != 200 or not isinstance(data, dict):
        raise TransportError(f"query for stored samples failed: {_reason(resp)}")
    out: dict[int, float] = {}
    exact = dict(s.labels)
    for result in data.get("result", []):
        # the selector also matches series with more labels (a copy loaded with --label
        # run=a): those are another load's, not this series
        if result.get("metric", exact) != exact:
            continue
        for t, v in result.get("values", []):
            out[int(round(float(t) * 1000))] = float(v)
    return out


@dataclass(frozen=True)
class Overlap:
    """What the server already holds of this incident's probe series near the window."""

    stored: dict[int, float]
    ours: dict[int, float]

    @property
    def inside(self) -> dict[int, float]:
        lo, hi = min(self.ours), max(self.ours)
        return {t: v for t, v in self.stored.items() if lo <= t <= hi}

    @property
    def identical(self) -> bool:
        inside = self.inside
        return all(self.ours.get(t) == v for t, v in inside.items())

    @property
    def earlier_end_ms(self) -> int | None:
        return max(self.stored) if self.stored else None


def find_overlap(transport: HttpTransport, series: Sequence[Series], start_ms: int,
                 end_ms: int, duration_ms: int) -> Overlap | None:
    probe = probe_series(series)
    if probe is None:
        return None
    stored = stored_samples(transport, probe, start_ms - duration_ms, end_ms + duration_ms)
    ours = dict(zip(probe.t_ms.tolist(), probe.values.tolist()))
    overlap = Overlap(stored, ours)
    return overlap if overlap.inside else None
