"""The Prometheus path against the real captured answers of Prometheus 2.42.

A small receiver, fed with the captured status codes and bodies, applies the 2.42 rules
(one transaction per request: the first bad sample rolls the whole request back) so the
isolation logic meets what the real server says. The real server itself is exercised in
tests/integration.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import cramjam
import numpy as np
import pytest
import responses

from replayer.errors import PreflightError
from replayer.prometheus import (
    PushOptions,
    ServerInfo,
    check_server,
    parse_prom_duration,
    preflight,
    push_metrics,
)
from replayer.remote_write import remote_pb2
from replayer.report import SignalReport
from replayer.timeshift import shift
from replayer.transport import HttpTransport, RetryPolicy, TargetConfig
from tests.conftest import cached_incident
from tests.replayer.captures import body_text, capture, status

URL = "http://prom.test:9090"
END_MS = 1_795_778_400_000


def _get(name: str) -> None:
    entry = capture(name)
    responses.get(f"{URL}/{entry['request']['path']}", status=entry["response"]["status"],
                  json=entry["response"]["body"])


@dataclass
class Receiver242:
    """Applies Prometheus 2.42's write rules, answering with captured responses."""

    min_valid_ms: int
    ooo: bool
    stored: dict[tuple, dict[int, float]] = field(default_factory=dict)
    requests: int = 0

    def __call__(self, request):  # type: ignore[no-untyped-def]
        self.requests += 1
        wr = remote_pb2.WriteRequest()
        wr.ParseFromString(bytes(cramjam.snappy.decompress_raw(request.body)))
        staged: dict[tuple, dict[int, float]] = {}
        for ts in wr.timeseries:
            key = tuple((lab.name, lab.value) for lab in ts.labels)
            have = {**self.stored.get(key, {}), **staged.get(key, {})}
            for s in ts.samples:
                if s.timestamp < self.min_valid_ms:
                    name = "prom_rw_too_old" if self.ooo else "prom_default_rw_new_series_2h_old"
                    return status(name), {}, body_text(name)
                if not self.ooo and have and s.timestamp < max(have):
                    name = "prom_default_rw_out_of_order"
                    return status(name), {}, body_text(name)
                have[s.timestamp] = s.value
                staged.setdefault(key, {})[s.timestamp] = s.value
        for key, samples in staged.items():  # commit: all or nothing
            self.stored.setdefault(key, {}).update(samples)
        return 204, {}, ""


def _transport() -> HttpTransport:
    return HttpTransport(TargetConfig(URL), policy=RetryPolicy(max_attempts=3),
                         sleep=lambda s: None, clock=lambda: 0.0, rng=random.Random(0))


@responses.activate
def test_preflight_reads_the_real_status_answers() -> None:
    for name in ("prom_buildinfo", "prom_status_flags", "prom_status_config"):
        _get(name)
    responses.get(f"{URL}/api/v1/status/tsdb", status=404)
    info = preflight(_transport())
    assert info == ServerInfo("2.42.0+ds", True, True, 2 * 3_600_000, None, 3_600_000, 100_000)
    assert check_server(info, URL, send_exemplars=True) == []


def test_receiver_off_stops_with_the_flag_to_add() -> None:
    info = ServerInfo("2.42.0+ds", False, False, 0, None)
    with pytest.raises(PreflightError, match="--web.enable-remote-write-receiver"):
        check_server(info, URL, True)
    off = ServerInfo("2.42.0+ds", True, False, 0, None)
    assert "exemplar-storage" in check_server(off, URL, True)[0]


@pytest.mark.parametrize("text, ms", [("2h", 7_200_000), ("1h30m", 5_400_000), ("0s", 0),
                                      ("90s", 90_000), ("500ms", 500)])
def test_prom_durations(text: str, ms: int) -> None:
    assert parse_prom_duration(text) == ms


def _push(receiver: Receiver242, info: ServerInfo, clip: bool = False,
          max_samples: int = 400) -> tuple[SignalReport, object]:
    inc = shift(cached_incident("slow_query"), END_MS * 1_000_000)
    responses.add_callback(responses.POST, f"{URL}/api/v1/write", callback=receiver)
    report = SignalReport("metrics", "samples")
    push_metrics(_transport(), inc, info, PushOptions(max_samples=max_samples, concurrency=3,
                                                      clip=clip), report,
                 END_MS - inc.duration_ms, END_MS)
    return report, inc


@responses.activate
def test_everything_lands_when_the_server_accepts_it() -> None:
    rx = Receiver242(min_valid_ms=0, ooo=True)
    report, inc = _push(rx, ServerInfo("2.42.0", True, True, 7_200_000, END_MS))
    assert not report.lost and report.accepted == report.sent == inc.sample_count
    for s in inc.series:
        assert rx.stored[s.labels] == dict(zip(s.t_ms.tolist(), s.values.tolist()))


@responses.activate
def test_too_old_samples_are_isolated_reported_and_the_rest_stored() -> None:
    cut = END_MS - 20 * 60_000
    rx = Receiver242(min_valid_ms=cut, ooo=True)
    # The server says it takes 2 h back, but a concurrent writer moved its head (as can
    # happen): the push meets real "too old sample" 500s and must not retry them forever.
    report, inc = _push(rx, ServerInfo("2.42.0", True, True, 7_200_000, END_MS))
    too_old = sum(int((s.t_ms < cut).sum()) for s in inc.series)
    assert report.rejected == {"HTTP 500: too old sample": too_old}
    assert report.accepted == inc.sample_count - too_old and report.lost
    for s in inc.series:
        keep = s.t_ms >= cut
        assert rx.stored[s.labels] == dict(zip(s.t_ms[keep].tolist(), s.values[keep].tolist()))
    assert rx.requests < 40 * len(inc.series)  # binary search, not one request per sample


@responses.activate
def test_out_of_order_without_ooo_window_keeps_series_order() -> None:
    inc = shift(cached_incident("slow_query"), END_MS * 1_000_000)
    victim = inc.series[10]
    rx = Receiver242(min_valid_ms=0, ooo=False)
    later = int(victim.t_ms[60])
    rx.stored[victim.labels] = {later: -1.0}  # someone already wrote a newer sample
    report, _ = _push(rx, ServerInfo("2.42.0", True, True, 0, END_MS))
    older = int((victim.t_ms < later).sum())
    assert report.rejected_total >= older
    assert set(report.rejected) <= {"HTTP 400: out of order sample"}
    for s in inc.series:
        if s.labels != victim.labels:
            assert rx.stored[s.labels] == dict(zip(s.t_ms.tolist(), s.values.tolist()))
    kept = rx.stored[victim.labels]
    assert all(kept[t] == v for t, v in zip(victim.t_ms.tolist(), victim.values.tolist())
               if t > later)


@responses.activate
def test_window_older_than_the_server_accepts_stops_before_sending() -> None:
    rx = Receiver242(min_valid_ms=0, ooo=False)
    info = ServerInfo("2.42.0", True, True, 0, END_MS, head_window_ms=600_000)
    with pytest.raises(PreflightError, match="out_of_order_time_window: 40m"):
        _push(rx, info)
    assert rx.requests == 0


@responses.activate
def test_the_advice_counts_from_the_servers_newest_sample() -> None:
    """A window 3 h back on a server whose newest sample is its own scrape, now: the fix
    must reach from now to the window's start (it said 40m, and after adding it, the same
    refusal with the same advice). Times in RFC 3339, not raw milliseconds."""
    rx = Receiver242(min_valid_ms=0, ooo=False)
    newest = END_MS + 3 * 3_600_000  # the load's window ends 3 h before the server's head
    info = ServerInfo("2.42.0", True, True, 40 * 60_000, newest, head_window_ms=3_600_000)
    with pytest.raises(PreflightError) as err:
        _push(rx, info)
    text = str(err.value)
    need = -(-(newest - (END_MS - 1_800_000)) // 60_000) + 10
    assert f"out_of_order_time_window: {need}m" in text and need == 220
    assert " ms" not in text and "newest sample, 20" in text
    assert rx.requests == 0
    # a server configured as advised takes the window
    fixed = ServerInfo("2.42.0", True, True, need * 60_000, newest, head_window_ms=3_600_000)
    assert fixed.accepts_from_ms(END_MS) <= END_MS - 1_800_000


@responses.activate
def test_clip_that_leaves_nothing_is_a_loss() -> None:
    rx = Receiver242(min_valid_ms=0, ooo=False)
    info = ServerInfo("2.42.0", True, True, 0, END_MS + 3_600_000, head_window_ms=600_000)
    report, inc = _push(rx, info, clip=True)
    assert report.clipped == inc.sample_count and report.accepted == 0
    assert report.failed and report.failed.startswith("--clip left out every sample")
    assert report.failure_code == 1 and rx.requests == 0


@responses.activate
def test_clip_loads_only_the_accepted_part_and_says_so() -> None:
    rx = Receiver242(min_valid_ms=END_MS - 600_000, ooo=False)
    info = ServerInfo("2.42.0", True, True, 0, END_MS, head_window_ms=600_000)
    report, inc = _push(rx, info, clip=True)
    assert not report.lost and report.clipped > 0
    assert report.accepted + report.clipped == inc.sample_count
    assert min(min(v) for v in rx.stored.values()) >= END_MS - 600_000
    assert any("--clip" in n for n in report.notes)


@responses.activate
def test_exemplars_dropped_by_a_server_without_storage_count_as_lost() -> None:
    rx = Receiver242(min_valid_ms=0, ooo=True)
    report, inc = _push(rx, ServerInfo("2.42.0", True, False, 7_200_000, END_MS))
    assert report.accepted == inc.sample_count
    assert report.lost and sum(report.exemplars_dropped.values()) == inc.exemplar_count


@responses.activate
def test_server_errors_are_retried_then_reported() -> None:
    responses.post(f"{URL}/api/v1/write", status=503, body="TSDB not ready\n")
    inc = shift(cached_incident("baseline"), END_MS * 1_000_000)
    report = SignalReport("metrics", "samples")
    push_metrics(_transport(), inc, ServerInfo("2.42.0", True, True, 7_200_000, END_MS),
                 PushOptions(max_samples=10**6, concurrency=1), report,
                 END_MS - inc.duration_ms, END_MS)
    assert report.rejected == {"HTTP 503: TSDB not ready (gave up after retries)":
                               inc.sample_count}
    assert report.retries == 2 * report.requests
    assert np.isclose(report.accepted, 0)


@responses.activate
def test_a_mimir_style_receiver_with_its_own_write_url() -> None:
    """Mimir answers the status API under /prometheus, has no flags or config endpoint,
    and takes remote write at /api/v1/push."""
    base = "http://mimir.test:8080"
    responses.get(f"{base}/prometheus/api/v1/status/buildinfo",
                  json=capture("prom_buildinfo")["response"]["body"])
    for path in ("flags", "config", "tsdb"):
        responses.get(f"{base}/prometheus/api/v1/status/{path}", status=404)
    rx = Receiver242(min_valid_ms=0, ooo=True)
    responses.add_callback(responses.POST, f"{base}/api/v1/push", callback=rx)
    t = HttpTransport(TargetConfig(f"{base}/prometheus", tenant="team-a"),
                      sleep=lambda s: None)
    info = preflight(t)
    assert info.receiver is None and "limits unchecked" in check_server(info, base, True)[0]
    inc = shift(cached_incident("baseline"), END_MS * 1_000_000)
    report = SignalReport("metrics", "samples")
    push_metrics(t, inc, info, PushOptions(write_url=f"{base}/api/v1/push"), report,
                 END_MS - inc.duration_ms, END_MS)
    assert not report.lost and report.accepted == inc.sample_count
    assert all(c.request.headers["X-Scope-OrgID"] == "team-a" for c in responses.calls)


def test_lanes_post_in_order_and_a_failing_sender_stops_the_load() -> None:
    """One encoder feeds every lane; each lane's bodies go out in the order planned, and a
    sender that fails (server gone) ends the load with its error instead of hanging."""
    import threading

    from replayer.pipeline import send_lanes
    from replayer.remote_write.encode import Piece

    lanes = [(lane, [Piece(lane, b, b + 1)]) for b in range(7) for lane in range(3)]
    sent: dict[int, list[int]] = {0: [], 1: [], 2: []}
    lock = threading.Lock()

    def send(batch, body):  # type: ignore[no-untyped-def]
        assert body == f"{batch[0].series}:{batch[0].lo}".encode()
        with lock:
            sent[batch[0].series].append(batch[0].lo)

    def encode(batch):  # type: ignore[no-untyped-def]
        return f"{batch[0].series}:{batch[0].lo}".encode()

    send_lanes(lanes, 3, encode, send)
    assert sent == {lane: list(range(7)) for lane in range(3)}

    encoded: list[tuple[int, int]] = []

    def failing_send(batch, body):  # type: ignore[no-untyped-def]
        if batch[0].series == 1 and batch[0].lo == 2:
            raise ConnectionError("server went away")

    def counting_encode(batch):  # type: ignore[no-untyped-def]
        encoded.append((batch[0].series, batch[0].lo))
        return b""

    with pytest.raises(ConnectionError, match="server went away"):
        send_lanes(lanes, 3, counting_encode, failing_send)
    assert len(encoded) < 21  # the encoder stopped early


def test_lane_batches_keep_each_series_in_one_lane_in_order_and_cover_everything() -> None:
    from replayer.prometheus import lane_batches
    from replayer.remote_write.encode import Piece

    pieces = [Piece(s, lo, lo + 30) for s in range(10) for lo in range(0, 90, 30)]
    batches = list(lane_batches(iter(pieces), 4, 100))
    assert sorted(p for _, b in batches for p in b) == sorted(pieces)
    assert all(p.series % 4 == lane for lane, b in batches for p in b)
    assert all(sum(p.samples for p in b) <= 100 for _, b in batches)
    for lane in range(4):
        sent = [p for ln, b in batches if ln == lane for p in b]
        assert sent == [p for p in pieces if p.series % 4 == lane]  # planned order kept
    big = [Piece(0, 0, 500)]  # a piece over the limit still goes, alone
    assert list(lane_batches(iter(big), 2, 100)) == [(0, big)]


@responses.activate
def test_a_blanket_refusal_is_not_split_into_a_request_per_piece() -> None:
    """A proxy that answers 400 to every write made the splitter send 74x the requests:
    when both halves are refused exactly as the whole, for a reason about no sample or
    series, the batch is refused as it is."""
    calls = []

    def refuse(request):  # type: ignore[no-untyped-def]
        calls.append(1)
        return 400, {}, "Bad Request: request refused by the gateway\n"

    responses.add_callback(responses.POST, f"{URL}/api/v1/write", callback=refuse)
    inc = shift(cached_incident("slow_query"), END_MS * 1_000_000)
    report = SignalReport("metrics", "samples")
    push_metrics(_transport(), inc, ServerInfo("2.42.0", True, True, 7_200_000, END_MS),
                 PushOptions(max_samples=4000, concurrency=2), report,
                 END_MS - inc.duration_ms, END_MS)
    batches = -(-inc.sample_count // 4000) + 2  # what the lanes' partly filled batches add
    assert len(calls) <= 1 + 3 * batches, len(calls)  # metadata, then 3 per batch at most
    assert report.accepted == 0 and report.rejected_total == inc.sample_count
    (reason,) = report.rejected
    assert reason == ("HTTP 400: Bad Request: request refused by the gateway (every request "
                      "refused alike: not split further)")
