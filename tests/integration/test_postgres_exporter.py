"""Debian's prometheus-postgres-exporter against a real PostgreSQL: what the live fixtures'
`postgres` job is made of, and what `compare` maps between it and the generator's v0.16."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import requests

from generator.model import Series, frozen_array
from live_app import local_postgres
from replayer.compare import _label_keys
from replayer.record.assemble import recorded_incident
from replayer.record.capture import Scraper

from .postgres_server import running_postgres


def _exporter() -> str:
    try:
        return local_postgres.exporter_bin()
    except local_postgres.ExporterMissing as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def test_the_exporter_scrapes_the_database_as_the_fixtures_record_it() -> None:
    binary = _exporter()
    assert re.fullmatch(r"\d+\.\d+\.\d+", local_postgres.exporter_version(binary))
    with running_postgres() as (url, _log), local_postgres.running_exporter(url) as (
            metrics_url, version):
        text = requests.get(metrics_url, timeout=10).text
        scraper = Scraper([f"postgres={metrics_url}"], "payment-service")
        scraper.scrape(1000)
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert "\npg_up 1" in "\n" + text
    # the exporter's own connection is counted: payments has an active session at least
    active = [line for line in text.splitlines()
              if line.startswith("pg_stat_activity_count{") and 'datname="payments"' in line
              and 'state="active"' in line]
    assert active and float(active[0].rsplit(" ", 1)[1]) >= 1
    assert scraper.failures == []
    jobs = {dict(ls)["job"] for ls in scraper.samples}
    assert jobs == {"postgres"}
    names = {dict(ls)["__name__"] for ls in scraper.samples}
    for name in ("pg_stat_database_xact_commit", "pg_settings_max_connections",
                 "pg_database_size_bytes", "pg_locks_count", "pg_stat_activity_max_tx_duration"):
        assert name in names, name
    series = [Series(ls, frozen_array(ts, np.int64), frozen_array(vs, np.float64))
              for ls, (ts, vs) in sorted(scraper.samples.items())]
    inc = recorded_incident("exporter", 0, 5000, series, [], [], [],
                            {"postgres_exporter": version}, {})
    keys = _label_keys(inc)["pg_locks_count"]
    assert {"datname", "mode", "job", "instance"} <= keys and "server" not in keys
    if version.startswith("0.11."):
        # 0.11 labels each series with the server it read; compare leaves that label out
        raw = {k for ls in scraper.samples if dict(ls)["__name__"] == "pg_locks_count"
               for k, _ in ls}
        assert "server" in raw
