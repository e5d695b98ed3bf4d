from __future__ import annotations

from replayer.traceids import salt_of, salt_trace_ids
from tests.conftest import cached_incident
from tests.generator.test_invariants import (
    test_every_exemplar_names_a_span_and_sits_in_its_bucket as check_exemplars,
)
from tests.generator.test_invariants import (
    test_every_log_trace_id_names_a_span as check_log_trace_ids,
)
from tests.generator.test_invariants import (
    test_ground_truth_examples_are_real_traces as check_examples,
)


def test_salted_ids_still_join_and_differ_from_the_original() -> None:
    inc = cached_incident("pool_exhaustion")
    salted = salt_trace_ids(inc, salt_of("run-a"))
    check_exemplars(salted)
    check_log_trace_ids(salted)
    check_examples(salted)
    before = {t.trace_id[i].tobytes() for t in inc.span_tables for i in range(len(t))}
    after = {t.trace_id[i].tobytes() for t in salted.span_tables for i in range(len(t))}
    assert len(after) == len(before) and not (before & after)
    other = salt_trace_ids(inc, salt_of("run-b"))
    assert not after & {t.trace_id[i].tobytes() for t in other.span_tables
                        for i in range(len(t))}
    assert salted.truth.example_trace_ids != inc.truth.example_trace_ids
    # both the metadata that carry the trace ID name the salted one
    pairs = [dict(m) for s in salted.log_streams for m in s.metadata if m]
    both = [m for m in pairs if "otelTraceID" in m and "trace_id" in m]
    assert both and all(m["otelTraceID"] == m["trace_id"] for m in both)


def test_ground_truth_queries_name_the_salted_example_traces() -> None:
    """A query of the ground truth that names an example trace (the LogQL of its access
    lines) must find it after salting: it names the salted ID, never the original."""
    inc = cached_incident("slow_query")
    salted = salt_trace_ids(inc, salt_of("run-a"))
    original = set(inc.truth.example_trace_ids)
    texts = [q for _, q in salted.truth.promql + salted.truth.logql + salted.truth.traceql]
    named = [q for _, q in inc.truth.logql if any(t in q for t in original)]
    assert named, "the scenario's truth names an example trace in some LogQL"
    assert not any(t in q for q in texts for t in original)
    assert any(t in q for q in texts for t in salted.truth.example_trace_ids)
    lines = [line for s in salted.log_streams for line, meta in zip(s.lines, s.metadata)
             if dict(meta).get("trace_id") == salted.truth.example_trace_ids[0]]
    assert lines  # and the salted example still has its log lines
