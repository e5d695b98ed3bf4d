from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from replayer.cli import cli
from replayer.recording import read_recording
from tests.conftest import cached_incident


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args))


def test_list_names_every_scenario() -> None:
    r = run("list")
    assert r.exit_code == 0
    for name in ("baseline", "slow_query", "pool_exhaustion"):
        assert name in r.output


def test_generate_then_inspect_json(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl.gz"
    r = run("generate", "slow_query", "--seed", "4", "--duration", "20m", "--step", "15s",
            "-o", str(out))
    assert r.exit_code == 0, r.output
    inc = read_recording(out)
    assert (inc.seed, inc.duration_ms, inc.step_ms) == (4, 1_200_000, 15_000)
    r = run("inspect", str(out), "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["counts"]["samples"] == inc.sample_count
    assert info["counts"]["traces"] == len({bytes(t).hex() for tb in inc.span_tables
                                            for t in tb.trace_id})
    assert info["truth"]["root_cause"] == {
        "component": "postgres", "kind": "missing_index",
        "identity": {"job": "postgres", "relname": "payments", "server.address": "postgres",
                     "service_name": "postgres"}}


def test_inspect_text_shows_window_and_truth() -> None:
    r = run("inspect", "pool_exhaustion")
    assert r.exit_code == 0
    assert "connection_pool_exhaustion" in r.output
    assert "phase peak" in r.output and "example trace" in r.output
    assert "named in the data as job=payment-service" in r.output
    assert "sampling   traces of every request" in r.output
    tail = run("inspect", "pool_exhaustion", "--set", "trace_sample_ratio=0.1")
    assert "sampling   traces of errors=all, other_ratio=0.1, policy=tail" in tail.output


def test_set_knob_changes_the_incident(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert run("generate", "baseline", "--duration", "10m", "-o", str(a)).exit_code == 0
    assert run("generate", "baseline", "--duration", "10m", "--set", "rps_post_payment=40",
               "-o", str(b)).exit_code == 0
    assert read_recording(b).log_line_count > 2 * read_recording(a).log_line_count


def test_unknown_scenario_is_one_clear_line_exit_2() -> None:
    r = run("generate", "slow_qery", "-o", "/dev/null")
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "slow_query" in lines[0] and "Traceback" not in r.output


def test_bad_knob_exit_2() -> None:
    r = run("generate", "baseline", "--set", "pool_size=-3", "-o", "/dev/null")
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "pool_size" in r.output
    r = run("generate", "baseline", "--set", "pool_size", "-o", "/dev/null")
    assert r.exit_code == 2 and "KNOB=VALUE" in r.output


def test_malformed_recording_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "header", "format": "nope"}\n')
    r = run("inspect", str(bad))
    assert r.exit_code == 2
    assert "not a telemetry-replayer recording" in r.output and "Traceback" not in r.output
    missing = run("inspect", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and "cannot open" in missing.output


def test_bad_duration_exit_2() -> None:
    r = run("generate", "baseline", "--duration", "half an hour", "-o", "/dev/null")
    assert r.exit_code == 2 and "--duration" in r.output


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    r = run("plot", "slow_query", "--duration", "20m", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_reads_as_the_user_needs(tmp_path: Path) -> None:
    """Issue 18, defect 8: the phase shading has a legend; with --end the x axis is clock
    time; pending (hundreds) has its own axis beside used / idle (0-15); the flat line at
    the top bucket is named."""
    import matplotlib.dates as mdates

    from replayer.plot import build_figure
    from tests.conftest import cached_incident

    inc = cached_incident("pool_exhaustion")
    end_ns = 1_795_000_000_000_000_000  # 2026-11-18T11:06:40Z
    fig = build_figure(inc, end_ns)
    top, _, pool, _ = fig.axes[:4]
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert {"onset phase", "peak phase", "recovery phase"} <= set(legend)
    assert "top bucket (10 s): a quantile above it reads 10 s" in legend
    # x in clock time: the window's first and last instants
    lo, hi = fig.axes[3].get_xlim()
    first = mdates.num2date(min(line.get_xdata()[0] for line in fig.axes[3].get_lines()),
                            tz=mdates.UTC)
    assert first.strftime("%Y-%m-%dT%H:%M") == "2026-11-18T10:36"
    assert "time (UTC), 2026-11-18" in fig.axes[3].get_xlabel() and lo < hi
    pending_axes = [a for a in fig.axes if any(
        line.get_label() == "pending (right axis)" for line in a.get_lines())]
    assert len(pending_axes) == 1 and pending_axes[0] is not pool
    used = max(max(line.get_ydata()) for line in pool.get_lines())
    assert used <= 15 and pool.get_ylim()[1] < 40  # not flattened under the waiters
    import matplotlib.pyplot as plt

    plt.close(fig)
    plain = build_figure(inc)
    assert plain.axes[3].get_xlabel() == "minutes into the window"
    plt.close(plain)
    out = tmp_path / "p.png"
    r = run("plot", "slow_query", "--duration", "20m", "--end", "2026-11-18T11:00:00Z",
            "-o", str(out))
    assert r.exit_code == 0 and out.read_bytes()[:4] == b"\x89PNG"


def test_load_dry_run_sends_nothing_and_says_what_it_would() -> None:
    r = run("load", "slow_query", "--dry-run", "--end", "2026-01-02T03:04:05Z",
            "--prometheus-url", "http://127.0.0.1:9")
    assert r.exit_code == 0, r.output
    n = len(cached_incident("slow_query").series)
    assert f"would push {n} series" in r.output and "2026-01-02T02:34:05.000Z" in r.output


def test_dry_run_counts_only_the_signals_asked_for_and_speaks_json() -> None:
    """Issue 22, item 7: `--dry-run --signals metrics` counted log lines and spans, and
    --json had no effect on a dry run."""
    inc = cached_incident("slow_query")
    r = run("load", "slow_query", "--dry-run", "--signals", "metrics", "--end",
            "2026-01-02T03:04:05Z")
    assert r.exit_code == 0, r.output
    assert (f"would push {len(inc.series)} series, {inc.sample_count} samples, "
            f"{inc.exemplar_count} exemplars (metrics) for the window") in r.output
    assert "log lines" not in r.output and "spans" not in r.output
    j = run("load", "slow_query", "--dry-run", "--signals", "logs,traces", "--json", "--end",
            "2026-01-02T03:04:05Z")
    body = json.loads(j.output)
    assert body["dry_run"] is True and body["window"]["end"] == "2026-01-02T03:04:05.000Z"
    assert body["would_send"] == {"logs": {"log_lines": inc.log_line_count,
                                           "log_streams": len(inc.log_streams)},
                                  "traces": {"spans": inc.span_count}}


def test_load_rejects_bad_flags_before_any_io() -> None:
    for args, fragment in (
        (["--end", "yesterday"], "RFC 3339"),
        (["--end", "2026-01-02T03:04:05"], "time zone"),
        (["--signals", "metrics,pigeons"], "choose from"),
        (["--prometheus-url", "localhost:9090"], "http://"),
        (["--basic-auth", "nopassword"], "USER:PASSWORD"),
        (["--label", "run"], "NAME=VALUE"),
    ):
        r = run("load", "baseline", "--prometheus-url", "http://127.0.0.1:9", *args) \
            if "--prometheus-url" not in args else run("load", "baseline", *args)
        assert r.exit_code == 2, (args, r.output)
        assert fragment in r.output, (args, r.output)


def test_load_unreachable_prometheus_names_the_fix() -> None:
    r = run("load", "baseline", "--prometheus-url", "http://127.0.0.1:9")
    assert r.exit_code == 4
    assert "cannot reach Prometheus" in r.output and "PROMETHEUS_URL" in r.output


def test_an_end_in_the_future_is_refused_unless_asked_for() -> None:
    """A window ending tomorrow would leave Prometheus refusing its own scrapes until then."""
    import datetime as dt

    tomorrow = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    r = run("load", "baseline", "--duration", "5m", "--end", tomorrow, "--dry-run")
    assert r.exit_code == 2 and "h after now" in r.output and "--allow-future-end" in r.output
    ok = run("load", "baseline", "--duration", "5m", "--end", tomorrow, "--dry-run",
             "--allow-future-end")
    assert ok.exit_code == 0, ok.output
    assert run("load", "baseline", "--duration", "5m", "--dry-run").exit_code == 0


def test_labels_that_would_overwrite_or_break_the_data_are_refused() -> None:
    """`--label __name__=x` and `--label le=1` lost samples; `my-label` failed at the
    server. They are usage errors now, named with the fix."""
    for bad, says in (("__name__=x", "not a label name"), ("le=1", "already has"),
                      ("state=x", "already has"), ("job=other", "already has"),
                      ("my-label=x", "not a label name"), ("1st=x", "not a label name")):
        r = run("load", "baseline", "--duration", "5m", "--dry-run", "--label", bad)
        assert r.exit_code == 2 and says in r.output, (bad, r.output)
    ok = run("load", "baseline", "--duration", "5m", "--dry-run", "--label", "run=ci-42")
    assert ok.exit_code == 0, ok.output


def test_nothing_listening_says_nothing_was_sent_and_how_to_start_one() -> None:
    """Issue 18, defect 5: with no server, the summary read 'sent 15334 samples, accepted
    0 ... 0 requests'. Nothing was sent; it says so, and how to start a local Prometheus."""
    from generator import generate
    from tests.integration.prometheus_server import free_port

    n = generate("baseline", duration_ms=600_000, signals=("metrics",)).sample_count
    r = CliRunner().invoke(cli, ["load", "baseline", "--duration", "10m", "--signals",
                                 "metrics", "--prometheus-url",
                                 f"http://127.0.0.1:{free_port()}"])
    assert r.exit_code == 4, r.output
    assert f"metrics: nothing sent ({n} samples not sent), accepted 0; 0 requests" in r.output
    assert "`replayer stack up` starts a local one" in r.output
    assert f"sent {n} samples" not in r.output


def test_progress_lines_come_in_order_for_every_signal(capsys: pytest.CaptureFixture) -> None:
    """Lanes report from their own threads; the lines must climb, per signal, and a second
    signal must not wait behind the first one's count (issue 18, defect 9)."""
    import threading

    from replayer.cli import _progress_printer
    from replayer.report import SignalReport

    show = _progress_printer()
    metrics = SignalReport("metrics", "samples", sent=40_000)
    logs = SignalReport("logs", "lines", sent=1_000)

    def lane() -> None:
        for _ in range(500):
            metrics.add(accepted=20)
            show(metrics)  # type: ignore[operator]

    threads = [threading.Thread(target=lane) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(10):
        logs.add(accepted=100)
        show(logs)  # type: ignore[operator]
    err = capsys.readouterr().err.splitlines()
    seen: dict[str, list[int]] = {}
    for line in err:
        signal, _, rest = line.strip().partition(": ")
        seen.setdefault(signal, []).append(int(rest.split("/")[0]))
    assert seen["metrics"] == sorted(seen["metrics"]) and len(seen["metrics"]) >= 5
    assert seen["logs"] == [100 * i for i in range(1, 11)]


def test_no_tracked_file_is_ignored() -> None:
    """.gitignore once listed infra/docker-compose.yml and infra/live_app.Dockerfile:
    an edit to them would not show in `git status` on a fresh clone."""
    import shutil
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=root,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "", out.stdout


@pytest.mark.parametrize(("flag", "metrics", "logs"), [((), 4, 2),
                                                        (("--concurrency", "3"), 3, 3)])
def test_concurrency_defaults_per_signal_and_the_flag_sets_every_signal(
        monkeypatch: pytest.MonkeyPatch, flag: tuple[str, ...], metrics: int,
        logs: int) -> None:
    """Without --concurrency, Loki gets the 2 requests in flight it took the most from in
    the benchmarks and the other signals 4; given, it applies to every signal."""
    import replayer.cli as cli_module

    seen = []

    def capture(req, progress=None):  # type: ignore[no-untyped-def]
        seen.append(req)
        raise SystemExit(0)

    monkeypatch.setattr(cli_module, "run_load", capture)
    run("load", "baseline", "--duration", "10m", *flag)
    (req,) = seen
    assert (req.push.concurrency, req.loki.concurrency) == (metrics, logs)
