"""The worked example runs against the real Prometheus through the pytest plugin, and
moving its expected onset by two steps makes it fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.prometheus_server import running_prometheus

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "test_slow_query_onset.py"
pytestmark = pytest.mark.integration


def _run(pytester: pytest.Pytester, tmp_path: Path, shift: int) -> pytest.RunResult:
    source = EXAMPLE.read_text()
    assert "EXPECTED_ONSET_SHIFT_STEPS = 0" in source
    pytester.makepyfile(test_example=source.replace("EXPECTED_ONSET_SHIFT_STEPS = 0",
                                                    f"EXPECTED_ONSET_SHIFT_STEPS = {shift}"))
    with running_prometheus(tmp_path / f"prom{shift}") as url:
        return pytester.runpytest("-p", "no:cacheprovider", f"--replayer-prometheus-url={url}")


def test_the_example_passes(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result = _run(pytester, tmp_path, 0)
    result.assert_outcomes(passed=1)


def test_the_example_fails_when_the_onset_is_two_steps_off(pytester: pytest.Pytester,
                                                          tmp_path: Path) -> None:
    result = _run(pytester, tmp_path, 2)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the p99 spike starts*from the ground-truth onset*"])
