"""Bad input and misleading answers (issue 17): each case checks the exit code, the first
line of the message, and that no traceback reaches the user."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from replayer.cli import cli


def run(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, list(args))


def first_error_line(r) -> str:  # type: ignore[no-untyped-def]
    assert "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return next(line for line in r.output.splitlines() if line.startswith("error: "))


@pytest.mark.parametrize("args, code, start", [
    (["--prometheus-url", "http://127.0.0.1:99999"], 2,
     "error: target URL 'http://127.0.0.1:99999': the port must be a number from 1 to 65535"),
    (["--prometheus-url", "http://prom host:9090"], 2,
     "error: target URL 'http://prom host:9090' holds a space or line break"),
    (["--prometheus-url", "http://:9090"], 2, "error: target URL 'http://:9090' names no host"),
    (["--header", "X-Evil: 1\r\nX-Injected: 2"], 2, "error: --header 'X-Evil: 1\\r\\nX-Inj"),
    (["--header", "Bad Name: 1"], 2, "error: --header 'Bad Name: 1': a header name is"),
    (["--set", "pool_size=inf"], 2,
     "error: knob 'pool_size' needs a finite number in [1, 1000], got 'inf'"),
    (["--set", "pool_size=1e400"], 2, "error: knob 'pool_size' needs a finite number"),
    (["--end", "9999-12-31T23:59:59Z", "--allow-future-end"], 2,
     "error: --end '9999-12-31T23:59:59Z' is outside 1970-2106"),
    (["--end", "0001-01-01T00:00:00Z"], 2, "error: --end '0001-01-01T00:00:00Z' is outside"),
    (["--retry-for", "a while"], 2, "error: --retry-for 'a while' is not a duration"),
])
def test_bad_input_is_refused_before_any_io(args: list[str], code: int, start: str) -> None:
    r = run("load", "slow_query", "--signals", "metrics", "--dry-run", *args)
    assert r.exit_code == code, r.output
    assert first_error_line(r).startswith(start), first_error_line(r)


class _Answer(BaseHTTPRequestHandler):
    status = 200

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = b"no org id\n" if self.status == 401 else b"{}"
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _any  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _server(status: int = 200, context: ssl.SSLContext | None = None) -> Iterator[int]:
    handler = type("H", (_Answer,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_401_names_authentication_and_the_tenant_with_its_own_exit_code() -> None:
    """A 401 read "not Prometheus?" and exit 4 (unreachable): it is authentication."""
    with _server(401) as port:
        r = run("load", "slow_query", "--signals", "metrics",
                "--prometheus-url", f"http://127.0.0.1:{port}")
    assert r.exit_code == 5, r.output
    text = r.output
    assert "HTTP 401 Unauthorized (no org id): the server wants authentication" in text
    assert "--tenant" in text and "--basic-auth" in text and "not Prometheus?" not in text
    assert "cannot reach" not in text and "Traceback" not in text
    assert "incident   onset" not in text  # nothing stored: no "where to look"


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not on PATH (Debian package openssl) to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True,
                   timeout=60)
    return cert, key


def test_a_certificate_it_cannot_verify_says_tls_and_tls_ca(self_signed) -> None:  # type: ignore[no-untyped-def]
    """It read "refused or unreachable"; it is the certificate, and --tls-ca fixes it."""
    cert, key = self_signed
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with _server(200, ctx) as port:
        url = f"https://127.0.0.1:{port}"
        r = run("load", "slow_query", "--signals", "metrics", "--prometheus-url", url)
        assert r.exit_code == 4, r.output
        line = next(x for x in r.output.splitlines() if x.strip().startswith("failed: "))
        assert "TLS failed: certificate verify failed" in line, line
        assert first_error_line(r) == "error: not everything was stored (see above)"
        assert "--tls-ca FILE" in r.output and "refused or unreachable" not in r.output
        # with the CA, the same server is reached (and answers what it answers)
        trusted = run("load", "slow_query", "--signals", "metrics", "--prometheus-url", url,
                      "--tls-ca", str(cert), "--retry-for", "0s")
        assert "TLS failed" not in trusted.output and "Traceback" not in trusted.output
        skipped = run("load", "slow_query", "--signals", "metrics", "--prometheus-url", url,
                      "--insecure-skip-verify", "--retry-for", "0s")
    assert "TLS failed" not in skipped.output
    assert skipped.output.count("certificates are not checked") == 1
    assert "InsecureRequestWarning" not in skipped.output


@pytest.mark.parametrize("args, need", [
    (["--duration", "100d", "--signals", "metrics,logs"], "372.4 GiB"),
    (["--set", "rps_post_payment=5000", "--set", "rps_get_payment=5000"], "50.5 GiB"),
    (["--duration", "8h", "--max-memory", "1GB"], "1.4 GiB"),
])
def test_a_window_the_generator_cannot_hold_is_refused_with_the_estimate(
        args: list[str], need: str) -> None:
    """Issue 17, defect 9: 100 days of metrics were killed by the kernel at 23 GB, two rps
    knobs at their maximum reached 9.6 GB in 120 s. What cannot be bounded is refused up
    front (the estimate needs no simulation), with the estimate and the fixes (a long
    metrics-only window goes span by span: see test_long_windows.py)."""
    import time

    t0 = time.monotonic()
    r = run("load", "slow_query", "--dry-run", *args, "--max-memory",
            args[-1] if args[-2] == "--max-memory" else "16GB")
    assert time.monotonic() - t0 < 10
    assert r.exit_code == 2, r.output
    line = first_error_line(r)
    assert line.startswith(f"error: generating slow_query for this window needs about {need}")
    assert "a shorter --duration" in r.output
    if "100d" in args:
        assert "--signals metrics" in r.output  # the way to load it in bounded memory


def test_the_estimate_bounds_what_generation_really_takes() -> None:
    """The estimate errs high: a real 2 h generation stays below it (peak RSS of this
    process grows by less than the estimate)."""
    import resource

    from generator import estimate_memory, generate

    need, _, _ = estimate_memory("slow_query", 7_200_000)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    inc = generate("slow_query", duration_ms=7_200_000)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert inc.sample_count > 0
    assert after - before < need


@pytest.mark.parametrize("command", [["generate", "slow_query", "-o", "never.jsonl.gz"],
                                     ["inspect", "slow_query"]])
def test_generate_and_inspect_refuse_a_window_they_cannot_hold(
        command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """They build every signal of the whole window, so 100 days are refused before any
    generating, like load's (which takes a metrics-only one span by span)."""
    monkeypatch.chdir(tmp_path)
    r = run(*command, "--duration", "100d")
    assert r.exit_code == 2, r.output
    assert first_error_line(r).startswith(
        "error: generating slow_query for this window needs about 372.4 GiB")
    assert not (tmp_path / "never.jsonl.gz").exists()
