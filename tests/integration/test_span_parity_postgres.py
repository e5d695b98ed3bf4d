"""The generator's spans are the ones live_app's real instrumentation writes (issue 21).

live_app runs on a private PostgreSQL cluster with an in-memory span exporter, in the
modes the built-in scenarios model; the generator's spans of those scenarios are compared
span type by span type: name, kind, instrumentation scope, attribute keys, status, and
for errors the exception type and the traceback's frames (paths mapped to the service's
image). Where the two legitimately differ, KNOWN names the difference and why.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import live_app
from generator import generate
from generator.model import STATUS_ERROR
from generator.texts import SITE, STDLIB
from live_app.app import create_app
from live_app.settings import Settings

from .postgres_server import running_postgres

pytestmark = pytest.mark.integration

# span names only one side has, and why
KNOWN = {
    "CREATE payments": "live_app creates its schema at start-up; a replay shows a running "
                       "service",
}
SKIP_ROUTES = ("/incident",)  # the incident switch is live_app's own, not the service's
Summary = dict[str, dict[str, object]]


@pytest.fixture(scope="module")
def live_spans() -> Iterator[list]:
    with running_postgres() as (url, _log):
        settings = Settings(database_url=url, pool_size=2, max_overflow=1, pool_timeout_s=0.4,
                            error_ratio=1.0, leak_ratio=1.0, hold_s=0.05,
                            incident_token="parity")
        app = create_app(settings)
        exporter = InMemorySpanExporter()
        app.state.telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        token = {"X-Incident-Token": "parity"}
        with TestClient(app, raise_server_exceptions=False, client=("10.0.3.7", 50000)) as c:
            # the card processor's own spans (its server side of each charge) too
            card = app.state.card.embedded.app  # type: ignore[attr-defined]
            card.state.telemetry.tracer_provider.add_span_processor(
                SimpleSpanProcessor(exporter))
            paid = [c.post("/payment", json={"amount": "5.00"}).json()["id"] for _ in range(3)]
            for pid in paid:
                c.get(f"/payments/{pid}")
            c.get("/payments/987654321")
            c.get("/health")
            for mode in ("pool_exhaustion", "error_spike", "connection_leak"):
                c.post("/incident", json={"mode": mode}, headers=token)
                if mode == "connection_leak":  # the leaks empty the pool (2 + 1)
                    for _ in range(3):
                        c.post("/payment", json={"amount": "5.00"})
                c.post("/payment", json={"amount": "5.00"})
                c.get(f"/payments/{paid[0]}")
            c.post("/incident", json={"mode": "normal"}, headers=token)
        yield list(exporter.get_finished_spans())


def _image_paths(trace: str) -> str:
    """Paths of this checkout mapped to the service's image (live_app in site-packages)."""
    here = str(Path(live_app.__file__).resolve().parent.parent)
    for local, image in ((sysconfig.get_paths()["purelib"], SITE),
                         (sysconfig.get_paths()["stdlib"], STDLIB), (here, SITE)):
        trace = trace.replace(local, image)
    return trace


def _frames(trace: str) -> str:
    """All but the last line, which carries the message (pool sizes differ)."""
    assert trace.endswith("\n"), "Python's tracebacks end with a newline"
    return trace[:-1].rsplit("\n", 1)[0]


def summarize_live(spans: list) -> Summary:
    out: Summary = {}
    for sp in spans:
        attrs = dict(sp.attributes or {})
        if any(str(attrs.get("http.route", "")).startswith(r) for r in SKIP_ROUTES):
            continue
        if str(attrs.get("db.statement", "")).startswith(("SELECT pg_catalog", "SELECT 1")):
            continue  # SQLAlchemy's start-up probes
        s = out.setdefault(sp.name, {"kind": set(), "scope": set(), "keys": set(),
                                     "error": set(), "exceptions": set()})
        s["kind"].add(sp.kind.value + 1)  # OTLP numbers SpanKind from 1 (INTERNAL)
        s["scope"].add(sp.instrumentation_scope.name)
        s["keys"].update(attrs)
        s["error"].add(sp.status.status_code.name == "ERROR")
        for e in sp.events:
            ea = dict(e.attributes or {})
            s["exceptions"].add((ea["exception.type"],
                                 _frames(_image_paths(str(ea["exception.stacktrace"])))))
    return out


def summarize_generated(scenarios: tuple[str, ...]) -> Summary:
    out: Summary = {}
    for scenario in scenarios:
        inc = generate(scenario, seed=1, duration_ms=900_000, signals=("traces",))
        for t in inc.span_tables:
            for i in range(len(t)):
                s = out.setdefault(t.name[i], {"kind": set(), "scope": set(), "keys": set(),
                                               "error": set(), "exceptions": set()})
                attrs = dict(t.attributes[i])
                s["kind"].add(int(t.kind[i]))
                s["scope"].add(t.scope_name)
                s["keys"].update(attrs)
                s["error"].add(int(t.status_code[i]) == STATUS_ERROR)
                for e in t.events[i]:
                    ea = dict(e.attributes)
                    s["exceptions"].add((ea["exception.type"],
                                         _frames(str(ea["exception.stacktrace"]))))
    return out


def differences(live: Summary, gen: Summary) -> list[str]:
    lines = [f"only live_app writes {n!r}" for n in sorted(live.keys() - gen.keys())
             if n not in KNOWN]
    lines += [f"only the generator writes {n!r}" for n in sorted(gen.keys() - live.keys())
              if n not in KNOWN]
    for name in sorted(live.keys() & gen.keys()):
        for field in ("kind", "scope", "keys", "error"):
            if live[name][field] != gen[name][field]:
                lines.append(f"{name!r} {field}: live_app {sorted(live[name][field])} != "
                             f"generator {sorted(gen[name][field])}")
        for exc in sorted(gen[name]["exceptions"] - live[name]["exceptions"]):
            lines.append(f"{name!r}: the generator records {exc[0]} with a traceback live_app "
                         f"never printed:\n{exc[1]}")
    return lines


def test_generated_spans_are_what_live_app_writes(live_spans: list) -> None:
    live = summarize_live(live_spans)
    assert {"POST /payment", "connect", "SELECT payments", "INSERT payments", "POST",
            "POST /v1/charges"} <= live.keys()
    assert "fraud check" in live.keys()
    gen = summarize_generated(("baseline", "error_spike", "pool_exhaustion", "connection_leak"))
    problems = differences(live, gen)
    assert not problems, "\n".join(problems)


def test_the_comparison_notices_old_attributes_and_missing_spans() -> None:
    live = {"connect": {"kind": {3}, "scope": {"s"}, "keys": {"server.address"},
                        "error": {False}, "exceptions": set()},
            "GET /health http send": {"kind": {1}, "scope": {"s"}, "keys": set(),
                                      "error": {False}, "exceptions": set()}}
    gen = {"connect": {"kind": {3}, "scope": {"s"}, "keys": {"net.peer.name"},
                       "error": {False}, "exceptions": set()}}
    lines = differences(live, gen)
    assert any("net.peer.name" in line for line in lines)
    assert any("http send" in line for line in lines)
