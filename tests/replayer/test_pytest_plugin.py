"""The pytest plugin, tested with pytester (pytest's own plugin-testing fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.prometheus_server import free_port, running_prometheus

pytestmark = pytest.mark.integration


def test_fixture_loads_the_marked_scenario_with_a_run_label(pytester: pytest.Pytester,
                                                           tmp_path: Path) -> None:
    pytester.makepyfile(test_it="""
        import datetime, time
        import pytest, requests

        @pytest.mark.replayer("pool_exhaustion", seed=3, signals=("metrics",))
        def test_marked(replayed_incident):
            r = replayed_incident
            assert r.incident.scenario == "pool_exhaustion" and r.incident.seed == 3
            assert r.truth.root_cause_kind == "connection_pool_exhaustion"
            run = r.labels["replayer_run"]
            got = requests.get(r.prometheus_url + "/api/v1/query", params={
                "query": 'count(up{replayer_run="%s"})' % run,
                "time": r.window_end.timestamp()}).json()["data"]["result"]
            assert got[0]["value"][1] == "3"  # payment-service, card-processor, postgres
            from replayer import generate
            plain = generate("pool_exhaustion", seed=3).truth.example_trace_ids
            assert r.truth.example_trace_ids and set(r.truth.example_trace_ids).isdisjoint(plain)

        @pytest.mark.parametrize("replayed_incident", ["baseline"], indirect=True)
        def test_indirect(replayed_incident):
            assert replayed_incident.incident.scenario == "baseline"
            assert replayed_incident.truth.onset is None

        END = datetime.datetime.fromtimestamp((time.time() // 60 - 2) * 60,
                                              tz=datetime.timezone.utc)

        @pytest.mark.replayer("baseline", duration="10m", end=END, signals=("metrics",))
        def test_fixed_end_and_duration(replayed_incident):
            assert replayed_incident.window_end == END
            assert replayed_incident.window_start == END - datetime.timedelta(minutes=10)
    """)
    with running_prometheus(tmp_path / "p") as url:
        result = pytester.runpytest("-p", "no:cacheprovider", f"--replayer-prometheus-url={url}",
                                    "--replayer-signals=metrics")
    result.assert_outcomes(passed=3)


def test_ini_and_environment_pick_the_targets(pytester: pytest.Pytester, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_it="""
        def test_default_scenario(replayed_incident):
            assert replayed_incident.incident.scenario == "slow_query"
    """)
    with running_prometheus(tmp_path / "p") as url:
        pytester.makeini(f"[pytest]\nreplayer_prometheus_url = {url}\n"
                         "replayer_signals = metrics\n")
        monkeypatch.setenv("PROMETHEUS_URL", "http://127.0.0.1:9")  # ini wins over env
        result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_unreachable_target_is_an_error_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_it="""
        def test_needs_prometheus(replayed_incident):
            pass
    """)
    dead = f"http://127.0.0.1:{free_port()}"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--replayer-prometheus-url={dead}",
                                "--replayer-signals=metrics")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*replayed_incident: unreachable target*cannot reach "
                                 "Prometheus*--replayer-skip-unreachable*"])
    # the plugin's own options, not the CLI's (issue 18, defect 9)
    text = result.stdout.str()
    assert "--replayer-prometheus-url / PROMETHEUS_URL" in text
    assert " --prometheus-url" not in text
    skipped = pytester.runpytest("-p", "no:cacheprovider", f"--replayer-prometheus-url={dead}",
                                 "--replayer-signals=metrics", "--replayer-skip-unreachable",
                                 "-rs")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(["*unreachable target*"])


def test_fixture_takes_a_scenario_file_or_a_parsed_one(pytester: pytest.Pytester,
                                                       tmp_path: Path) -> None:
    """A path to a scenario file, or the Scenario parsed from it, in place of a name."""
    spec = tmp_path / "calm_deploy.toml"
    spec.write_text('name = "calm_deploy"\nduration = "10m"\n[[red_herrings]]\n'
                    'kind = "deploy"\nat = "4m"\n')
    pytester.makepyfile(test_it=f"""
        import pytest
        from generator.specfile import load_scenario_file

        SPEC = {str(spec)!r}

        @pytest.mark.replayer(SPEC, signals=("metrics",))
        def test_by_path(replayed_incident):
            r = replayed_incident
            assert r.incident.scenario == "calm_deploy"
            assert [h[0] for h in r.truth.red_herrings] == ["deploy"]
            assert r.window_start < r.truth.red_herrings[0][1] < r.window_end
            assert r.truth.root_cause_kind == "none"

        @pytest.mark.replayer(load_scenario_file(SPEC), signals=("metrics",))
        def test_by_spec(replayed_incident):
            assert replayed_incident.incident.scenario == "calm_deploy"
    """)
    with running_prometheus(tmp_path / "p") as url:
        result = pytester.runpytest("-p", "no:cacheprovider", f"--replayer-prometheus-url={url}",
                                    "--replayer-signals=metrics")
    result.assert_outcomes(passed=2)


def test_cli_options_in_reasons_become_the_plugins() -> None:
    from replayer.pytest_plugin import for_plugin

    assert for_plugin("point --prometheus-url / PROMETHEUS_URL at it, or --signals logs") == \
        "point --replayer-prometheus-url / PROMETHEUS_URL at it, or --replayer-signals logs"
    assert for_plugin("--replayer-loki-url stays") == "--replayer-loki-url stays"
