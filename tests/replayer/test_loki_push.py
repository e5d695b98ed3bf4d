"""The Loki path against Loki's real captured answers."""

from __future__ import annotations

import random

import cramjam
import pytest
import responses

from replayer.errors import PreflightError, TransportError
from replayer.loki import push_pb2
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
    lines = [e.line for call in responses.calls for s in decode(call.request).streams
             for e in s.entries]
    assert lines == [line for s in inc.log_streams for line in s.lines]


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
def test_preflight_reads_limits_from_config() -> None:
    responses.get(f"{URL}/ready", body="ready")
    responses.get(f"{URL}/loki/api/v1/status/buildinfo",
                  json=capture("loki_buildinfo")["response"]["body"])
    responses.get(f"{URL}/config", body=(
        "limits_config:\n  reject_old_samples: true\n  reject_old_samples_max_age: 1w\n"
        "  ingestion_rate_mb: 4\n  allow_structured_metadata: true\n"))
    info = preflight(transport(FakeTime()))
    assert info == LokiInfo(True, "unknown (dev build)", True, 7 * 86_400_000, 4 * 1048576, True)


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
