"""`replayer load` of a long metrics-only window: generated and pushed span by span."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from generator.chunks import generate_spans
from replayer.cli import cli

HOUR_MS = 3_600_000


def test_dry_run_counts_every_span() -> None:
    """The counts a dry run gives are the whole window's (every span generated and
    counted), not the last span's."""
    r = CliRunner().invoke(cli, ["load", "slow_query", "--dry-run", "--signals", "metrics",
                                 "--duration", "50h", "--step", "60s", "--json",
                                 "--end", "2026-01-02T03:04:00Z"])
    assert r.exit_code == 0, r.output
    would = json.loads(r.output)["would_send"]["metrics"]
    spans = list(generate_spans("slow_query", 1, 50 * HOUR_MS, 60_000))
    assert len(spans) == 9
    assert would["samples"] == sum(s.sample_count for s in spans)
    assert would["exemplars"] == sum(s.exemplar_count for s in spans)
    assert would["series"] == len({x.labels for s in spans for x in s.series})
    # a whole window of the same length would hold as many scrapes of every series
    assert would["samples"] > 370 * 3000


def test_a_short_or_mixed_window_is_generated_whole() -> None:
    from replayer.load import LoadRequest, _spans_of

    assert _spans_of(LoadRequest("slow_query", duration_ms=50 * HOUR_MS,
                                 signals=("metrics",))) is not None
    assert _spans_of(LoadRequest("slow_query", duration_ms=24 * HOUR_MS,
                                 signals=("metrics",))) is None
    assert _spans_of(LoadRequest("slow_query", duration_ms=50 * HOUR_MS,
                                 signals=("metrics", "logs"))) is None
    assert _spans_of(LoadRequest("recordings/slow_query.jsonl.gz",
                                 signals=("metrics",))) is None


def test_a_span_that_cannot_be_generated_ends_the_load_with_the_reason(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A dry run stops with exit 2 and the reason; nothing is sent."""
    import generator.chunks as chunks

    monkeypatch.setattr(chunks, "MAX_IN_FLIGHT", 5_000)
    r = CliRunner().invoke(cli, ["load", "lock_contention", "--dry-run", "--signals",
                                 "metrics", "--duration", "50h", "--step", "60s",
                                 "--end", "2026-01-02T03:04:00Z"])
    assert r.exit_code == 2, r.output
    assert "requests in flight at once" in r.output and "Traceback" not in r.output


def test_an_unreachable_server_ends_a_long_load_at_the_first_span() -> None:
    """Nothing listening: the first span's preflight fails (exit 4, the fix), and the other
    spans are neither generated nor tried, which the summary says."""
    from replayer.stack import free_port

    url = f"http://127.0.0.1:{free_port()}"
    r = CliRunner().invoke(cli, ["load", "slow_query", "--signals", "metrics", "--duration",
                                 "50h", "--step", "60s", "--prometheus-url", url,
                                 "--retry-for", "0s", "--end", "2026-01-02T03:04:00Z"])
    assert r.exit_code == 4, r.output
    assert "Traceback" not in r.output
    assert "8 of 9 spans were not generated, nor sent" in r.output
    first = next(iter(generate_spans("slow_query", 1, 50 * HOUR_MS, 60_000)))
    assert f"nothing sent ({first.sample_count} samples not sent)" in r.output
