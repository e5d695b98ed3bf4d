"""Per-signal accounting: what was sent, accepted, rejected (and why), retried, clipped."""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field

_MIMIR_ID = re.compile(r"\(err-mimir-[a-z0-9-]+\)")
_MIMIR_PREFIX = re.compile(r"send data to ingesters: failed pushing to ingester [^:]+: "
                           r"user=[^:]+: ")
_SERIES = re.compile(r"(?:is from series|series:?) (\S+\{.*?\})")
EXAMPLES = 3


def group_reason(reason: str) -> tuple[str, str | None]:
    """(the reason as a group, an example series) for a rejection: a receiver that names
    the series in its error (Mimir: one error per series, 3,239 summary lines for one load)
    is grouped by its documented error ID, and the series kept as an example."""
    m = _MIMIR_ID.search(reason)
    if not m:
        return reason, None
    key = _MIMIR_PREFIX.sub("", reason[:m.end()])
    example = _SERIES.search(reason[m.end():])
    return key, example.group(1) if example else None


@dataclass
class SignalReport:
    signal: str
    unit: str  # samples | lines | spans
    sent: int = 0
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)  # reason -> count
    clipped: int = 0  # left out on purpose (--clip), not lost
    not_sent: int = 0  # never sent (or sent without an answer): the backend failed
    lost_after_accept: int = 0  # --verify: accepted, then not found on the server
    unverified: bool = False  # --verify could not read the backend back
    exemplars_sent: int = 0
    exemplars_accepted: int = 0
    exemplars_dropped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # grouped reason -> a few series it named
    requests: int = 0
    retries: int = 0
    notes: list[str] = field(default_factory=list)
    failed: str | None = None  # the backend could not take this signal at all (and why)
    failure_code: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def lost(self) -> bool:
        return bool(self.rejected_total or sum(self.exemplars_dropped.values())
                    or self.not_sent or self.lost_after_accept
                    or self.accepted + self.rejected_total < self.sent)

    def mark(self) -> tuple[int, int]:
        """(sent, answered) now: what a failed attempt is measured from."""
        with self._lock:
            return self.sent, self.accepted + self.rejected_total

    def fail(self, reason: str, code: int, items: int, mark: tuple[int, int]) -> None:
        """An attempt at ``items`` (begun at ``mark``) failed: what got no answer is not
        sent, and "sent" keeps only what was answered. The first failure's reason is kept;
        the exit code is the worst."""
        with self._lock:
            sent0, done0 = mark
            answered = self.accepted + self.rejected_total - done0
            self.not_sent += max(items - answered, 0)
            self.sent = sent0 + answered
            if not self.failed:
                self.failed = reason
            self.failure_code = max(self.failure_code, code)

    def add(self, accepted: int = 0, rejected: int = 0, reason: str = "",
            exemplars: int = 0, exemplars_ok: bool = True) -> None:
        with self._lock:
            self.accepted += accepted
            if rejected:
                key, example = group_reason(reason)
                self.rejected[key] += rejected
                if example:
                    seen = self.examples.setdefault(key, [])
                    if len(seen) < EXAMPLES and example not in seen:
                        seen.append(example)
            if exemplars_ok:
                self.exemplars_accepted += exemplars

    def count_request(self, retries: int) -> None:
        with self._lock:
            self.requests += 1
            self.retries += retries

    def lines(self) -> list[str]:
        if self.failed and self.requests == 0 and self.accepted == 0:
            # the backend failed before any request: nothing went out, whatever was planned
            out = [f"{self.signal}: nothing sent ({self.not_sent} {self.unit} not sent), "
                   "accepted 0; 0 requests"]
        else:
            unsent = f", not sent {self.not_sent}" if self.not_sent else ""
            out = [f"{self.signal}: sent {self.sent} {self.unit}, accepted {self.accepted}, "
                   f"rejected {self.rejected_total}, clipped {self.clipped}{unsent}; "
                   f"{self.requests} requests, {self.retries} retries"]
        if self.exemplars_sent:
            out.append(f"  exemplars: sent {self.exemplars_sent}, accepted "
                       f"{self.exemplars_accepted}")
        for reason, n in sorted(self.rejected.items()):
            out.append(f"  rejected {n} {self.unit}: {reason}")
            if self.examples.get(reason):
                out.append(f"    e.g. {', '.join(self.examples[reason])}")
        for reason, n in sorted(self.exemplars_dropped.items()):
            out.append(f"  dropped {n} exemplars: {reason}")
        out.extend(f"  note: {n}" for n in self.notes)
        if self.failed:
            out.extend("  " + line for line in f"failed: {self.failed}".splitlines())
        return out

    def as_dict(self) -> dict[str, object]:
        return {"signal": self.signal, "unit": self.unit, "sent": self.sent,
                "accepted": self.accepted, "rejected": dict(self.rejected),
                "clipped": self.clipped, "not_sent": self.not_sent,
                "lost_after_accept": self.lost_after_accept, "unverified": self.unverified,
                "exemplars_sent": self.exemplars_sent,
                "exemplars_accepted": self.exemplars_accepted,
                "exemplars_dropped": dict(self.exemplars_dropped),
                "requests": self.requests, "retries": self.retries, "notes": list(self.notes),
                "failed": self.failed}
