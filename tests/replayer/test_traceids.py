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
