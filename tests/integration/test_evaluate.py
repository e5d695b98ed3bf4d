"""`replayer evaluate` end to end against a real Prometheus (issue 20): the reference
investigator over every scenario and seeds 1-3, an investigator that always gives the
same answer scoring exactly its share, and investigators that crash, hang or print
garbage scored as such without stopping the harness."""

from __future__ import annotations

import datetime as dt
import json
import re
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from generator import SCENARIOS
from replayer.api import Targets
from replayer.cli import cli
from replayer.evaluate import evaluate, parse_verdict

from .prometheus_server import running_prometheus
from .test_prometheus_load import fixed_end_ms, iso

pytestmark = pytest.mark.integration
PY = shlex.quote(sys.executable)


def _constant(component: str, kind: str) -> str:
    verdict = json.dumps({"root_cause": {"component": component, "kind": kind}})
    return f"{PY} -c {shlex.quote(f'print({verdict!r})')}"


def test_reference_and_constant_investigators_over_the_library(tmp_path: Path) -> None:
    end = iso(fixed_end_ms() - 120_000)
    with running_prometheus(tmp_path) as url:
        base = ["evaluate", "--signals", "metrics", "--prometheus-url", url, "--seeds", "1-3",
                "--end", end, "--json"]
        r = CliRunner().invoke(cli, base + ["--investigator", "replayer investigate",
                                            "--png", str(tmp_path / "score.png")])
        assert r.exit_code == 0, r.output
        ref = json.loads(r.output[r.output.index("{"):])
        assert ref["overall"]["cases"] == 3 * len(SCENARIOS) and ref["overall"]["failed"] == 0
        # a transparent baseline: it finds most causes from the data alone (the figure the
        # README quotes); a drop below this is a regression of the rules or of the data
        assert ref["overall"]["top1"] >= 30, json.dumps(ref["by_scenario"], indent=1)
        assert (tmp_path / "score.png").stat().st_size > 5000
        # the cases share one Prometheus: every selector the reference asked was scoped to
        # its own case (an unscoped one would read the other cases' data)
        for case in ref["cases"]:
            for q in case["verdict"]["evidence"]:
                # label names (inside braces and by (...)) are not selectors
                outside = re.sub(r"by \([^)]*\)", "",
                                 re.sub(r'\{(?:[^}"]|"[^"]*")*\}', "{}", q))
                assert not re.search(r"\b(pg|http|process|db|target)_[a-z_]+(?![a-z_{])",
                                     outside), q
                unquoted = re.sub(r'"[^"]*"', '""', q)
                assert unquoted.count("{") == q.count('replayer_run="eval-'), q

        r = CliRunner().invoke(cli, [*base[:-5], "--seeds", "1", "--end", end, "--json",
                                     "--investigator", _constant("postgres", "missing_index")])
        assert r.exit_code == 0, r.output
        const = json.loads(r.output[r.output.index("{"):])["overall"]
        # its share of the library: slow_query is the only missing index; postgres is the
        # component of slow_query and disk_full
        assert const["top1"] == 1 and const["component"] == 2, const


def test_a_crashing_hanging_or_garbled_investigator_is_scored_as_such(tmp_path: Path) -> None:
    end = dt.datetime.fromtimestamp(fixed_end_ms() / 1000 - 120, tz=dt.timezone.utc)
    crash = f"{PY} -c " + shlex.quote("import sys; print('no route to prometheus', "
                                      "file=sys.stderr); sys.exit(3)")
    hang = f"{PY} -c " + shlex.quote("import time; time.sleep(30)")
    garbage = f"{PY} -c " + shlex.quote("print('I think it was the database')")
    with running_prometheus(tmp_path) as url:
        targets = Targets(prometheus=url)
        got = {}
        for name, cmd in (("crash", crash), ("hang", hang), ("garbage", garbage)):
            report = evaluate(cmd, ["slow_query"], [1], targets, end, ("metrics",),
                              time_limit_s=2.0)
            got[name] = report.results[0]
            assert "slow_query" in report.table()
        assert got["crash"].status == "crashed" and "no route to prometheus" in \
            got["crash"].stderr and "exit code 3" in got["crash"].detail
        assert got["hang"].status == "timed_out"
        assert got["garbage"].status == "garbage" and "I think" in got["garbage"].detail
        assert not any(r.top1 for r in got.values())

        def smart(env: dict[str, str]) -> dict[str, object]:  # the Python twin
            assert env["REPLAYER_RUN_SELECTOR"].startswith('replayer_run="eval-')
            return {"root_cause": {"component": "postgres", "kind": "missing_index"},
                    "onset": env["INCIDENT_START"]}

        def broken(env: dict[str, str]) -> dict[str, object]:
            raise RuntimeError("the model is down")

        ok = evaluate(smart, ["slow_query"], [1], targets, end, ("metrics",)).results[0]
        assert ok.status == "ok" and ok.top1 and ok.onset_error_s and ok.onset_error_s > 60
        bad = evaluate(broken, ["slow_query"], [1], targets, end, ("metrics",)).results[0]
        assert bad.status == "crashed" and "the model is down" in bad.detail


def test_verdicts_are_read_strictly() -> None:
    v = parse_verdict('log line\n{"root_cause": {"component": "postgres", "kind": "x"}, '
                      '"onset": "2026-11-28T10:00:00Z", "candidates": [{"component": "a", '
                      '"kind": "b"}]}\n')
    assert (v.component, v.kind, v.candidates) == ("postgres", "x", (("postgres", "x"),
                                                                     ("a", "b")))
    assert v.onset == dt.datetime(2026, 11, 28, 10, tzinfo=dt.timezone.utc)
    assert parse_verdict('{"component": "card-processor", "kind": "upstream_errors"}'
                         ).component == "card-processor"
    for text in ("", "[1, 2]", '{"root_cause": "db"}', '{"component": "a", "onset": "soon"}'):
        with pytest.raises(ValueError):
            parse_verdict(text)
