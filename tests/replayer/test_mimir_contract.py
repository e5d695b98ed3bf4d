"""The replayer against Grafana Mimir 3.0.2's real answers (tests/data/mimir-3.0.2.json,
captured by hand from a Mimir built from its mimir-3.0.2 tag): its build info, the 404s
for Prometheus' status pages, a tenant's limits, 401 without a tenant, and a push that
Mimir stored in part (issue 22)."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field

import cramjam
import pytest
import responses

from replayer.errors import AuthError
from replayer.prometheus import (
    PushOptions,
    ServerInfo,
    check_server,
    exemplar_note,
    preflight,
    push_metrics,
    push_series,
)
from replayer.remote_write import remote_pb2
from replayer.report import SignalReport, group_reason
from replayer.timeshift import shift
from replayer.transport import HttpTransport, RetryPolicy, TargetConfig
from tests.conftest import cached_incident
from tests.replayer.captures import capture

ROOT = "http://mimir.test:9009"


def _replay(*names: str) -> None:
    for name in names:
        entry = capture(name)
        body = entry["response"]["body"]
        path, _, query = entry["request"]["path"].partition("?")
        responses.add(entry["request"]["method"], f"{ROOT}/{path}",
                      status=entry["response"]["status"],
                      body=body if isinstance(body, str) else json.dumps(body),
                      match=[responses.matchers.query_string_matcher(query)] if query else [])


@responses.activate
def test_preflight_knows_mimir_and_reads_the_tenants_limits() -> None:
    _replay("mimir_buildinfo", "mimir_flags", "mimir_config", "mimir_tsdb_status_orgid_demo",
            "mimir_user_limits_orgid_demo")
    info = preflight(HttpTransport(TargetConfig(f"{ROOT}/prometheus", tenant="demo")))
    assert info.mimir and info.application == "Grafana Mimir" and info.version == "3.0.2"
    assert info.receiver is True and info.exemplar_storage is True
    assert info.max_exemplars == 100_000 and info.tenant_limits["ingestion_rate"] == 10_000_000
    assert info.stores_out_of_order  # Mimir takes a newer half before an older one
    notes = check_server(info, f"{ROOT}/prometheus", send_exemplars=True)
    assert notes[0].startswith("Grafana Mimir 3.0.2: its tenant's limits read (ingestion_rate "
                               "10,000,000/s, burst 10,000,000: paced under them);")
    assert "--verify" in notes[0] and not any("not Prometheus?" in n for n in notes)
    over = exemplar_note(info, 150_000)
    assert over is not None and over.startswith(
        "this load has 150000 exemplars and Mimir keeps at most 100000: the oldest 50000")
    assert "max_global_exemplars_per_user" in over


def test_mimirs_default_of_no_exemplars_is_said_with_the_runtime_config_fix() -> None:
    info = ServerInfo("3.0.2", True, False, None, None, application="Grafana Mimir",
                      tenant_limits={"max_global_exemplars_per_user": 0})
    notes = check_server(info, f"{ROOT}/prometheus", send_exemplars=True)
    assert any("overrides:" in n and "max_global_exemplars_per_user: 100000" in n
               for n in notes)
    assert info.exemplars_off_reason.startswith("Mimir keeps no exemplars for this tenant")


@responses.activate
def test_no_tenant_is_authentication() -> None:
    _replay("mimir_buildinfo", "mimir_flags", "mimir_config", "mimir_user_limits_no_orgid")
    responses.get(f"{ROOT}/prometheus/api/v1/status/tsdb", status=404)
    with pytest.raises(AuthError, match=r"HTTP 401 Unauthorized \(no org id\)") as err:
        preflight(HttpTransport(TargetConfig(f"{ROOT}/prometheus")))
    assert "--tenant" in str(err.value) and err.value.exit_code == 5


@responses.activate
def test_a_push_without_tenant_is_authentication() -> None:
    _replay("mimir_push_no_orgid")
    with pytest.raises(AuthError, match="no org id"):
        HttpTransport(TargetConfig(ROOT)).post("api/v1/push", b"x", {})


def test_per_series_errors_group_by_mimirs_error_id() -> None:
    """Mimir names the series in each error: one summary line per series (3,239 lines,
    2.4 MB for one load). Grouped by the documented error ID, with a few examples."""
    body = capture("mimir_push_partly_too_old")["response"]["body"]
    key, example = group_reason(f"HTTP 400: {body.strip()}")
    assert key == ("HTTP 400: the sample has been rejected because another sample with a "
                   "more recent timestamp has already been ingested and this sample is beyond "
                   "the out-of-order time window of 3h (err-mimir-sample-timestamp-too-old)")
    assert example == 'capture_probe{job="capture"}'
    r = SignalReport("metrics", "samples")
    for i in range(50):
        r.add(rejected=10, reason=f"HTTP 400: {body.replace('capture_probe', f'm{i}')}")
    lines = r.lines()
    assert len(lines) == 3, lines  # the total, the group, its examples
    assert lines[1] == f"  rejected 500 samples: {key}"
    assert lines[2] == '    e.g. m0{job="capture"}, m1{job="capture"}, m2{job="capture"}'


@responses.activate
def test_the_out_of_order_window_is_read_from_mimirs_admin_pages() -> None:
    """Mimir shows a tenant no out-of-order window; its admin pages (/config?mode=diff and
    /runtime_config, open in monolithic mode) do: the window check and --clip work then."""
    _replay("mimir_buildinfo", "mimir_flags", "mimir_config", "mimir_tsdb_status_orgid_demo",
            "mimir_user_limits_orgid_demo", "mimir_config_admin_diff", "mimir_runtime_config")
    info = preflight(HttpTransport(TargetConfig(f"{ROOT}/prometheus", tenant="demo")))
    assert info.ooo_window_ms == 7 * 86_400_000  # "1w" in the config diff
    notes = check_server(info, f"{ROOT}/prometheus", send_exemplars=True)
    assert "out-of-order window 10080 min (from its /config and /runtime_config)" in notes[0]


@responses.activate
def test_without_its_admin_pages_the_window_is_not_checked() -> None:
    _replay("mimir_buildinfo", "mimir_flags", "mimir_config", "mimir_tsdb_status_orgid_demo",
            "mimir_user_limits_orgid_demo")
    responses.get(f"{ROOT}/config", status=403, body="forbidden")
    responses.get(f"{ROOT}/runtime_config", status=403, body="forbidden")
    info = preflight(HttpTransport(TargetConfig(f"{ROOT}/prometheus", tenant="demo")))
    assert info.ooo_window_ms is None
    notes = check_server(info, f"{ROOT}/prometheus", send_exemplars=True)
    assert "not checked before sending: pass --verify" in notes[0]


@dataclass
class MimirRules:
    """Mimir 3.0.2's write rules for a tenant with an out-of-order window: a sample older
    than the tenant's newest minus the window is refused (and counted in
    cortex_discarded_samples_total) wherever it sits, everything else in the request is
    stored, and the answer is the captured 400 naming one refused sample. Exemplars are
    kept whatever happens to their samples (seen against the real Mimir)."""

    newest_ms: int
    window_ms: int
    stored: dict[tuple, dict[int, float]] = field(default_factory=dict)
    exemplars: set = field(default_factory=set)
    discarded: int = 0
    posts: Counter = field(default_factory=Counter)  # (series, t) -> times sent
    requests: int = 0

    def __call__(self, request):  # type: ignore[no-untyped-def]
        self.requests += 1
        wr = remote_pb2.WriteRequest()
        wr.ParseFromString(bytes(cramjam.snappy.decompress_raw(request.body)))
        refused = 0
        newest = self.newest_ms
        for ts in wr.timeseries:
            key = tuple((lab.name, lab.value) for lab in ts.labels)
            for s in ts.samples:
                self.posts[key, s.timestamp] += 1
                if s.timestamp < self.newest_ms - self.window_ms:
                    refused += 1
                    continue
                self.stored.setdefault(key, {})[s.timestamp] = s.value
                newest = max(newest, s.timestamp)
            self.exemplars |= {(key, e.timestamp) for e in ts.exemplars}
        self.newest_ms = newest
        self.discarded += refused
        if refused:
            return 400, {}, capture("mimir_push_partly_too_old")["response"]["body"]
        return 200, {}, ""


@responses.activate
def test_a_request_mimir_stores_in_part_is_accounted_without_resending_what_it_refused() -> None:
    """Mimir stores what it can of a request and refuses the rest; halving re-sent the
    refused samples at every level, and each re-send raised Mimir's own discard counter
    again (408,000 discards counted for 44,880 samples refused, 4,107 requests, against
    the real Mimir). The cutoff is found with one-sample probes instead: claimed = stored,
    the refused samples are sent again only as probes, and the exemplars count as kept."""
    end_ms = 1_795_778_400_000
    inc = shift(cached_incident("slow_query"), end_ms * 1_000_000)
    # another writer already wrote "now": the older half of the window is beyond 30 min
    rx = MimirRules(newest_ms=end_ms, window_ms=inc.duration_ms // 2)
    responses.add_callback(responses.POST, f"{ROOT}/api/v1/push", callback=rx)
    t = HttpTransport(TargetConfig(f"{ROOT}/prometheus", tenant="demo"),
                      policy=RetryPolicy(max_attempts=3), sleep=lambda s: None,
                      clock=lambda: 0.0, rng=random.Random(0))
    info = ServerInfo("3.0.2", None, True, None, None, application="Grafana Mimir")
    report = SignalReport("metrics", "samples")
    push_metrics(t, inc, info, PushOptions(max_samples=2000, concurrency=1,
                                           write_url=f"{ROOT}/api/v1/push"),
                 report, end_ms - inc.duration_ms, end_ms)
    cutoff = end_ms - inc.duration_ms // 2
    too_old = sum(int((s.t_ms < cutoff).sum()) for s in inc.series)
    assert 0 < too_old < inc.sample_count
    stored = sum(len(v) for v in rx.stored.values())
    assert report.accepted == stored == inc.sample_count - too_old
    assert sum(report.rejected.values()) == too_old and report.lost
    assert report.exemplars_accepted == len(rx.exemplars) == inc.exemplar_count
    # the refused samples: each sent once, and a handful more as probes (about one per
    # halving of a request's timestamps), never a whole half again
    refused_posts = [n for (_, t_ms), n in rx.posts.items() if t_ms < cutoff]
    probes = sum(refused_posts) - len(refused_posts)
    assert len(refused_posts) == too_old
    assert max(refused_posts) <= 3
    assert probes <= 20 * -(-inc.sample_count // 2000)
    assert rx.discarded == too_old + probes
    assert report.requests == rx.requests < 10 * -(-inc.sample_count // 2000)


@dataclass
class MimirBucket:
    """Mimir's distributor rate limit on a fake clock: a token bucket over the samples,
    exemplars and metadata of each request; a request over the burst gets the captured
    429, whatever the bucket holds."""

    rate: float
    burst: float
    now: float = 0.0
    tokens: float = -1.0
    last: float = 0.0
    over_rate: int = 0  # requests that found the bucket short (Mimir: 429, retried)
    stored: int = 0
    requests: int = 0

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s

    def __call__(self, request):  # type: ignore[no-untyped-def]
        self.requests += 1
        wr = remote_pb2.WriteRequest()
        wr.ParseFromString(bytes(cramjam.snappy.decompress_raw(request.body)))
        items = sum(len(ts.samples) + len(ts.exemplars) for ts in wr.timeseries)
        if items > self.burst:
            return 429, {"Retry-After": "8"}, capture("mimir_push_over_burst")["response"]["body"]
        self.tokens = self.burst if self.tokens < 0 else min(
            self.burst, self.tokens + self.rate * (self.now - self.last))
        self.last = self.now
        if self.tokens < items:
            self.over_rate += 1
        self.tokens -= items
        self.stored += sum(len(ts.samples) for ts in wr.timeseries)
        return 200, {}, ""


def _mimir_push(limits: dict | None, bucket: MimirBucket) -> tuple[SignalReport, object]:
    end_ms = 1_795_778_400_000
    inc = shift(cached_incident("baseline"), end_ms * 1_000_000)
    responses.add_callback(responses.POST, f"{ROOT}/api/v1/push", callback=bucket)
    t = HttpTransport(TargetConfig(f"{ROOT}/prometheus", tenant="t429"),
                      policy=RetryPolicy(max_attempts=3), sleep=lambda s: None,
                      clock=lambda: 0.0, rng=random.Random(0))
    info = ServerInfo("3.0.2", True, True, 3 * 3_600_000, None, application="Grafana Mimir",
                      tenant_limits=limits)
    report = SignalReport("metrics", "samples")
    push_series(t, inc.series, info, PushOptions(concurrency=2,
                                                 write_url=f"{ROOT}/api/v1/push"),
                report, clock=bucket.clock, sleep=bucket.sleep)
    return report, inc


@responses.activate
def test_a_load_is_paced_under_the_tenants_ingestion_rate_read_in_the_preflight() -> None:
    """Mimir's default tenant takes 10,000 items a second (burst 200,000) and answers 429
    over it; a request over the burst is refused on every retry. With the limits read
    (here captured from a Mimir at 1,000/s, burst 2,000), requests fit the burst and go
    out no faster than the rate: nothing is refused, and the note says how long it takes."""
    limits = capture("mimir_user_limits_low_rate")["response"]["body"]
    bucket = MimirBucket(rate=1000, burst=2000)
    report, inc = _mimir_push(limits, bucket)
    items = inc.sample_count + inc.exemplar_count
    assert report.accepted == bucket.stored == inc.sample_count and not report.lost
    assert bucket.over_rate == 0 and report.retries == 0
    assert bucket.now >= (items - 2000) / 1000  # as slow as the rate demands, no slower
    assert bucket.now <= (items - 2000) / (1000 * 0.95) + 1
    assert any(n.startswith("paced under Mimir's ingestion_rate for this tenant (1,000 "
                            "samples and exemplars a second, burst 2,000)") for n in report.notes)


@responses.activate
def test_a_request_over_an_unread_burst_is_halved_not_retried() -> None:
    """Where the tenant's limits cannot be read, a request over its burst is refused
    whole (429, Retry-After 8) and would be on every retry: it is halved until it fits."""
    bucket = MimirBucket(rate=1e9, burst=2000)
    report, inc = _mimir_push(None, bucket)
    assert report.accepted == bucket.stored == inc.sample_count and not report.lost
    assert report.retries == 0
    assert report.requests == bucket.requests < 4 * -(-inc.sample_count // 1000)
