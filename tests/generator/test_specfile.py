"""Scenario files (issue 16): one way to define an incident, several faults in one window,
red herrings, and a clear line per problem in a file."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from generator import SCENARIOS, generate
from generator.model import Incident
from generator.specfile import (
    ScenarioFileError,
    load_scenario_file,
    parse_scenario,
    scenario_to_toml,
    template,
)
from replayer import api
from replayer.cli import cli
from replayer.recording import write_recording
from tests.conftest import cached_incident
from tests.generator.test_fingerprints import fingerprint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WINDOW_MS = 900_000  # phases are fractions of the window: a shorter one keeps every fault


def _bytes(inc: Incident, tmp: Path) -> bytes:
    path = tmp / f"{inc.scenario}-{os.getpid()}.jsonl"
    write_recording(inc, path)
    return path.read_bytes()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_built_in_scenario_round_trips_through_a_file(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.toml"
    path.write_text(scenario_to_toml(SCENARIOS[name]))
    from_file = generate(str(path), seed=3, duration_ms=WINDOW_MS)
    built_in = generate(name, seed=3, duration_ms=WINDOW_MS)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    assert _bytes(from_file, tmp_path / "a") == _bytes(built_in, tmp_path / "b")


def test_the_template_is_a_valid_scenario(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(template("mine"))
    spec = load_scenario_file(path)
    assert spec.name == "mine" and spec.fault == "slow_query"
    assert [h.kind for h in spec.red_herrings] == ["deploy"]


COMBINED = """
name = "leak_and_reports"
duration = "30m"
[[faults]]
kind = "connection_leak"
[faults.phases]
onset = 0.25
peak = 0.26
recovery = 0.8
recovered = 0.81
[[faults]]
kind = "noisy_neighbour"
[faults.phases]
onset = 0.4
peak = 0.42
recovery = 0.7
recovered = 0.72
"""


@functools.cache
def _combined() -> Incident:
    return generate(parse_scenario(__import__("tomllib").loads(COMBINED)), seed=1)


def test_a_combined_file_shows_both_faults_and_names_each_with_its_phases() -> None:
    inc = _combined()
    both = fingerprint(inc)
    # what tells each fault apart from baseline and from the other is there
    leak_own = {"pool timeouts", "idle in transaction", "oldest transaction",
                "pool timeouts logged"}
    reports_own = {"temp files", "temp files logged", "seq scans of ledger_entries",
                   "sessions of another client"}
    assert leak_own <= fingerprint(cached_incident("connection_leak"))
    assert reports_own <= fingerprint(cached_incident("noisy_neighbour"))
    assert leak_own | reports_own <= both, sorted((leak_own | reports_own) - both)
    faults = inc.truth.faults
    assert [(f.kind, f.primary) for f in faults] == [("connection_leak", True),
                                                     ("noisy_neighbour", False)]
    assert faults[1].component == "metabase"
    leak_onset = next(p.start_ms for p in faults[0].phases if p.name == "onset")
    reports_onset = next(p.start_ms for p in faults[1].phases if p.name == "onset")
    assert leak_onset == inc.truth.onset_ms and reports_onset > leak_onset + 60_000
    queries = {q for _, q in inc.truth.promql}
    assert all(q in queries for f in faults for _, q in f.promql)


def test_a_red_herring_only_file_shows_the_herring_and_no_root_cause(tmp_path: Path) -> None:
    path = tmp_path / "calm.toml"
    path.write_text('name = "calm"\n[[red_herrings]]\nkind = "deploy"\nat = "10m"\n'
                    'version = "1.4.3"\n[[red_herrings]]\nkind = "scrape_gap"\nat = "20m"\n'
                    'length = "45s"\n')
    inc = generate(str(path), seed=1)
    t = inc.truth
    assert (t.root_cause_component, t.root_cause_kind, t.onset_ms) == ("none", "none", None)
    assert [(h.kind, h.start_ms) for h in t.red_herrings] == [("deploy", 600_000),
                                                             ("scrape_gap", 1_200_000)]
    moved = fingerprint(inc)
    assert {"process restarts", "a new service.version"} <= moved
    versions = {s.label("service_version") for s in inc.iter_series("target_info")
                if s.label("job") == "payment-service"}
    assert versions == {"1.4.2", "1.4.3"}
    pg_up = next(s for s in inc.iter_series("up") if s.label("job") == "postgres")
    down = pg_up.t_ms[pg_up.values == 0]
    assert down.min() >= 1_200_000 and down.max() < 1_245_000 and down.size == 3
    # and nothing fails
    assert all(s.values[-1] == 0 for s in inc.iter_series("http_server_request_duration_"
                                                           "seconds_count")
               if s.label("http_response_status_code").startswith("5"))


def test_the_examples_load(tmp_path: Path) -> None:
    combined = load_scenario_file(EXAMPLES / "combined_leak_with_noisy_neighbour.toml")
    assert combined.fault == "connection_leak" and combined.also[0].kind == "noisy_neighbour"
    assert {h.kind for h in combined.red_herrings} == {"deploy", "report_run"}
    day = load_scenario_file(EXAMPLES / "day_with_slow_leak.toml")
    assert day.default_duration_s == 86_400 and day.default_step_s == 60
    inc = generate(day, seed=1, signals=("metrics",))
    starts = next(s for s in inc.iter_series("process_start_time_seconds")
                  if s.label("job") == "payment-service")
    assert np.count_nonzero(np.diff(starts.values)) >= 2  # the leak restarts it again and again
    assert [h.kind for h in inc.truth.red_herrings] == ["report_run", "scrape_gap"]


def test_api_and_cli_take_a_path_or_a_parsed_scenario(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    r = CliRunner().invoke(cli, ["new-scenario", "mine", "-o", str(path)])
    assert r.exit_code == 0, r.output
    again = CliRunner().invoke(cli, ["new-scenario", "mine", "-o", str(path)])
    assert again.exit_code != 0 and "exists" in again.output
    by_path = api.generate(path, seed=2, duration="15m")
    by_spec = api.generate(load_scenario_file(path), seed=2, duration="15m")
    assert by_path.truth == by_spec.truth and by_path.scenario == "mine"
    out = tmp_path / "out.jsonl.gz"
    r = CliRunner().invoke(cli, ["generate", str(path), "--duration", "15m", "-o", str(out)])
    assert r.exit_code == 0 and out.exists(), r.output
    r = CliRunner().invoke(cli, ["new-scenario", "copy", "--from", "disk_full", "-o",
                                 str(tmp_path / "copy.toml")])
    assert r.exit_code == 0, r.output
    assert load_scenario_file(tmp_path / "copy.toml").fault == "disk_full"


BASE = 'name = "x"\n'
MALFORMED = [
    ("", "empty"),
    ("name = [", "not TOML"),
    ("description = 'no name'", "name: missing"),
    ("name = 7", "name: 7 is not a name"),
    ("name = 'Has Spaces'", "name: 'Has Spaces' is not a name"),
    (BASE + "durration = '30m'", "durration: unknown key (did you mean 'duration'?)"),
    (BASE + "duration = '30 minutes'", "duration: needs a length"),
    (BASE + "duration = '10m'\nstep = '7s'", "step: the window (600 s) must be a whole number"),
    (BASE + "[knobs]\npool_sise = 5", "knobs.pool_sise: unknown knob"),
    (BASE + "[knobs]\npool_size = 0", "knobs.pool_size: 0 is out of range"),
    (BASE + "[knobs]\npool_size = 'five'", "knobs.pool_size: needs a number"),
    (BASE + "[knobs]\npool_size = 5.5", "knobs.pool_size: needs a whole number"),
    (BASE + "faults = 'slow_query'", "faults: needs a list of tables"),
    (BASE + "[[faults]]\ncomponent = 'postgres'", "faults[0].kind: missing"),
    (BASE + "[[faults]]\nkind = 'slow_qeury'", "(did you mean 'slow_query'?)"),
    (BASE + "[[faults]]\nkind = 'disk_full'\nseverity = 2", "faults[0].severity: unknown key"),
    (BASE + "[[faults]]\nkind = 'disk_full'\n[faults.phases]\nonset = 0.6\npeak = 0.5",
     "faults[0].phases: phases out of order"),
    (BASE + "[[faults]]\nkind = 'disk_full'\n[faults.phases]\nonset = 1.5",
     "faults[0].phases.onset: 1.5 is outside the window"),
    (BASE + "[[faults]]\nkind = 'disk_full'\n[faults.phases]\nonset = '45m'",
     "faults[0].phases.onset: offset '45m' is past the end"),
    (BASE + "[[faults]]\nkind = 'disk_full'\n[faults.phases]\nonset_range = [0.4, 0.3]",
     "faults[0].phases.onset_range: earliest 0.4 is after latest 0.3"),
    (BASE + "[[faults]]\nkind = 'disk_full'\n[faults.phases]\nstretch = 1.5",
     "faults[0].phases.stretch: needs a number in [0, 0.999]"),
    (BASE + "[[faults]]\nkind = 'disk_full'\n[[faults]]\nkind = 'disk_full'",
     "faults[1].kind: 'disk_full' is already faults[0]"),
    (BASE + "[[faults]]\nkind = 'slow_query'\nprimary = true\n[[faults]]\nkind = 'disk_full'\n"
     "primary = true", "faults: 2 faults say primary = true"),
    (BASE + "[[faults]]\nkind = 'slow_query'\n[faults.knobs]\npool_size = 5\n[[faults]]\n"
     "kind = 'disk_full'\n[faults.knobs]\npool_size = 8",
     "faults[1].knobs.pool_size: 8 contradicts 5"),
    (BASE + "[[faults]]\nkind = 'slow_query'\nidentity = 'postgres'",
     "faults[0].identity: needs a table"),
    (BASE + "[[red_herrings]]\nkind = 'deploi'\nat = 0.2",
     "red_herrings[0].kind: 'deploi' (did you mean 'deploy'?)"),
    (BASE + "[[red_herrings]]\nkind = 'deploy'", "red_herrings[0].at: missing"),
    (BASE + "[[red_herrings]]\nkind = 'scrape_gap'\nat = 0.5\nlength = 'long'",
     "red_herrings[0].length: needs a length"),
]


@pytest.mark.parametrize("text,expected", MALFORMED,
                         ids=[f"case{i}" for i in range(len(MALFORMED))])
def test_a_malformed_file_exits_2_naming_the_key(text: str, expected: str,
                                                 tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioFileError) as err:
        load_scenario_file(path)
    assert all(line.startswith(f"{path}: ") for line in err.value.problems)
    r = CliRunner().invoke(cli, ["inspect", str(path)])
    assert r.exit_code == 2
    assert expected in r.output, r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(
        r.exception, SystemExit)


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\ndurration = 1\n[knobs]\npool_size = 0\n[[faults]]\n'
                    'kind = "nope"\n')
    with pytest.raises(ScenarioFileError) as err:
        load_scenario_file(path)
    assert len(err.value.problems) == 3
