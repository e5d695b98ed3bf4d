"""`--verify` for traces against Tempo's answers: a trace Tempo does not yet find by ID is
asked for again before its spans count as lost (Tempo 3.0.3 answers 404 for a second or two
while it writes a trace from its live traces to a block)."""

from __future__ import annotations

import json
import re
from collections import Counter

import responses
from opentelemetry.proto.trace.v1 import trace_pb2

from replayer.timeshift import shift
from replayer.transport import HttpTransport, TargetConfig
from replayer.verify import SETTLE_S, verify_traces
from replayer.wire import field
from tests.conftest import cached_incident
from tests.replayer.captures import capture

TEMPO = "http://tempo.test:3200"
END_NS = 1_795_778_400_000 * 1_000_000


class Clock:
    """Time that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def _body(spans: int) -> bytes:
    """Tempo's ``TraceByIDResponse`` holding ``spans`` spans."""
    data = trace_pb2.TracesData(resource_spans=[trace_pb2.ResourceSpans(
        scope_spans=[trace_pb2.ScopeSpans(spans=[trace_pb2.Span(name="s")] * spans)])])
    return field(1, data.SerializeToString())


def _tempo(per_trace: Counter[bytes], answers: dict[str, list[int | None]]) -> Counter[str]:
    """A fake Tempo: each trace's reads answer from ``answers[id]`` in turn (None: the
    captured 404, n: n spans), the last answer repeating; returns the reads per trace."""
    missing = capture("tempo_trace_missing")["response"]
    reads: Counter[str] = Counter()

    def answer(request):  # type: ignore[no-untyped-def]
        tid = request.path_url.rsplit("/", 1)[1]
        seq = answers.get(tid, [per_trace[bytes.fromhex(tid)]])
        n = seq[min(reads[tid], len(seq) - 1)]
        reads[tid] += 1
        if n is None:
            return (missing["status"], {"Content-Type": missing["content_type"]},
                    missing["body"] if isinstance(missing["body"], str) else
                    json.dumps(missing["body"]))
        return 200, {"Content-Type": "application/protobuf"}, _body(n)

    responses.add_callback(responses.GET, re.compile(
        rf"{TEMPO}/api/v2/traces/[0-9a-f]{{32}}"), callback=answer)
    return reads


def _incident():  # type: ignore[no-untyped-def]
    inc = shift(cached_incident("pool_exhaustion"), END_NS)
    per: Counter[bytes] = Counter()
    for t in inc.span_tables:
        for tid in t.trace_id:
            per[bytes(tid)] += 1
    return inc, per


def _picked(per: Counter[bytes], sample: int) -> list[bytes]:
    ids = sorted(per)
    return ids[::max(len(ids) // sample, 1)][:sample]


@responses.activate
def test_a_trace_tempo_finds_only_on_a_later_read_is_not_a_loss() -> None:
    inc, per = _incident()
    picked = _picked(per, 5)
    late, partial = picked[1].hex(), picked[3].hex()
    reads = _tempo(per, {late: [None, None, per[picked[1]]],
                         partial: [1, per[picked[3]]]})
    clock = Clock()
    t = HttpTransport(TargetConfig(TEMPO), sleep=clock.sleep, clock=lambda: clock.now)
    v = verify_traces(t, inc, sample=5)
    assert (v.expected, v.stored, v.sampled) == (sum(per[x] for x in picked),
                                                 sum(per[x] for x in picked), 5)
    assert v.shortfall == 0
    assert reads[late] == 3 and reads[partial] == 2
    assert all(reads[x.hex()] == 1 for x in picked if x.hex() not in (late, partial))
    assert 0 < clock.now < 1.0  # asked again within a second, not after the whole budget


@responses.activate
def test_a_trace_never_found_is_a_loss_once_the_budget_is_spent() -> None:
    inc, per = _incident()
    picked = _picked(per, 5)
    gone = picked[2]
    reads = _tempo(per, {gone.hex(): [None]})
    clock = Clock()
    t = HttpTransport(TargetConfig(TEMPO), sleep=clock.sleep, clock=lambda: clock.now)
    v = verify_traces(t, inc, sample=5)
    assert v.shortfall == per[gone]
    assert v.stored == sum(per[x] for x in picked) - per[gone]
    assert "accepted but not stored (a loss)" in v.line()
    assert abs(clock.now - SETTLE_S) < 1e-9  # the whole budget, and not a moment more
    assert 3 < reads[gone.hex()] < 15  # backoff: a bounded number of reads
    assert max(clock.slept) <= 2.0
