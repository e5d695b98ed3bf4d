"""Errors carry their exit code; only the CLI prints them."""

from __future__ import annotations


class ReplayerError(Exception):
    """Base class: ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(ReplayerError, ValueError):
    """Bad input from the user (flags, files, knobs)."""

    exit_code = 2


class RecordingError(UsageError):
    """A recording file that cannot be read; the message names the line and the problem."""


class PreflightError(ReplayerError):
    """The target cannot take what we would send; the message names the fix."""

    exit_code = 3


class TransportError(ReplayerError):
    """A target could not be reached or kept failing."""

    exit_code = 4


class DataLossError(ReplayerError):
    """Something was not accepted; the summary says what and why."""

    exit_code = 1


class AuthError(TransportError):
    """The server answered 401 or 403: credentials or the tenant are missing or wrong."""

    exit_code = 5


class TlsError(TransportError):
    """The TLS handshake failed (a certificate that cannot be verified, most often)."""


class Interrupted(ReplayerError):
    """Stopped by Ctrl-C: what was sent is in the summary; the rest is not sent."""

    exit_code = 130
