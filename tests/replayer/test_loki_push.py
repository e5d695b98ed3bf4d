"""The Loki path against Loki's real captured answers."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import cramjam
import pytest
import responses

from replayer.errors import PreflightError, TransportError
from replayer.loki import push_pb2
from replayer.loki.encode import label_string
from replayer.loki.push import (
    LokiInfo,
    LokiOptions,
    Pacer,
    check,
    preflight,
    push_logs,
    rejection,
)
from replayer.report import SignalReport
from replayer.timeshift import shift
from replayer.transport import HttpTransport, Response, RetryPolicy, TargetConfig
from tests.conftest import cached_incident
from tests.replayer.captures import body_text, capture, status

URL = "http://loki.test:3100"
END_NS = 1_795_778_400_000 * 1_000_000
INFO = LokiInfo(True, "3.7.6", True, 7 * 86_400_000, 4 * 1048576, True)


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def transport(fake: FakeTime) -> HttpTransport:
    return HttpTransport(TargetConfig(URL, tenant="t1"), policy=RetryPolicy(max_attempts=4),
                         sleep=fake.sleep, clock=fake.clock, rng=random.Random(0))


def decode(request) -> push_pb2.PushRequest:  # type: ignore[no-untyped-def]
    return push_pb2.PushRequest.FromString(bytes(cramjam.snappy.decompress_raw(request.body)))


@responses.activate
def test_everything_accepted_with_the_headers_loki_needs() -> None:
    inc = shift(cached_incident("slow_query"), END_NS)
    responses.post(f"{URL}/loki/api/v1/push", status=status("loki_push_proto_ok"))
    fake = FakeTime()
    report = SignalReport("logs", "lines")
    push_logs(transport(fake), inc.log_streams, LokiOptions(rate_bytes_s=0), INFO, report)
    assert not report.lost and report.accepted == inc.log_line_count
    first = responses.calls[0].request
    assert first.headers["Content-Type"] == "application/x-protobuf"
    assert first.headers["Content-Encoding"] == "snappy"
    assert first.headers["X-Scope-OrgID"] == "t1"
    got: dict[str, list[str]] = {}
    for call in responses.calls:
        for s in decode(call.request).streams:
            got.setdefault(s.labels, []).extend(e.line for e in s.entries)
    assert got == {label_string(s.labels): list(s.lines) for s in inc.log_streams}


@responses.activate
def test_429_is_retried_honouring_retry_after() -> None:
    inc = shift(cached_incident("baseline"), END_NS)
    responses.post(f"{URL}/loki/api/v1/push", status=429, headers={"Retry-After": "2"},
                   body="ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec)")
    responses.post(f"{URL}/loki/api/v1/push", status=204)
    fake = FakeTime()
    report = SignalReport("logs", "lines")
    push_logs(transport(fake), inc.log_streams[:1], LokiOptions(max_entries=10**6,
                                                                rate_bytes_s=0), INFO, report)
    assert report.retries == 1 and 2.0 in fake.slept and not report.lost


@responses.activate
def test_partial_rejection_too_far_behind_counts_what_loki_ignored() -> None:
    inc = shift(cached_incident("baseline"), END_NS)
    stream = inc.log_streams[0]
    body = body_text("loki_push_too_far_behind").replace("total ignored: 1 out of 1",
                                                         "total ignored: 7 out of 50")
    responses.post(f"{URL}/loki/api/v1/push", status=400, body=body)
    responses.post(f"{URL}/loki/api/v1/push", status=204)
    report = SignalReport("logs", "lines")
    push_logs(transport(FakeTime()), (stream,), LokiOptions(max_entries=50, rate_bytes_s=0),
              INFO, report)
    assert report.rejected == {"HTTP 400: entry too far behind (over max_chunk_age/2 behind "
                               "the stream's newest entry)": 7}
    assert report.accepted == len(stream) - 7 and report.lost
    assert len(responses.calls) == -(-len(stream) // 50)  # nothing sent twice


@pytest.mark.parametrize("name, entries, refused, fragment", [
    ("loki_push_older_than_reject_max_age", 1, 1, "timestamp too old"),
    ("loki_push_too_far_behind", 1, 1, "entry too far behind"),
    ("loki_push_bad_label", 12, 12, "couldn't parse labels"),
    ("loki_push_no_content_type", 5, 5, "mime: no media type"),
])
def test_rejection_reasons_from_real_answers(name: str, entries: int, refused: int,
                                             fragment: str) -> None:
    n, reason = rejection(Response(status(name), body_text(name)), entries)
    assert n == refused and fragment in reason and reason.startswith("HTTP 400")


@responses.activate
def test_json_format_is_sent_as_json() -> None:
    inc = shift(cached_incident("baseline"), END_NS)
    responses.post(f"{URL}/loki/api/v1/push", status=status("loki_push_json_ok"))
    report = SignalReport("logs", "lines")
    push_logs(transport(FakeTime()), inc.log_streams[:1], LokiOptions(format="json",
                                                                      rate_bytes_s=0),
              INFO, report)
    req = responses.calls[0].request
    assert req.headers["Content-Type"] == "application/json"
    assert b'"streams"' in req.body and not report.lost


def test_pacer_keeps_under_the_rate() -> None:
    fake = FakeTime()
    pacer = Pacer(1000.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(10):
        pacer.take(500)
    assert fake.t == pytest.approx(4.0)  # 5000 bytes at 1000/s with 1000 bytes of burst


@responses.activate
def test_default_requests_are_the_best_ceilings_size_and_under_lokis_4_mb() -> None:
    """Up to 10,000 lines and 2 MB of lines and metadata a request, as Loki counts them
    (the size Loki took the most lines a second in, in the benchmark). Loki's distributor
    hands a push to its ingester in one gRPC message, refused over 4 MB: with protobuf's
    framing, error_spike's requests (stack traces in the metadata) stay under 3 MB."""
    inc = shift(cached_incident("error_spike"), END_NS)  # stack traces in its metadata
    responses.post(f"{URL}/loki/api/v1/push", status=204)
    report = SignalReport("logs", "lines")
    push_logs(transport(FakeTime()), inc.log_streams, LokiOptions(rate_bytes_s=0), INFO,
              report)
    assert not report.lost and report.accepted == inc.log_line_count
    sizes = [(sum(len(s.entries) for s in decode(c.request).streams),
              len(cramjam.snappy.decompress_raw(c.request.body))) for c in responses.calls]
    assert max(n for n, _ in sizes) == 10_000 or max(b for _, b in sizes) > 1.9 * 2**20
    assert all(n <= 10_000 and b < 3 * 2**20 for n, b in sizes), max(sizes)


@responses.activate
def test_preflight_reads_limits_from_config() -> None:
    responses.get(f"{URL}/ready", body="ready")
    responses.get(f"{URL}/loki/api/v1/status/buildinfo",
                  json=capture("loki_buildinfo")["response"]["body"])
    responses.get(f"{URL}/config", body=(
        "limits_config:\n  reject_old_samples: true\n  reject_old_samples_max_age: 1w\n"
        "  ingestion_rate_mb: 4\n  allow_structured_metadata: true\n"
        "  unordered_writes: false\n"))
    info = preflight(transport(FakeTime()))
    assert info == LokiInfo(True, "unknown (dev build)", True, 7 * 86_400_000, 4 * 1048576, True,
                            unordered_writes=False)


@responses.activate
def test_preflight_reads_how_far_behind_entries_may_arrive_from_a_real_config() -> None:
    """The /config of a real Loki 3.4.2 run with infra/loki/loki.yaml: the ingester's
    max_chunk_age is 6h (a block_builder section further on has its own, 2h)."""
    from pathlib import Path

    yaml = (Path(__file__).parents[1] / "data/loki-3.4.2-config.yaml").read_text()
    responses.get(f"{URL}/ready", body="ready")
    responses.get(f"{URL}/loki/api/v1/status/buildinfo",
                  json=capture("loki_buildinfo")["response"]["body"])
    responses.get(f"{URL}/config", body=yaml)
    info = preflight(transport(FakeTime()))
    assert info.max_behind_ms == 3 * 3_600_000 and info.unordered_writes is True
    assert info.max_age_ms == 30 * 86_400_000 and info.structured_metadata is True


def test_preflight_stops_on_old_windows_and_disabled_metadata() -> None:
    now = END_NS
    with pytest.raises(PreflightError, match="reject_old_samples_max_age"):
        check(INFO, URL, now - 8 * 86_400 * 10**9, now, True)
    no_sm = LokiInfo(True, "2.9", True, None, None, False)
    with pytest.raises(PreflightError, match="allow_structured_metadata"):
        check(no_sm, URL, now - 10**9, now, True)
    check(no_sm, URL, now - 10**9, now, False)


def test_unreachable_loki_names_the_fix() -> None:
    with pytest.raises(TransportError, match="--signals metrics,traces"):
        preflight(HttpTransport(TargetConfig("http://127.0.0.1:9")))


def _lanes_push(info: LokiInfo) -> tuple[SignalReport, dict, object]:
    """slow_query's logs through three lanes: what arrived, per stream and sending thread."""
    import threading

    inc = shift(cached_incident("slow_query"), END_NS)
    lock = threading.Lock()
    arrived: dict[tuple[str, int], list[int]] = {}

    def loki(request):  # type: ignore[no-untyped-def]
        with lock:
            for s in decode(request).streams:
                arrived.setdefault((s.labels, threading.get_ident()), []).extend(
                    e.timestamp.seconds * 10**9 + e.timestamp.nanos for e in s.entries)
        return 204, {}, ""

    responses.add_callback(responses.POST, f"{URL}/loki/api/v1/push", callback=loki)
    report = SignalReport("logs", "lines")
    t = HttpTransport(TargetConfig(URL), pool_size=4, sleep=lambda s: None)
    push_logs(t, inc.log_streams, LokiOptions(rate_bytes_s=0, max_entries=200, concurrency=3),
              info, report)
    assert not report.lost and report.accepted == inc.log_line_count
    assert sum(map(len, arrived.values())) == inc.log_line_count
    for times in arrived.values():  # within a lane, a stream's entries in time order
        assert times == sorted(times)
    return report, arrived, inc


@responses.activate
def test_lanes_share_a_stream_where_loki_takes_its_entries_out_of_order() -> None:
    """--concurrency applies to logs. An incident has two streams, one with two thirds of
    the lines: with a lane per stream, two lanes at most and one doing most. Loki takes a
    stream's entries out of order (unordered_writes, its default), so three lanes share
    them, each in time order."""
    _, arrived, _ = _lanes_push(replace(INFO, unordered_writes=True))
    threads = {thread for _, thread in arrived}
    assert len(threads) == 3
    big = max({labels for labels, _ in arrived},
              key=lambda lab: sum(len(v) for (la, _), v in arrived.items() if la == lab))
    assert len({thread for labels, thread in arrived if labels == big}) == 3


@responses.activate
def test_without_unordered_writes_a_stream_keeps_to_one_lane() -> None:
    _, arrived, _ = _lanes_push(replace(INFO, unordered_writes=False))
    lanes_of: dict[str, set[int]] = {}
    for labels, thread in arrived:
        lanes_of.setdefault(labels, set()).add(thread)
    assert all(len(v) == 1 for v in lanes_of.values())  # so its entries arrive in order
    assert len(set().union(*lanes_of.values())) == 2  # one lane per stream: two streams


def test_lane_order_keeps_a_stream_in_one_lane_and_spreads_the_bytes() -> None:
    from replayer.loki.push import LokiOptions, LokiPusher, lane_order
    from replayer.transport import Pacer

    inc = shift(cached_incident("slow_query"), END_NS)
    streams = inc.log_streams
    pusher = LokiPusher(None, streams, LokiOptions(max_entries=100),  # type: ignore[arg-type]
                        SignalReport("logs", "lines"), Pacer(0))
    order = [(lane, b) for lane, (b, _) in lane_order(
        [pusher.batches(si) for si in range(len(streams))], streams, 3, spread=False)]
    per_stream: dict[int, list[tuple[int, int]]] = {}
    for _, b in order:
        per_stream.setdefault(b.stream, []).append((b.lo, b.hi))
    for si, s in enumerate(streams):  # each entry once, a stream's batches in order
        ranges = per_stream[si]
        assert ranges[0][0] == 0 and ranges[-1][1] == len(s)
        assert all(x[1] == y[0] for x, y in zip(ranges, ranges[1:]))
        assert all(hi - lo <= 100 for lo, hi in ranges)
    lanes: dict[int, set[int]] = {}
    for lane, b in order:
        lanes.setdefault(b.stream, set()).add(lane)
    assert all(len(v) == 1 for v in lanes.values())
    load = [0] * 3
    weight = [sum(len(x) for x in s.lines) for s in streams]
    for si, (lane,) in lanes.items():
        load[lane] += weight[si]
    assert max(load) - min(load) <= max(weight)  # greedy: within one stream of even
    starts = [int(streams[b.stream].t_ns[b.lo]) for _, b in order]
    assert starts == sorted(starts)  # time order across streams: every lane busy at once


def test_a_stream_is_read_a_chunk_at_a_time_and_batches_do_not_cross_chunks(
        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The encoder for a batch holds its entries, and what it builds is Loki's protobuf for
    exactly those entries; chunks are read only as the batches reach them."""
    import replayer.loki.push as push
    from benchmarks.naive import naive_loki_request
    from replayer.transport import Pacer

    monkeypatch.setattr(push, "CHUNK_ENTRIES", 250)
    monkeypatch.setattr(push, "FIRST_CHUNK_ENTRIES", 15)  # chunks of 15, 60, 240, 250, ...
    inc = shift(cached_incident("slow_query"), END_NS)
    stream = max(inc.log_streams, key=len)
    pusher = push.LokiPusher(None, [stream], push.LokiOptions(max_entries=100,  # type: ignore[arg-type]
                                                             max_bytes=16 * 1024),
                             SignalReport("logs", "lines"), Pacer(0))
    batches = pusher.batches(0)
    first, enc = next(batches)
    assert (enc.lo, first.lo) == (0, 0) and len(enc.texts) == 15  # only the first chunk
    seen = [(first, enc)] + [next(batches) for _ in range(40)]
    for b, e in seen:
        assert e.lo <= b.lo < b.hi <= e.lo + len(e.texts)
        assert e.request(b.lo, b.hi) == naive_loki_request(stream, b.lo, b.hi)
    chunks = list({id(e): len(e.texts) for _, e in seen}.values())
    assert chunks[:5] == [15, 60, 240, 250, 250], chunks
    # a range of the stream, as the entries from the onset on are read
    part = list(pusher.batches(0, 1000, 1500))
    assert part[0][0].lo == 1000 and part[-1][0].hi == 1500
    assert all(x[0].hi == y[0].lo for x, y in zip(part, part[1:]))


def _arrivals(info: LokiInfo, first_ns: int | None) -> tuple[dict[str, list[int]], object]:
    """slow_query's logs pushed through two lanes: each stream's entry times in the order
    they arrived (the lanes' requests one at a time, as the fake server takes them)."""
    import threading

    inc = shift(cached_incident("slow_query"), END_NS)
    lock = threading.Lock()
    arrived: dict[str, list[int]] = {}

    def loki(request):  # type: ignore[no-untyped-def]
        with lock:
            for s in decode(request).streams:
                arrived.setdefault(s.labels, []).extend(
                    e.timestamp.seconds * 10**9 + e.timestamp.nanos for e in s.entries)
        return 204, {}, ""

    with responses.RequestsMock() as mock:
        mock.add_callback(responses.POST, f"{URL}/loki/api/v1/push", callback=loki)
        report = SignalReport("logs", "lines")
        t = HttpTransport(TargetConfig(URL), pool_size=2, sleep=lambda s: None)
        push_logs(t, inc.log_streams, LokiOptions(rate_bytes_s=0, max_entries=500,
                                                  concurrency=2), info, report,
                  first_ns=first_ns)
    assert not report.lost and report.accepted == inc.log_line_count
    for s in inc.log_streams:  # every entry once
        assert sorted(arrived[label_string(s.labels)]) == s.t_ns.tolist()
    return arrived, inc


def test_the_onset_goes_first_where_loki_takes_entries_that_far_behind() -> None:
    """Loki takes a stream's entries up to max_chunk_age/2 behind its newest: when every
    stream spans less, its entries from the incident's onset on go first, so LogQL finds
    the incident without waiting for the calm start of the window."""
    inc = shift(cached_incident("slow_query"), END_NS)
    onset = END_NS - inc.duration_ms * 1_000_000 + inc.truth.onset_ms * 1_000_000  # type: ignore[operator]
    info = replace(INFO, unordered_writes=True, max_behind_ms=3_600_000)
    arrived, _ = _arrivals(info, onset)
    assert any(min(times) < onset for times in arrived.values())
    for times in arrived.values():
        cut = sum(t >= onset for t in times)
        assert cut > 0
        # the lanes interleave a little: nothing from before the onset while the
        # requests from the onset on are under way, barring the last few
        head = times[:cut - 2 * 500]
        assert head and min(head) >= onset, "an entry before the onset went early"


@pytest.mark.parametrize("info", [
    # the window's 30 minutes: its longest stream spans 1,799.8 s, at least that
    replace(INFO, unordered_writes=True, max_behind_ms=1_799_820),
    replace(INFO, unordered_writes=True, max_behind_ms=None),  # /config not readable
    replace(INFO, unordered_writes=None, max_behind_ms=3 * 3_600_000),
    replace(INFO, unordered_writes=False, max_behind_ms=3 * 3_600_000),
])
def test_time_order_where_loki_might_refuse_entries_that_far_behind(info: LokiInfo) -> None:
    inc = shift(cached_incident("slow_query"), END_NS)
    onset = END_NS - inc.duration_ms * 1_000_000 + inc.truth.onset_ms * 1_000_000  # type: ignore[operator]
    arrived, _ = _arrivals(info, onset)
    for times in arrived.values():
        # two lanes: a request's entries may pass the other lane's, never by more
        worst = max(a - b for a, b in zip(itertools.accumulate(times, max), times))
        assert worst < 10 * 60 * 10**9, worst
    calm = [times for times in arrived.values() if min(times) < onset]
    assert calm and all(max(times[:500]) < onset for times in calm)  # the start went first
