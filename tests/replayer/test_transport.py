from __future__ import annotations

import random

import pytest
import requests
import responses

from replayer.errors import TransportError
from replayer.transport import HttpTransport, RetryPolicy, TargetConfig

URL = "http://prom.test:9090"


def transport(waits: list[float], **policy: float) -> HttpTransport:
    return HttpTransport(TargetConfig(URL, tenant="team-a", bearer_token="s3cret",
                                      headers=(("X-Extra", "1"),)),
                         policy=RetryPolicy(**policy), sleep=waits.append,
                         clock=lambda: 0.0, rng=random.Random(1))


@responses.activate
def test_retries_503_honouring_retry_after_then_succeeds() -> None:
    responses.post(f"{URL}/api/v1/write", status=503, headers={"Retry-After": "3"})
    responses.post(f"{URL}/api/v1/write", status=429)
    responses.post(f"{URL}/api/v1/write", status=204)
    waits: list[float] = []
    resp, retries = transport(waits).post("api/v1/write", b"x", {})
    assert (resp.status, retries) == (204, 2)
    assert waits[0] == 3.0 and 0 < waits[1] <= 0.5
    sent = responses.calls[0].request.headers
    assert sent["X-Scope-OrgID"] == "team-a" and sent["Authorization"] == "Bearer s3cret"
    assert sent["X-Extra"] == "1"


@responses.activate
def test_never_retries_other_4xx() -> None:
    responses.post(f"{URL}/api/v1/write", status=400, body="out of bounds\n")
    waits: list[float] = []
    resp, retries = transport(waits).post("api/v1/write", b"x", {})
    assert (resp.status, retries, waits) == (400, 0, [])
    assert len(responses.calls) == 1


@responses.activate
def test_final_500_is_not_retried() -> None:
    responses.post(f"{URL}/api/v1/write", status=500, body="too old sample\n")
    waits: list[float] = []
    resp, retries = transport(waits).post("api/v1/write", b"x", {},
                                          final=lambda r: "too old" in r.body)
    assert (resp.status, retries, len(responses.calls)) == (500, 0, 1)


@responses.activate
def test_gives_up_after_max_attempts_with_backoff_growing() -> None:
    responses.post(f"{URL}/api/v1/write", status=502)
    waits: list[float] = []
    resp, retries = transport(waits, max_attempts=4).post("api/v1/write", b"x", {})
    assert (resp.status, retries, len(responses.calls)) == (502, 3, 4)
    assert waits == sorted(waits) and len(waits) == 3


def test_unreachable_get_raises_transport_error() -> None:
    t = HttpTransport(TargetConfig("http://127.0.0.1:9"))
    with pytest.raises(TransportError, match="127.0.0.1:9"):
        t.get("api/v1/status/buildinfo")


def test_basic_auth_is_sent() -> None:
    with responses.RequestsMock() as rsps:
        rsps.get(f"{URL}/x", status=200)
        HttpTransport(TargetConfig(URL, basic_auth=("u", "p"))).get("x")
        assert rsps.calls[0].request.headers["Authorization"] == "Basic dTpw"


@responses.activate
def test_an_answer_that_breaks_off_is_retried_not_raised() -> None:
    """A reset after the status line (ChunkedEncodingError) killed a load with a
    traceback; it is a transport failure like any other: retried, then reported."""
    import requests

    broken = requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")
    responses.post(f"{URL}/api/v1/write", body=broken)
    responses.post(f"{URL}/api/v1/write", status=204)
    waits: list[float] = []
    resp, retries = transport(waits).post("api/v1/write", b"x", {})
    assert (resp.status, retries) == (204, 1)
    responses.post(f"{URL}/api/v1/push", body=broken)
    resp, retries = transport([], max_attempts=1).post("api/v1/push", b"x", {})
    assert resp.status == 0 and "ChunkedEncodingError" in resp.body


@responses.activate
def test_credentials_in_a_url_become_basic_auth_and_leave_the_url() -> None:
    """`http://admin:pw@host` printed the password in errors and `record` stored it in the
    recording header: the URL keeps no userinfo, the request still authenticates."""
    import base64

    t = TargetConfig("http://admin:p%40ss@prom.test:9090/prometheus")
    assert t.url == "http://prom.test:9090/prometheus" and "p@ss" not in repr(t.url)
    assert t.basic_auth == ("admin", "p@ss")
    assert TargetConfig("http://u:x@h:1", basic_auth=("me", "mine")).basic_auth == ("me", "mine")
    responses.get("http://prom.test:9090/prometheus/api/v1/status/buildinfo", status=200,
                  body="{}")
    HttpTransport(t).get("api/v1/status/buildinfo")
    sent = responses.calls[0].request.headers["Authorization"]
    assert sent == "Basic " + base64.b64encode(b"admin:p@ss").decode()
    with pytest.raises(TransportError) as err:  # nothing listens: the message has no secret
        HttpTransport(TargetConfig("http://admin:hunter2@127.0.0.1:1")).get("x")
    assert "hunter2" not in str(err.value) and "127.0.0.1:1" in str(err.value)


@responses.activate
def test_retries_for_the_time_budget_not_a_count() -> None:
    """A restart that takes 29 s lost the load (about 6 attempts, 4-8 s in all): the budget
    is time (--retry-for, 60 s by default), and the wait is said, every few seconds."""
    now = [0.0]
    said: list[str] = []

    def sleep(s: float) -> None:
        now[0] += s

    for _ in range(15):
        responses.post(f"{URL}/api/v1/write", body=requests.ConnectionError("refused"))
    responses.post(f"{URL}/api/v1/write", status=204)
    t = HttpTransport(TargetConfig(URL), policy=RetryPolicy(deadline_s=60.0), sleep=sleep,
                      clock=lambda: now[0], rng=random.Random(1), notify=said.append)
    resp, retries = t.post("api/v1/write", b"x", {})
    assert (resp.status, retries) == (204, 15)
    assert 25 < now[0] < 60  # waited through what a restart takes
    assert said[0] == f"{URL}: connection failed; retrying for up to 60 s more (--retry-for)"
    gaps = [float(line.split("up to ")[1].split()[0]) for line in said]
    assert all(a - b >= 4.5 for a, b in zip(gaps, gaps[1:]))  # at most one line per 5 s
    assert 3 <= len(said) <= 13


@responses.activate
def test_a_short_budget_gives_up_in_time() -> None:
    now = [0.0]
    responses.post(f"{URL}/api/v1/write", status=503)
    t = HttpTransport(TargetConfig(URL), policy=RetryPolicy(deadline_s=5.0),
                      sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0],
                      rng=random.Random(1))
    resp, retries = t.post("api/v1/write", b"x", {})
    assert resp.status == 503 and retries >= 3 and now[0] <= 5.0
    no_retry = HttpTransport(TargetConfig(URL), policy=RetryPolicy(deadline_s=0.0),
                             sleep=lambda s: None, clock=lambda: 0.0)
    assert no_retry.post("api/v1/write", b"x", {})[1] == 0
