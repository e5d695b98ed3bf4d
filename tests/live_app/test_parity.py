"""What live_app exposes on /metrics equals what the generator emits for the app.

Metric names, per name the label names (as Prometheus stores them after a scrape: empty
labels are absent; `job` and `instance` come from the scrape config), and the label
*values* an investigator queries by: routes, status codes, `le` bounds, pool states,
`error_type`. Every generated value must be one live_app prints; the bucket bounds must be
the same set. Where the two legitimately differ, KNOWN names the difference and why.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from generator import generate
from generator.metrics import APP_JOB
from live_app.settings import Settings

from .conftest import client_for

SCRAPE_LABELS = {"job", "instance"}
# label values compared between the two sides
VALUE_LABELS = ("http_route", "handler", "le", "http_response_status_code", "status", "method",
                "http_request_method", "state", "error_type", "url_scheme",
                "network_protocol_version", "otel_scope_name", "otel_scope_version",
                "generation")
KNOWN = {
    # live_app's card processor is a function inside the app; the generator models the
    # HTTP service payment-service calls (what a real deployment instruments with httpx)
    "http_client_request_duration_seconds_bucket": "card processor is in-process in live_app",
    "http_client_request_duration_seconds_count": "card processor is in-process in live_app",
    "http_client_request_duration_seconds_sum": "card processor is in-process in live_app",
}


def generated(scenario: str) -> dict[str, dict[str, set[str]]]:
    inc = generate(scenario, duration_ms=1_800_000)
    out: dict[str, dict[str, set[str]]] = {}
    for s in inc.series:
        if s.label("job") != APP_JOB["job"] or s.name == "up":  # `up` is made by the scrape
            continue
        labels = out.setdefault(s.name, {})
        for k, v in s.labels:
            if k != "__name__" and k not in SCRAPE_LABELS:
                labels.setdefault(k, set()).add(v)
    return out


def scraped(text: str) -> dict[str, dict[str, set[str]]]:
    out: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = out.setdefault(sample.name, {})
            for k, v in sample.labels.items():
                if v:
                    labels.setdefault(k, set()).add(v)
    return out


def drive(client: TestClient, requests: int, fail_expected: bool) -> None:
    ids = []
    for i in range(requests):
        r = client.post("/payment", json={"amount": f"{i + 1}.00"})
        if r.status_code == 200:
            ids.append(r.json()["id"])
        assert (r.status_code == 500) == fail_expected
        client.get(f"/payments/{ids[-1] if ids else 1}")
    client.get("/payments/987654321")  # a 404
    client.get("/health")


def diff(live: dict[str, dict[str, set[str]]], gen: dict[str, dict[str, set[str]]]) -> list[str]:
    lines = [f"only live_app exposes {n} {sorted(live[n])}" for n in sorted(live.keys() - gen)]
    lines += [f"only the generator emits {n} {sorted(gen[n])}"
              for n in sorted(gen.keys() - live) if n not in KNOWN]
    for n in sorted(live.keys() & gen.keys()):
        if live[n].keys() != gen[n].keys():
            lines.append(f"{n}: live_app labels {sorted(live[n])} != generator "
                         f"{sorted(gen[n])}")
            continue
        for key in VALUE_LABELS:
            if key not in gen[n]:
                continue
            extra = gen[n][key] - live[n][key]
            if extra:
                lines.append(f"{n}{{{key}}}: the generator prints {sorted(extra)}, live_app "
                             f"only {sorted(live[n][key])}")
            if key == "le" and live[n][key] != gen[n][key]:
                lines.append(f"{n}: bucket bounds differ: live_app {sorted(live[n][key])}, "
                             f"generator {sorted(gen[n][key])}")
    return lines


def live_scrape(settings: Settings, modes: tuple[str, ...]) -> dict[str, dict[str, set[str]]]:
    with client_for(replace(settings, incident_mode="normal", leak_ratio=1.0)) as client:
        drive(client, 5, fail_expected=False)
        for mode in modes:
            client.post("/incident", json={"mode": mode})
            if mode == "connection_leak":  # each payment leaks one, until none is left
                drive(client, settings.pool_size + settings.max_overflow, fail_expected=False)
            drive(client, 3, fail_expected=True)
        return scraped(client.get("/metrics").text)


@pytest.mark.parametrize("scenario, modes", [
    ("baseline", ()), ("pool_exhaustion", ("connection_leak",)),
    ("error_spike", ("error_spike", "connection_leak"))])
def test_live_metrics_equal_generated_metrics(settings: Settings, scenario: str,
                                              modes: tuple[str, ...]) -> None:
    differences = diff(live_scrape(settings, modes), generated(scenario))
    assert not differences, "\n".join(differences)


def test_the_comparison_notices_a_difference() -> None:
    live = {"a_total": {"x": {"1"}}, "b": {}}
    gen = {"a_total": {"x": {"1"}, "y": {"2"}}, "c": {}}
    assert diff(live, gen) == ["only live_app exposes b []", "only the generator emits c []",
                               "a_total: live_app labels ['x'] != generator ['x', 'y']"]


def test_the_comparison_catches_wrong_label_values() -> None:
    """The two defects this test was written against: a route template the app never
    prints and `le` bounds formatted as floats where the exporter prints ints."""
    live = {"h_bucket": {"http_route": {"/payments/{payment_id}"}, "le": {"1", "+Inf"}}}
    gen = {"h_bucket": {"http_route": {"/payments/{id}"}, "le": {"1.0", "+Inf"}}}
    lines = diff(live, gen)
    assert any("/payments/{id}" in line for line in lines)
    assert any("'1.0'" in line for line in lines)
