"""Server faults during a load, injected by a loopback proxy in front of a real Prometheus
(issue 17): each checks the exit code, the summary's first line, no traceback, and that
the summary equals what the server stored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from replayer.cli import cli
from tests.conftest import cached_incident

from .faults import fault_proxy
from .prometheus_server import query, running_prometheus
from .test_prometheus_load import fixed_end_ms, iso

pytestmark = pytest.mark.integration


def _stored_samples(url: str, end_ms: int, window_ms: int) -> int:
    """Every raw sample of the window (the range is left-open: a second more takes the
    first step)."""
    got = query(url, f'{{__name__=~".+"}}[{window_ms // 1000 + 1}s]', end_ms / 1000)
    return sum(len(s["values"]) for s in got)


def _summary(output: str) -> tuple[int, int, int, int]:
    """(sent, accepted, rejected, not sent) from the metrics summary line."""
    line = next(x for x in output.splitlines() if x.startswith("metrics: "))
    m = re.match(r"metrics: sent (\d+) samples, accepted (\d+), rejected (\d+), clipped 0"
                 r"(?:, not sent (\d+))?; ", line)
    assert m, line
    sent, accepted, rejected, not_sent = (int(g or 0) for g in m.groups())
    return sent, accepted, rejected, not_sent


def _load_metrics(url: str, end_ms: int, *extra: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["load", "slow_query", "--signals", "metrics", "--end",
                                    iso(end_ms), "--prometheus-url", url, *extra])


def test_a_restart_within_the_retry_budget_loses_nothing(tmp_path: Path) -> None:
    """Prometheus gone for 12 s in the middle of a load (a restart: every request dropped)
    was lost past ~6 s; within --retry-for (60 s) the load waits, says so, and stores all."""
    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    with running_prometheus(tmp_path) as url, \
            fault_proxy(url, make_rule=lambda p: p.outage("/api/v1/write", 12.0)) as (via, px):
        r = _load_metrics(via, end_ms)
        assert r.exit_code == 0, r.output + r.stderr
        assert r.exception is None or isinstance(r.exception, SystemExit)
        assert px.faults > 0
        assert f"metrics: sent {inc.sample_count} samples, accepted {inc.sample_count}, " \
               "rejected 0" in r.output
        assert f"  {via}: connection failed; retrying for up to " in r.stderr
        assert _stored_samples(url, end_ms, inc.duration_ms) == inc.sample_count


def test_an_outage_past_the_budget_is_reported_as_loss(tmp_path: Path) -> None:
    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    with running_prometheus(tmp_path) as url, \
            fault_proxy(url, make_rule=lambda p: p.outage("/api/v1/write", 600.0)) as (via, px):
        r = _load_metrics(via, end_ms, "--retry-for", "3s")
        assert r.exit_code != 0 and "Traceback" not in r.output + r.stderr
        stored = _stored_samples(url, end_ms, inc.duration_ms)
        accepted = int(r.output.split("accepted ")[1].split(",")[0])
        assert accepted == stored  # never more than the server holds
        assert "not sent" in r.output or "rejected" in r.output


THREE_COPIES = ("--duration", "10m", "--instances", "3", "--batch-samples", "1000000")
LONG = ("--duration", "50h", "--step", "60s")  # metrics only: 9 spans of 6 h
LONG_MS = 50 * 3_600_000


def _span_sizes() -> list[int]:
    from generator.chunks import generate_spans

    return [s.sample_count for s in generate_spans("slow_query", 1, LONG_MS, 60_000)]



def _copies(n: int, duration: str) -> list[int]:
    """Samples of each copy `--instances n` loads (copy i is seed 1 + i)."""
    from generator import generate
    from replayer.cli_common import duration_ms

    return [generate("slow_query", seed=1 + i, duration_ms=duration_ms(duration, "d"),
                     signals=("metrics",)).sample_count for i in range(n)]


def test_instances_count_every_copy_that_was_not_sent(tmp_path: Path) -> None:
    """Prometheus gone from the second copy on: the summary said "sent 3,138,498, accepted
    3,138,498" and the other copies appeared nowhere. Every copy not sent is counted as not
    sent, and what is claimed is what the server holds."""
    sizes = _copies(3, "10m")
    end_ms = fixed_end_ms()
    with running_prometheus(tmp_path) as url, fault_proxy(url, make_rule=lambda p: p.outage(
            "/api/v1/write", 3600.0, after=5)) as (via, _px):
        r = _load_metrics(via, end_ms, *THREE_COPIES, "--retry-for", "2s")
        assert r.exit_code == 4, r.output
        assert "Traceback" not in r.output
        sent, accepted, rejected, not_sent = _summary(r.output)
        # copy 1 went whole before the outage; copy 2's batches met it (sent, refused by
        # the dropped connections); copy 3 never got past the preflight (not sent)
        assert accepted == sizes[0] == _stored_samples(url, end_ms, 600_000)
        assert accepted + rejected + not_sent == sum(sizes) and sent == accepted + rejected
        assert not_sent >= sizes[2] and "connection failed" in r.output


def test_instances_pick_a_server_up_again_after_its_restart(tmp_path: Path) -> None:
    """Prometheus restarting for 8 s during the second copy: it comes back within the
    retry budget, and every copy is stored."""
    sizes = _copies(3, "10m")
    end_ms = fixed_end_ms()
    with running_prometheus(tmp_path) as url, fault_proxy(url, make_rule=lambda p: p.outage(
            "/api/v1/write", 8.0, after=2)) as (via, px):
        r = _load_metrics(via, end_ms, *THREE_COPIES)
        assert r.exit_code == 0, r.output
        assert px.faults > 0
        total = sum(sizes)
        assert f"metrics: sent {total} samples, accepted {total}, rejected 0" in r.output
        assert _stored_samples(url, end_ms, 600_000) == total


def test_exemplars_beyond_the_servers_limit_are_reported_before_and_after(
        tmp_path: Path) -> None:
    """A load of 118,118 exemplars reported all accepted; Prometheus keeps 100,000 (a ring
    over every series). The limit is read in the preflight: said before sending, counted
    as dropped in the summary, and the claim equals what the server holds."""
    import requests

    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    limit = 500
    with running_prometheus(tmp_path, max_exemplars=limit) as url:
        r = CliRunner().invoke(cli, ["load", "slow_query", "--signals", "metrics", "--end",
                                     iso(end_ms), "--prometheus-url", url])
        assert r.exit_code == 1, r.output
        over = inc.exemplar_count - limit
        assert (f"this load has {inc.exemplar_count} exemplars and Prometheus keeps at most "
                f"{limit}: the oldest {over} will be overwritten") in r.stderr
        assert f"exemplars: sent {inc.exemplar_count}, accepted {limit}" in r.stdout
        assert f"dropped {over} exemplars: Prometheus keeps at most {limit}" in r.stdout
        got = requests.get(f"{url}/api/v1/query_exemplars", params={
            "query": '{__name__=~".+"}', "start": (end_ms - inc.duration_ms) / 1000,
            "end": end_ms / 1000}, timeout=30).json()["data"]
        assert sum(len(g["exemplars"]) for g in got) == limit
        # every sample is still stored: only exemplars were lost
        assert _stored_samples(url, end_ms, inc.duration_ms) == inc.sample_count


def _ctrl_c(proc) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """SIGINT to a running `replayer load`: it ends within 3 s, exit 130, no traceback."""
    import signal
    import subprocess
    import time

    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()  # not left running (nor its pipes open) for the tests after this one
        out, err = proc.communicate()
        raise AssertionError(f"no exit 30 s after Ctrl-C:\n{out}\n{err}") from None
    took = time.monotonic() - t0
    assert proc.returncode == 130, out + err
    assert took < 3.0, took
    assert "Traceback" not in err and "Aborted!" not in err
    return out, err


@pytest.mark.parametrize("extra", [(), ("--instances", "3"), LONG],
                         ids=["one", "copies", "spans"])
def test_ctrl_c_stops_within_seconds_with_the_summary(tmp_path: Path,
                                                      extra: tuple[str, ...]) -> None:
    """SIGINT during a load printed "Aborted!", exit 1, no summary (and 1 run in 19 hung).
    Now: the requests in hand end, nothing more is sent, the per-signal summary says what
    was stored and what was not sent, exit 130."""
    import os
    import subprocess
    import sys

    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    slow = lambda m, path, p: ("delay", 0.2) if path.startswith("/api/v1/write") else None  # noqa: E731
    spans = extra == LONG
    window_ms = LONG_MS if spans else inc.duration_ms
    with running_prometheus(tmp_path, ooo_window="52h" if spans else "2h") as url, \
            fault_proxy(url, slow) as (via, _px):
        proc = subprocess.Popen(
            [sys.executable, "-m", "replayer.cli", "load", "slow_query", "--signals",
             "metrics", "--end", iso(end_ms), "--prometheus-url", via, "--batch-samples",
             "500", "--concurrency", "2", *extra], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.stderr is not None
        for line in proc.stderr:  # the first progress line: batches are being stored
            if line.startswith("  metrics: "):
                break
        out, err = _ctrl_c(proc)
        m = re.search(r"metrics: sent (\d+) samples, accepted (\d+), rejected 0, clipped 0, "
                      r"not sent (\d+); ", out)
        assert m, out
        sent, accepted, not_sent = map(int, m.groups())
        assert sent == accepted
        assert 0 < accepted < (_span_sizes()[0] if spans else inc.sample_count)
        if spans:  # stopped in the first span: the other 8 were never generated
            assert "stopped by Ctrl-C: 8 of 9 spans were not generated, nor sent" in out
        elif extra:  # the later copies were never generated: said, not counted
            assert "2 of 3 copies were not generated, nor sent" in out
        else:
            assert accepted + not_sent == inc.sample_count
        assert "stopped by Ctrl-C" in out
        assert _stored_samples(url, end_ms, window_ms) == accepted


def test_a_long_window_counts_every_span_not_sent_after_an_outage(tmp_path: Path) -> None:
    """A window loaded span by span, Prometheus gone from a write of the first spans on and
    past the retry budget: the span it took nothing of is reported, the spans after it are
    neither generated nor tried (each would wait out the budget again), and what is
    claimed is what the server holds."""
    sizes = _span_sizes()
    end_ms = fixed_end_ms()
    with running_prometheus(tmp_path, ooo_window="52h") as url, fault_proxy(
            url, make_rule=lambda p: p.outage("/api/v1/write", 3600.0, after=3)) as (via, _):
        r = _load_metrics(via, end_ms, *LONG, "--batch-samples", "1000000", "--retry-for",
                          "2s")
        assert r.exit_code == 1, r.output
        assert "Traceback" not in r.output
        sent, accepted, rejected, not_sent = _summary(r.output)
        stop = re.search(r"the server took none of span (\d) of 9", r.output)
        assert stop, r.output
        k = int(stop.group(1))
        assert 0 < accepted == _stored_samples(url, end_ms, LONG_MS) < sum(sizes[:k])
        # what was generated is accounted for, sample by sample; the rest is said
        assert accepted + rejected + not_sent == sum(sizes[:k]) and sent == accepted + rejected
        assert f"{9 - k} of 9 spans were not generated, nor sent" in r.output


class _SlowSink:
    """A loopback Loki push and OTLP/HTTP traces endpoint that decodes what it stores,
    answering each request 0.2 s late, and a push 0.4 ms a line later still (so a load
    is still going when Ctrl-C comes)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import cramjam
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        from replayer.loki import push_pb2

        self.lines = self.spans = 0
        lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802  (ready, buildinfo, config)
                self.send_response(404 if "config" in self.path else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:  # noqa: N802
                import time

                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                lines = spans = 0
                if self.path.startswith("/loki/"):
                    push = push_pb2.PushRequest.FromString(
                        bytes(cramjam.snappy.decompress_raw(body)))
                    lines = sum(len(st.entries) for st in push.streams)
                else:
                    export = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    spans = sum(len(ss.spans) for rs in export.resource_spans
                                for ss in rs.scope_spans)
                # the server's own slowness, not the test's timing: a log line takes
                # 0.4 ms to write, so logs are still going when Ctrl-C comes, whatever
                # the size of a request (10,000 lines: 4 s)
                time.sleep(0.2 + lines / 2500)
                with lock:
                    sink.lines += lines
                    sink.spans += spans
                self.send_response(204 if self.path.startswith("/loki/") else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_ctrl_c_stops_every_signal_sent_side_by_side(tmp_path: Path) -> None:
    """Logs and traces go out in threads beside the metrics; Ctrl-C reaches only the main
    thread. All three stop within seconds, exit 130, and each signal's summary is what its
    server holds plus what was not sent."""
    import os
    import subprocess
    import sys

    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    slow = lambda m, path, p: ("delay", 0.2) if path.startswith("/api/v1/write") else None  # noqa: E731
    sink = _SlowSink()
    try:
        with running_prometheus(tmp_path) as url, fault_proxy(url, slow) as (via, _px):
            proc = subprocess.Popen(
                [sys.executable, "-m", "replayer.cli", "load", "slow_query", "--end",
                 iso(end_ms), "--prometheus-url", via, "--loki-url", sink.url,
                 "--tempo-url", sink.url, "--tempo-protocol", "http", "--batch-samples",
                 "500", "--concurrency", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            assert proc.stderr is not None
            seen: set[str] = set()
            for line in proc.stderr:  # progress from all three: they go out side by side
                if line.startswith("  ") and ":" in line:
                    seen.add(line.split(":")[0].strip())
                if seen >= {"metrics", "logs", "traces"}:
                    break
            out, err = _ctrl_c(proc)
            stored = {"metrics": _stored_samples(url, end_ms, inc.duration_ms),
                      "logs": sink.lines, "traces": sink.spans}
    finally:
        sink.close()
    planned = {"metrics": inc.sample_count, "logs": inc.log_line_count,
               "traces": inc.span_count}
    for name, unit in (("metrics", "samples"), ("logs", "lines"), ("traces", "spans")):
        m = re.search(rf"{name}: sent (\d+) {unit}, accepted (\d+), rejected 0, clipped 0, "
                      r"not sent (\d+); ", out)
        assert m, out
        sent, accepted, not_sent = map(int, m.groups())
        assert sent == accepted == stored[name] and 0 < accepted < planned[name], name
        assert accepted + not_sent == planned[name], name
    assert "stopped by Ctrl-C" in out


def _swallow_write(nth):  # type: ignore[no-untyped-def]
    """A proxy rule: the ``nth()``-th remote write is answered 204 and not passed on."""
    seen = [0]

    def rule(method: str, path: str, proxy: object) -> object:
        if path.startswith("/api/v1/write"):
            seen[0] += 1
            return "swallow" if seen[0] == nth() else None
        return None
    return rule


def test_verify_finds_what_the_server_accepted_but_did_not_store(tmp_path: Path) -> None:
    """A server can lose what it answered 204 for (Prometheus 2.42 lost samples in ~1 of 10
    multi-hour backfills). --verify counts back what is stored: all of it after a clean
    load; after a write the server 'accepted' and dropped, the shortfall, as a loss."""
    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    with running_prometheus(tmp_path / "a") as url:
        r = CliRunner().invoke(cli, ["load", "slow_query", "--signals", "metrics", "--end",
                                     iso(end_ms), "--prometheus-url", url, "--verify"])
        assert r.exit_code == 0, r.output
        assert f"note: verify: the server holds all {inc.sample_count} samples" in r.output

    with running_prometheus(tmp_path / "b") as url, \
            fault_proxy(url, _swallow_write(lambda: 3)) as (via, px):  # metadata, 2 batches
        r = CliRunner().invoke(cli, ["load", "slow_query", "--signals", "metrics", "--end",
                                     iso(end_ms), "--prometheus-url", via, "--verify"])
        assert px.faults == 1
        assert r.exit_code == 1, r.output
        stored = _stored_samples(url, end_ms, inc.duration_ms)
        m = re.search(r"verify: the server holds (\d+) of (\d+) samples: (\d+) accepted but "
                      r"not stored \(a loss\)", r.output)
        assert m, r.output
        held, expected, short = map(int, m.groups())
        assert (held, expected) == (stored, inc.sample_count) and short == expected - held > 0
        assert f"accepted {inc.sample_count}" in r.output  # the answers said all of it


def test_verify_reads_back_every_copy_of_an_instances_load(tmp_path: Path) -> None:
    """--verify with --instances (refused before): each copy's samples are summed by
    metric name and read back once after the last copy. All three copies stored: all
    counted; one write of the second copy swallowed: its shortfall found, exit 1."""
    from generator import generate

    end_ms = fixed_end_ms()
    per_copy = [generate("slow_query", seed=1 + i, signals=("metrics",)).sample_count
                for i in range(3)]
    args = ["load", "slow_query", "--signals", "metrics", "--end", iso(end_ms),
            "--instances", "3", "--verify"]
    writes = [0]

    def count(method: str, path: str, proxy: object) -> object:
        writes[0] += path.startswith("/api/v1/write")
        return None

    with running_prometheus(tmp_path / "a") as url, fault_proxy(url, count) as (via, _px):
        r = CliRunner().invoke(cli, [*args, "--prometheus-url", via])
        assert r.exit_code == 0, r.output
        assert f"note: verify: the server holds all {sum(per_copy)} samples" in r.output
    with running_prometheus(tmp_path / "b") as url, \
            fault_proxy(url, _swallow_write(lambda: writes[0] // 2)) as (via, px):
        r = CliRunner().invoke(cli, [*args, "--prometheus-url", via])
        assert px.faults == 1
        assert r.exit_code == 1, r.output
        m = re.search(r"verify: the server holds (\d+) of (\d+) samples: (\d+) accepted but "
                      r"not stored \(a loss\)", r.output)
        assert m, r.output
        held, expected, short = map(int, m.groups())
        assert expected == sum(per_copy) and short == expected - held > 0
        assert held == _stored_samples(url, end_ms, cached_incident("slow_query").duration_ms)


def test_two_unreachable_backends_get_one_hint_for_the_rest(tmp_path: Path) -> None:
    """Loki and Tempo missing: each failure named only its own signal to leave out
    (`--signals metrics,traces`, then `--signals metrics,logs`); one hint says what loads."""
    from .prometheus_server import free_port

    inc = cached_incident("slow_query")
    end_ms = fixed_end_ms()
    with running_prometheus(tmp_path) as url:
        r = CliRunner().invoke(cli, [
            "load", "slow_query", "--end", iso(end_ms), "--prometheus-url", url,
            "--loki-url", f"http://127.0.0.1:{free_port()}",
            "--tempo-url", f"http://127.0.0.1:{free_port()}"])
        assert r.exit_code == 4, r.output
        assert f"accepted {inc.sample_count}" in r.output
        assert "hint: logs and traces could not be reached; --signals metrics loads only " \
               "the rest" in r.output
