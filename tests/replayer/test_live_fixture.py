"""The committed fixture recorded from a real live_app + PostgreSQL run (slow_query)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from generator.texts import PG_SELECT_BY_KEY, SELECT_BY_KEY
from replayer.recording import read_recording

FIXTURE = Path(__file__).resolve().parents[2] / "recordings" / "live_slow_query_postgres.jsonl.gz"


@pytest.fixture(scope="module")
def live():  # type: ignore[no-untyped-def]
    return read_recording(FIXTURE)


def test_header_says_where_it_comes_from(live) -> None:  # type: ignore[no-untyped-def]
    source = dict(live.source)
    assert source["kind"] == "captured from a live app"
    assert source["database"].startswith("postgres (PostgreSQL) 15")
    assert source["script"] == "scripts/record-live-fixture.py"
    assert "slow_query" in source["incident_modes"]
    assert int(source["seed_rows"]) >= 1_000_000
    assert live.truth.root_cause_kind == "slow_query"
    assert live.truth.onset_ms is not None and live.truth.recovery_ms is not None


def test_the_incident_shows_in_every_signal(live) -> None:  # type: ignore[no-untyped-def]
    onset, recovery = live.truth.onset_ms, live.truth.recovery_ms
    selects = [(int(t.start_ns[i]) // 10**6, int(t.end_ns[i] - t.start_ns[i]) / 1e9)
               for t in live.span_tables for i in range(len(t)) if t.name[i] == "SELECT payments"]
    during = [d for s, d in selects if onset + 2000 <= s < recovery - 2000]
    before = [d for s, d in selects if s < onset - 2000]
    assert during and before
    # the index is gone: PostgreSQL scans the whole table for the same statement
    assert np.median(during) > 20 * np.median(before)
    statements = {dict(t.attributes[i]).get("db.statement") for t in live.span_tables
                  for i in range(len(t)) if t.name[i] == "SELECT payments"}
    assert SELECT_BY_KEY in statements and not any("pg_sleep" in s for s in statements if s)
    pg = [line for s in live.log_streams if dict(s.labels)["service_name"] == "postgres"
          for line in s.lines]
    assert any("duration:" in line and PG_SELECT_BY_KEY in line for line in pg)
    counts = [s for s in live.series if s.name == "http_server_request_duration_seconds_count"
              and s.label("http_route") == "/payment"]
    assert counts and all(np.all(np.diff(s.values) >= 0) for s in counts)
    traces = {bytes(t.trace_id[i]).hex() for t in live.span_tables for i in range(len(t))}
    assert set(live.truth.example_trace_ids) <= traces
