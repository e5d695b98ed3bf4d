"""What live_app exposes on /metrics equals what the generator emits for the app.

Metric names and, per name, the label names (as Prometheus stores them after a scrape:
empty-valued labels are absent; `job` and `instance` come from the scrape config). A
difference fails with the list, in both directions.
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


def generated_set(scenario: str) -> dict[str, set[str]]:
    inc = generate(scenario, duration_ms=600_000)
    out: dict[str, set[str]] = {}
    for s in inc.series:
        if s.label("job") != APP_JOB["job"] or s.name == "up":  # `up` is made by the scrape
            continue
        out.setdefault(s.name, set()).update(k for k, _ in s.labels
                                             if k != "__name__" and k not in SCRAPE_LABELS)
    return out


def scraped_set(text: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(k for k, v in sample.labels.items() if v)
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


def diff(live: dict[str, set[str]], gen: dict[str, set[str]]) -> list[str]:
    lines = [f"only live_app exposes {n} {sorted(live[n])}" for n in sorted(live.keys() - gen)]
    lines += [f"only the generator emits {n} {sorted(gen[n])}" for n in sorted(gen.keys() - live)]
    for n in sorted(live.keys() & gen.keys()):
        if live[n] != gen[n]:
            lines.append(f"{n}: live_app labels {sorted(live[n])} != generator "
                         f"{sorted(gen[n])}")
    return lines


@pytest.mark.parametrize("scenario, mode", [("baseline", "normal"),
                                            ("pool_exhaustion", "pool_exhaustion")])
def test_live_metrics_equal_generated_metrics(settings: Settings, scenario: str,
                                              mode: str) -> None:
    with client_for(replace(settings, incident_mode="normal")) as client:
        drive(client, 5, fail_expected=False)
        if mode != "normal":
            client.post("/incident", json={"mode": mode})
            drive(client, 3, fail_expected=True)
        live = scraped_set(client.get("/metrics").text)
    differences = diff(live, generated_set(scenario))
    assert not differences, "\n".join(differences)


def test_the_comparison_notices_a_difference() -> None:
    live = {"a_total": {"x"}, "b": set()}
    gen = {"a_total": {"x", "y"}, "c": set()}
    assert diff(live, gen) == ["only live_app exposes b []", "only the generator emits c []",
                               "a_total: live_app labels ['x'] != generator ['x', 'y']"]
