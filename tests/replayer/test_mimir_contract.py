"""The replayer against Grafana Mimir 3.0.2's real answers (tests/data/mimir-3.0.2.json,
captured by hand from a Mimir built from its mimir-3.0.2 tag): its build info, the 404s
for Prometheus' status pages, a tenant's limits, 401 without a tenant, and a push that
Mimir stored in part (issue 22)."""

from __future__ import annotations

import json

import pytest
import responses

from replayer.errors import AuthError
from replayer.prometheus import ServerInfo, check_server, exemplar_note, preflight
from replayer.report import SignalReport, group_reason
from replayer.transport import HttpTransport, TargetConfig
from tests.replayer.captures import capture

ROOT = "http://mimir.test:9009"


def _replay(*names: str) -> None:
    for name in names:
        entry = capture(name)
        body = entry["response"]["body"]
        path, _, query = entry["request"]["path"].partition("?")
        responses.add(entry["request"]["method"], f"{ROOT}/{path}",
                      status=entry["response"]["status"],
                      body=body if isinstance(body, str) else json.dumps(body),
                      match=[responses.matchers.query_string_matcher(query)] if query else [])


@responses.activate
def test_preflight_knows_mimir_and_reads_the_tenants_limits() -> None:
    _replay("mimir_buildinfo", "mimir_flags", "mimir_config", "mimir_tsdb_status_orgid_demo",
            "mimir_user_limits_orgid_demo")
    info = preflight(HttpTransport(TargetConfig(f"{ROOT}/prometheus", tenant="demo")))
    assert info.mimir and info.application == "Grafana Mimir" and info.version == "3.0.2"
    assert info.receiver is True and info.exemplar_storage is True
    assert info.max_exemplars == 100_000 and info.tenant_limits["ingestion_rate"] == 10_000_000
    assert info.stores_out_of_order  # Mimir takes a newer half before an older one
    notes = check_server(info, f"{ROOT}/prometheus", send_exemplars=True)
    assert notes[0].startswith("Grafana Mimir 3.0.2: its tenant's limits read;")
    assert "--verify" in notes[0] and not any("not Prometheus?" in n for n in notes)
    over = exemplar_note(info, 150_000)
    assert over is not None and over.startswith(
        "this load has 150000 exemplars and Mimir keeps at most 100000: the oldest 50000")
    assert "max_global_exemplars_per_user" in over


def test_mimirs_default_of_no_exemplars_is_said_with_the_runtime_config_fix() -> None:
    info = ServerInfo("3.0.2", True, False, None, None, application="Grafana Mimir",
                      tenant_limits={"max_global_exemplars_per_user": 0})
    notes = check_server(info, f"{ROOT}/prometheus", send_exemplars=True)
    assert any("overrides:" in n and "max_global_exemplars_per_user: 100000" in n
               for n in notes)
    assert info.exemplars_off_reason.startswith("Mimir keeps no exemplars for this tenant")


@responses.activate
def test_no_tenant_is_authentication() -> None:
    _replay("mimir_buildinfo", "mimir_flags", "mimir_config", "mimir_user_limits_no_orgid")
    responses.get(f"{ROOT}/prometheus/api/v1/status/tsdb", status=404)
    with pytest.raises(AuthError, match=r"HTTP 401 Unauthorized \(no org id\)") as err:
        preflight(HttpTransport(TargetConfig(f"{ROOT}/prometheus")))
    assert "--tenant" in str(err.value) and err.value.exit_code == 5


@responses.activate
def test_a_push_without_tenant_is_authentication() -> None:
    _replay("mimir_push_no_orgid")
    with pytest.raises(AuthError, match="no org id"):
        HttpTransport(TargetConfig(ROOT)).post("api/v1/push", b"x", {})


def test_per_series_errors_group_by_mimirs_error_id() -> None:
    """Mimir names the series in each error: one summary line per series (3,239 lines,
    2.4 MB for one load). Grouped by the documented error ID, with a few examples."""
    body = capture("mimir_push_partly_too_old")["response"]["body"]
    key, example = group_reason(f"HTTP 400: {body.strip()}")
    assert key == ("HTTP 400: the sample has been rejected because another sample with a "
                   "more recent timestamp has already been ingested and this sample is beyond "
                   "the out-of-order time window of 3h (err-mimir-sample-timestamp-too-old)")
    assert example == 'capture_probe{job="capture"}'
    r = SignalReport("metrics", "samples")
    for i in range(50):
        r.add(rejected=10, reason=f"HTTP 400: {body.replace('capture_probe', f'm{i}')}")
    lines = r.lines()
    assert len(lines) == 3, lines  # the total, the group, its examples
    assert lines[1] == f"  rejected 500 samples: {key}"
    assert lines[2] == '    e.g. m0{job="capture"}, m1{job="capture"}, m2{job="capture"}'


@responses.activate
def test_the_out_of_order_window_is_read_from_mimirs_admin_pages() -> None:
    """Mimir shows a tenant no out-of-order window; its admin pages (/config?mode=diff and
    /runtime_config, open in monolithic mode) do: the window check and --clip work then."""
    _replay("mimir_buildinfo", "mimir_flags", "mimir_config", "mimir_tsdb_status_orgid_demo",
            "mimir_user_limits_orgid_demo", "mimir_config_admin_diff", "mimir_runtime_config")
    info = preflight(HttpTransport(TargetConfig(f"{ROOT}/prometheus", tenant="demo")))
    assert info.ooo_window_ms == 7 * 86_400_000  # "1w" in the config diff
    notes = check_server(info, f"{ROOT}/prometheus", send_exemplars=True)
    assert "out-of-order window 10080 min (from its /config and /runtime_config)" in notes[0]


@responses.activate
def test_without_its_admin_pages_the_window_is_not_checked() -> None:
    _replay("mimir_buildinfo", "mimir_flags", "mimir_config", "mimir_tsdb_status_orgid_demo",
            "mimir_user_limits_orgid_demo")
    responses.get(f"{ROOT}/config", status=403, body="forbidden")
    responses.get(f"{ROOT}/runtime_config", status=403, body="forbidden")
    info = preflight(HttpTransport(TargetConfig(f"{ROOT}/prometheus", tenant="demo")))
    assert info.ooo_window_ms is None
    notes = check_server(info, f"{ROOT}/prometheus", send_exemplars=True)
    assert "not checked before sending: pass --verify" in notes[0]
