"""HTTP transport: bytes in, a plain response out. Knows nothing of metrics or logs.

Retry policy (written once, per protocol spec): retry 5xx, 429 and failed connections with
exponential backoff and jitter, honouring ``Retry-After``, for up to a time budget
(``--retry-for``, a minute by default: long enough for a server's restart); never other
4xx. A protocol can mark some 5xx answers as final (Prometheus 2.42 answers "too old
sample" with 500). While a request waits, ``notify`` hears why, every few seconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from .errors import AuthError, TlsError, TransportError

AUTH_FIX = ("  fix: pass the credentials the server expects (--basic-auth USER:PASSWORD, "
            "--bearer-token, --header 'Name: value'), or the tenant (--tenant, sent as "
            "X-Scope-OrgID: Mimir, Loki and Tempo in multi-tenant mode answer 401 without it)")
TLS_FIX = ("  fix: --tls-ca FILE with the CA that signed the server's certificate (or "
           "--insecure-skip-verify to not check it, for a test server only)")


def auth_error(method: str, url: str, status: int, body: str) -> AuthError:
    word = "Unauthorized" if status == 401 else "Forbidden"
    return AuthError(f"{method} {url}: HTTP {status} {word} ({body.strip()[:200]}): the "
                     "server wants authentication.\n" + AUTH_FIX)


@dataclass(frozen=True)
class TargetConfig:
    """Where and how to reach one backend; resolved once at the CLI edge."""

    url: str
    tenant: str | None = None
    basic_auth: tuple[str, str] | None = None
    bearer_token: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    ca_file: str | None = None
    client_cert: tuple[str, str] | None = None
    insecure_skip_verify: bool = False
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        """Credentials written into the URL (``http://user:pw@host``) become basic auth and
        leave the URL, so no message, summary or recording header ever shows them."""
        parts = urlsplit(self.url)
        if "@" not in parts.netloc:
            return
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        object.__setattr__(self, "url", urlunsplit(parts._replace(netloc=host)))
        if self.basic_auth is None and user:
            object.__setattr__(self, "basic_auth", (unquote(user), unquote(password)))

    def auth_headers(self) -> dict[str, str]:
        out = dict(self.headers)
        if self.tenant:
            out["X-Scope-OrgID"] = self.tenant
        if self.bearer_token:
            out["Authorization"] = f"Bearer {self.bearer_token}"
        return out


@dataclass(frozen=True)
class Response:
    status: int
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)
    raw: bytes = b""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry until ``deadline_s`` has passed since the first attempt (and, when set, at most
    ``max_attempts`` times in all)."""

    max_attempts: int | None = None
    initial_backoff_s: float = 0.25
    max_backoff_s: float = 5.0
    deadline_s: float = 60.0

    def more(self, attempt: int) -> bool:
        """Whether attempt number ``attempt + 1`` (0-based ``attempt`` just failed) may go."""
        return self.max_attempts is None or attempt + 1 < self.max_attempts

    def backoff(self, attempt: int, retry_after: str | None, rng: random.Random) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff_s * 3)
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        base = min(self.initial_backoff_s * (2 ** attempt), self.max_backoff_s)
        return base * (0.5 + rng.random() / 2)


def is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


class HttpTransport:
    """POST/GET with keep-alive and a bounded connection pool."""

    def __init__(self, target: TargetConfig, pool_size: int = 8,
                 policy: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None,
                 notify: Callable[[str], None] | None = None) -> None:
        self.target = target
        self.policy = policy or RetryPolicy()
        self.waiting = WaitNotices(notify, clock)
        # set when a request spent the whole budget failing: the next ones try once, not
        # another budget each (a dead server would cost a minute per batch); any answer
        # that is not a failure clears it
        self.gave_up = False
        # set on Ctrl-C: a waiting request stops waiting, no new attempt starts
        self.cancelled = threading.Event()
        self.sleep, self.clock = sleep, clock
        self.rng = rng or random.Random()
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if target.basic_auth:
            self.session.auth = target.basic_auth
        if target.insecure_skip_verify:
            self.session.verify = False
            _quiet_insecure_warnings()
        elif target.ca_file:
            self.session.verify = target.ca_file
        if target.client_cert:
            self.session.cert = target.client_cert
        self.session.headers.update(target.auth_headers())
        # requests would scan the environment for proxies and .netrc on every request
        # (about a millisecond each); resolve the proxies once, here, instead.
        self.session.proxies.update(requests.utils.get_environ_proxies(target.url))
        self.session.trust_env = False

    def url(self, path: str) -> str:
        """``path`` below the target URL; an absolute URL is taken as it is."""
        if path.startswith(("http://", "https://")):
            return path
        return self.target.url.rstrip("/") + "/" + path.lstrip("/")

    def get(self, path: str, params: object = None,
            headers: Mapping[str, str] | None = None) -> Response:
        """One GET (no retries: reads are cheap to repeat by the caller)."""
        return self._once("GET", path, params=params, headers=dict(headers or {}))

    def _once(self, method: str, path: str, **kw: object) -> Response:
        try:
            r = self.session.request(method, self.url(path), timeout=self.target.timeout_s,
                                     **kw)  # type: ignore[arg-type]
        except requests.exceptions.SSLError as exc:
            raise TlsError(f"{method} {self.url(path)}: TLS failed: {_tls_reason(exc)}"
                                 f"\n{TLS_FIX}") from None
        except requests.ConnectionError:
            raise TransportError(f"{method} {self.url(path)}: cannot connect (refused or "
                                 "unreachable)") from None
        except requests.Timeout:
            raise TransportError(f"{method} {self.url(path)}: no answer within "
                                 f"{self.target.timeout_s:g} s") from None
        except requests.RequestException as exc:
            raise TransportError(f"{method} {self.url(path)} failed: {exc}") from None
        if r.status_code in (401, 403):
            raise auth_error(method, self.url(path), r.status_code, r.text)
        return Response(r.status_code, r.text, dict(r.headers), r.content)

    def post(self, path: str, body: bytes, headers: Mapping[str, str],
             final: Callable[[Response], bool] = lambda r: False) -> tuple[Response, int]:
        """POST with retries; returns the last response and how many retries it took.

        ``final(response)`` marks a retryable-looking answer as not worth retrying.
        """
        started = self.clock()
        attempt = 0
        while True:
            try:
                r = self.session.post(self.url(path), data=body, headers=dict(headers),
                                      timeout=self.target.timeout_s)
                resp = Response(r.status_code, r.text, dict(r.headers), r.content)
            except requests.exceptions.SSLError as exc:
                # not worth retrying: the certificate will not change in a minute
                raise TlsError(f"POST {self.url(path)}: TLS failed: {_tls_reason(exc)}"
                                     f"\n{TLS_FIX}") from None
            except requests.ConnectionError as exc:
                resp = Response(0, f"connection failed: {exc}")
            except requests.Timeout:
                resp = Response(0, f"no answer within {self.target.timeout_s} s")
            except requests.RequestException as exc:
                # the answer broke off (a reset after the status line: ChunkedEncodingError)
                # or could not be decoded: the server may or may not have stored the batch;
                # re-sending is safe (every backend takes an identical entry twice as once)
                resp = Response(0, f"the answer broke off: {type(exc).__name__}: {exc}")
            if resp.status in (401, 403):
                raise auth_error("POST", self.url(path), resp.status, resp.body)
            retry = (resp.status == 0 or is_retryable(resp.status)) and not final(resp)
            if not retry:
                self.gave_up = False
                return resp, attempt
            if not self.policy.more(attempt):
                return resp, attempt
            wait = self.policy.backoff(attempt, resp.headers.get("Retry-After"), self.rng)
            left = self.policy.deadline_s - (self.clock() - started)
            if wait > left or self.gave_up:
                self.gave_up = True
                return resp, attempt
            if self.cancelled.is_set():
                return resp, attempt
            self.waiting.say(self.target.url, _why(resp), left)
            if self.sleep is time.sleep:
                if self.cancelled.wait(wait):  # Ctrl-C ends the wait at once
                    return resp, attempt
            else:
                self.sleep(wait)
            attempt += 1

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        self.session.close()


def _tls_reason(exc: Exception) -> str:
    text = str(exc)
    for known in ("certificate verify failed", "hostname mismatch", "wrong version number",
                  "self-signed certificate", "certificate has expired"):
        if known in text:
            start = text.index(known)
            return text[start:].split("')")[0].split("(_ssl")[0].strip(" :")
    return text[:200]


def _quiet_insecure_warnings() -> None:
    """urllib3 warns on every unverified request (ten lines for one load): the user asked
    for it, and the CLI says it once instead."""
    import urllib3

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def _why(resp: Response) -> str:
    if resp.status == 0:
        return resp.body.split(":", 1)[0] if resp.body.startswith("connection failed") \
            else resp.body[:120]
    return f"HTTP {resp.status}"


class WaitNotices:
    """What a retrying request says while it waits: the first time after the first retry,
    then at most every ``every_s`` seconds per target (lanes retry at once; one line is
    enough)."""

    def __init__(self, notify: Callable[[str], None] | None,
                 clock: Callable[[], float] = time.monotonic, every_s: float = 5.0) -> None:
        self.notify, self.clock, self.every_s = notify, clock, every_s
        self.last: float | None = None
        import threading

        self.lock = threading.Lock()

    def say(self, where: str, why: str, left_s: float) -> None:
        if self.notify is None:
            return
        with self.lock:
            now = self.clock()
            if self.last is not None and now - self.last < self.every_s:
                return
            self.last = now
        self.notify(f"{where}: {why}; retrying for up to {left_s:.0f} s more (--retry-for)")


class Pacer:
    """A token bucket (bytes for Loki, samples for Mimir): ``burst`` tokens at most (one
    second's worth by default), waits through an injected sleep."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, burst: float | None = None) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.burst = rate if burst is None else burst
        self.tokens = self.burst
        self.last = clock()
        self.lock = threading.Lock()
        self.waited = 0.0

    def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            self.tokens -= n
            if self.tokens < 0:
                wait = -self.tokens / self.rate
                self.waited += wait
                self.sleep(wait)
