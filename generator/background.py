"""Work on the database that is not payment-service's: a reporting job and other sessions.

The reporting job scans ``payments`` every ``REPORT_PERIOD_S``; its phase and each run's
delay are drawn from the seed, so its scans land anywhere relative to an incident's onset
(an artefact that lined up with every onset would point an investigator at it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import frozen_array

REPORT_PERIOD_S = 300.0
CHECKPOINT_TIMEOUT_S = 300.0  # PostgreSQL's checkpoint_timeout
CHECKPOINT_SPREAD = 0.9  # checkpoint_completion_target


@dataclass(frozen=True)
class Background:
    scan_start_s: np.ndarray  # the reporting job's sequential scans of payments
    scan_end_s: np.ndarray
    joined_rows: np.ndarray  # rows the report also reads from other tables (its date range)
    other_tx_per_s: float  # short transactions of other sessions (admin, dashboards)
    checkpoint_start_s: np.ndarray  # timed checkpoints (the server's own clock: any phase)


def background(duration_s: float, rng: np.random.Generator) -> Background:
    phase = rng.random() * REPORT_PERIOD_S
    runs = np.arange(phase - REPORT_PERIOD_S, duration_s, REPORT_PERIOD_S)
    start = runs + rng.gamma(2.0, 4.0, runs.shape[0])  # cron and queue delay, seconds
    took = 1.1 * np.exp(0.25 * rng.standard_normal(runs.shape[0]))
    keep = (start >= 0.0) & (start < duration_s)
    joined = rng.integers(40_000, 400_000, runs.shape[0])
    other = float(0.3 + 0.2 * rng.random())
    cp = np.arange(rng.random() * CHECKPOINT_TIMEOUT_S - 2 * CHECKPOINT_TIMEOUT_S, duration_s,
                   CHECKPOINT_TIMEOUT_S)
    return Background(frozen_array(start[keep], np.float64),
                      frozen_array((start + took)[keep], np.float64),
                      frozen_array(joined[keep], np.int64), other, frozen_array(cp, np.float64))


def with_runs(bg: Background, starts: list[float]) -> Background:
    """The reporting job run once more by hand at each of ``starts`` (s): a scan like its
    scheduled ones."""
    start = np.concatenate([bg.scan_start_s, np.asarray(starts, np.float64)])
    end = np.concatenate([bg.scan_end_s, np.asarray(starts, np.float64) + 1.2])
    joined = np.concatenate([bg.joined_rows, np.full(len(starts), 180_000, np.int64)])
    order = np.argsort(start, kind="stable")
    return Background(frozen_array(start[order], np.float64), frozen_array(end[order], np.float64),
                      frozen_array(joined[order], np.int64), bg.other_tx_per_s,
                      bg.checkpoint_start_s)
