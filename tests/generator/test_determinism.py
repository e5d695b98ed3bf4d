from __future__ import annotations

import pytest

from generator import SCENARIOS, ScenarioError, generate
from replayer.recording import recording_bytes


def test_same_seed_same_bytes_different_seed_differs() -> None:
    a = recording_bytes(generate("slow_query", seed=7, duration_ms=900_000))
    b = recording_bytes(generate("slow_query", seed=7, duration_ms=900_000))
    c = recording_bytes(generate("slow_query", seed=8, duration_ms=900_000))
    assert a == b
    assert a != c


def test_signal_streams_are_independent_of_each_other() -> None:
    """Changing a knob that only affects logs must not move a single metric sample."""
    a = generate("slow_query", seed=3, duration_ms=600_000)
    b = generate("slow_query", seed=3, duration_ms=600_000,
                 knobs={"log_min_duration_statement_ms": 5})
    assert [s.values.tolist() for s in a.series] == [s.values.tolist() for s in b.series]
    assert [st.lines for st in a.log_streams] != [st.lines for st in b.log_streams]


def test_unknown_scenario_lists_the_valid_ones() -> None:
    with pytest.raises(ScenarioError) as exc:
        generate("slow_qeury")
    msg = str(exc.value)
    assert "did you mean 'slow_query'" in msg
    for name in SCENARIOS:
        assert name in msg


@pytest.mark.parametrize("knobs, fragment", [
    ({"rps_post_payment": -1}, "out of range"),
    ({"pool_size": 2.5}, "whole number"),
    ({"pool_sise": 5}, "did you mean 'pool_size'"),
    ({"rps_health": "lots"}, "needs a number"),
])
def test_invalid_knobs_name_the_problem(knobs: dict, fragment: str) -> None:
    with pytest.raises(ScenarioError, match=fragment):
        generate("baseline", knobs=knobs)


@pytest.mark.parametrize("duration_ms, step_ms, fragment", [
    (60_000, 15_000, "at least 10 steps"),
    (1_000_000, 15_000, "multiple of the step"),
    (600_000, 1500, "whole number of seconds"),
])
def test_invalid_window(duration_ms: int, step_ms: int, fragment: str) -> None:
    with pytest.raises(ScenarioError, match=fragment):
        generate("baseline", duration_ms=duration_ms, step_ms=step_ms)


def test_generator_imports_no_io_or_clock() -> None:
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[2] / "generator"
    banned = re.compile(r"^\s*(import|from)\s+(time|datetime|random|uuid|secrets|requests|grpc|"
                        r"google|replayer|os)\b", re.M)
    calls = re.compile(r"np\.random\.(rand|randn|random|seed|randint|normal|choice)\(")
    for path in root.glob("*.py"):
        text = path.read_text()
        assert not banned.search(text), f"{path.name} imports something impure"
        assert not calls.search(text), f"{path.name} uses numpy's global random state"


def test_leaving_signals_out_changes_nothing_else() -> None:
    full = generate("slow_query", seed=4, duration_ms=600_000)
    metrics_only = generate("slow_query", seed=4, duration_ms=600_000, signals=("metrics",))
    assert metrics_only.log_streams == () and metrics_only.span_tables == ()
    assert [s.values.tolist() for s in metrics_only.series] == [s.values.tolist()
                                                                for s in full.series]
    assert metrics_only.truth == full.truth
