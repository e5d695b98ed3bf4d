"""Flag parsing shared by the `replayer` commands (validated before any I/O)."""

from __future__ import annotations

import re

from .errors import UsageError
from .load import SIGNALS
from .prometheus import parse_prom_duration
from .timeshift import iso  # noqa: F401  (the commands take it from here)
from .transport import TargetConfig


def duration_ms(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    try:
        ms = parse_prom_duration(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a duration like 30m, 1h or 15s") from None
    if ms <= 0:
        raise UsageError(f"{flag} must be positive, got {value!r}")
    return ms


def knobs(pairs: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {pair!r}: expected KNOB=VALUE, e.g. --set rps_post_payment=12")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def target(url: str, tenant: str | None, basic_auth: str | None, bearer: str | None,
            headers: tuple[str, ...], ca: str | None, cert: str | None, key: str | None,
            insecure: bool) -> TargetConfig:
    auth = None
    if basic_auth:
        user, sep, password = basic_auth.partition(":")
        if not sep:
            raise UsageError("--basic-auth needs USER:PASSWORD")
        auth = (user, password)
    hdrs = []
    for h in headers:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {h!r}: expected 'Name: value'")
        if any(c in h for c in "\r\n\0") or not _TOKEN.fullmatch(name.strip()):
            # a CR or LF would split the request into two (header injection)
            raise UsageError(f"--header {h!r}: a header name is letters, digits and -, and "
                             "neither name nor value may hold a line break")
        hdrs.append((name.strip(), value.strip()))
    if (cert is None) != (key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    check_url(url)
    return TargetConfig(url=url, tenant=tenant, basic_auth=auth, bearer_token=bearer,
                        headers=tuple(hdrs), ca_file=ca,
                        client_cert=(cert, key) if cert and key else None,
                        insecure_skip_verify=insecure)


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token


def check_url(url: str, flag: str = "target URL") -> None:
    """http(s)://host[:port][/path], checked before any I/O: a URL with a space, a port past
    65535 or no host was a transport failure (exit 4), not bad input (exit 2)."""
    from urllib.parse import urlsplit

    if not url.startswith(("http://", "https://")):
        raise UsageError(f"{flag} {url!r} must start with http:// or https://")
    if any(c.isspace() for c in url):
        raise UsageError(f"{flag} {url!r} holds a space or line break")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{flag} {url!r}: the port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise UsageError(f"{flag} {url!r} names no host")
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"{flag} {url!r}: the port must be a number from 1 to 65535")


def signals(value: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in value.split(",") if s.strip())
    bad = [s for s in chosen if s not in SIGNALS]
    if bad or not chosen:
        raise UsageError(f"--signals {value!r}: choose from {', '.join(SIGNALS)}")
    return chosen


