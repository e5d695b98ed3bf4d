"""The generator run as a live recording ran: the same window and scrape interval, the knobs
its header names (traffic, pool, database, the fault's own settings), the times its
incident was switched on and off, and the machine's own speeds measured off the recording
(how long a sequential scan of the seeded table took there). ``replayer compare`` and the
calibration tests set a live fixture against this.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np

from generator import generate
from generator.model import Incident, Phase
from generator.scenarios import KNOB_DEFAULTS, SCENARIOS, Scenario
from generator.specfile import parse_scenario


class NotCalibratable(ValueError):
    """The recording does not say how it ran (no scenario, knobs or switch times)."""


def run_settings(live: Incident) -> tuple[str, dict[str, float]]:
    """(the scenario it reproduced, the knobs it ran with) from a live fixture's header."""
    source = dict(live.source)
    name = source.get("scenario", "")
    if name not in SCENARIOS:
        raise NotCalibratable(f"the recording names no built-in scenario (scenario={name!r}); "
                              "record it with scripts/record-live-fixture.py")
    try:
        knobs = {k: float(v) for k, v in json.loads(source.get("knobs", "")).items()
                 if k in KNOB_DEFAULTS}
    except (ValueError, AttributeError) as exc:
        raise NotCalibratable(f"the recording's knobs header is not a JSON object of "
                              f"numbers: {exc}") from None
    return name, knobs


# driver and ORM time between checkout, statements and commit the generator models apart
# from the handling time (three gaps of ~0.35 ms and reading the card's answer)
MODELLED_GAPS_MS = 1.3


def measured_knobs(live: Incident, scenario: str) -> dict[str, float]:
    """Speeds of the machine and the app the live run had, read off its spans before the
    incident: what the generator cannot know (how long its handler, an indexed lookup and
    an insert take there; a scan of the seeded table takes what the disk and CPU make of
    it)."""
    out: dict[str, float] = {}
    onset, recovery = live.truth.onset_ms, live.truth.recovery_ms
    if onset is not None:
        out.update(_calm_speeds(live, onset * 10**6))
    if scenario == "noisy_neighbour" and onset is not None and recovery is not None:
        # how much slower the reports made every statement of the service on that machine
        calm = _statements(live, 0, onset * 10**6)
        busy = _statements(live, (onset + 10_000) * 10**6, (recovery - 5_000) * 10**6)
        if len(calm) >= 20 and len(busy) >= 20:
            out["statement_slowdown_peak"] = round(max(
                float(np.median(busy) / np.median(calm)), 1.0), 3)
    if scenario == "slow_query" and onset is not None and recovery is not None:
        lo, hi = (onset + 10_000) * 10**6, (recovery - 5_000) * 10**6
        scans = [int(t.end_ns[i] - t.start_ns[i]) / 1e6 for t in live.span_tables
                 for i in range(len(t)) if t.name[i].startswith("SELECT")
                 and lo <= t.start_ns[i] < hi
                 and "idempotency_key" in str(dict(t.attributes[i]).get("db.statement", ""))]
        if len(scans) >= 5:
            out["select_peak_ms"] = float(np.median(scans))
    return out


def calibration_scenario(live: Incident) -> Scenario:
    """The scenario ``live`` ran, written down as a scenario file would: its window, step,
    knobs, and its fault switched on and off when the recording says."""
    name, knobs = run_settings(live)
    spec = SCENARIOS[name]
    onset, recovery = live.truth.onset_ms, live.truth.recovery_ms
    if onset is None or recovery is None:
        raise NotCalibratable("the recording has no incident switched on and off")
    step_s = max(1, round(live.step_ms / 1000))
    window_s = (live.duration_ms // 1000) // step_s * step_s
    on, off = round(onset / 1000), round(recovery / 1000)
    ramp = float(dict(live.source).get("card_ramp_s", "0")) if spec.fault == \
        "upstream_latency" else 0.0
    peak = min(on + max(round(ramp), 1), off - 1)
    fault_knobs = {k: v for k, v in knobs.items() if k in spec.knobs}
    base = {k: v for k, v in knobs.items() if k not in spec.knobs}
    measured = measured_knobs(live, name)
    fault_knobs.update({k: v for k, v in measured.items() if k in spec.knobs})
    base.update({k: v for k, v in measured.items() if k not in spec.knobs})
    doc = {
        "name": f"{name}_as_run", "duration": f"{window_s}s", "step": f"{step_s}s",
        "description": f"{name} as {live.scenario} ran it live",
        "knobs": base,
        "faults": [{"kind": spec.fault, "phases": {
            "onset": f"{on}s", "peak": f"{peak}s", "recovery": f"{off}s",
            # switched off at once, as the live switch does: what queued drains after it,
            # inside the after phase on both sides
            "recovered": f"{min(off + 1, window_s)}s",
            # a switch is a step; a ramp (the card processor's slowdown) starts from nothing
            "onset_jump": 0.0 if ramp > 0 else 1.0,
            "stretch": 0.0}, "knobs": fault_knobs}],
    }
    return parse_scenario(doc, f"{live.scenario} (header)")


def generated_like(live: Incident, seed: int = 1) -> Incident:
    """The twin of ``live``, its phases cut as a live run's are (the incident from the
    switch on to the switch off, ramp included), so both are judged on the same windows."""
    twin = generate(calibration_scenario(live), seed=seed)
    on, off = twin.truth.onset_ms, twin.truth.recovery_ms
    assert on is not None and off is not None
    phases = (Phase("baseline", 0, on), Phase("peak", on, off),
              Phase("baseline", off, twin.duration_ms))
    return replace(twin, truth=replace(twin.truth, phases=phases))


def _calm_speeds(live: Incident, until_ns: int) -> dict[str, float]:
    """Median times of the calm before ``until_ns``: the key lookup, the insert, and the
    POST /payment handler's own time (its server span less its children)."""
    children: dict[bytes, float] = {}
    select, insert, post = [], [], []
    for t in live.span_tables:
        for i in range(len(t)):
            if t.start_ns[i] >= until_ns:
                continue
            took = int(t.end_ns[i] - t.start_ns[i]) / 1e6
            parent = bytes(t.parent_span_id[i])
            statement = str(dict(t.attributes[i]).get("db.statement", ""))
            if t.kind[i] == 3 and any(parent):  # a client span: the card call, a statement
                children[parent] = children.get(parent, 0.0) + took
                if statement.startswith("SELECT") and "idempotency_key" in statement:
                    select.append(took)
                elif statement.startswith("INSERT"):
                    insert.append(took)
            elif t.kind[i] == 2 and t.name[i] == "POST /payment" and t.status_code[i] != 2:
                post.append((bytes(t.span_id[i]), took))
    out: dict[str, float] = {}
    if len(select) >= 20:
        out["select_p50_ms"] = round(float(np.median(select)), 3)
    if len(insert) >= 20:
        out["insert_p50_ms"] = round(float(np.median(insert)), 3)
    own = [took - children[sid] for sid, took in post if sid in children]
    if len(own) >= 20:
        out["app_p50_ms"] = round(max(float(np.median(own)) - MODELLED_GAPS_MS, 0.2), 3)
    return out


def _statements(live: Incident, lo_ns: int, hi_ns: int) -> list[float]:
    """Milliseconds of the service's lookups by key and inserts that started in [lo, hi)."""
    out = []
    for t in live.span_tables:
        for i in range(len(t)):
            if not lo_ns <= t.start_ns[i] < hi_ns:
                continue
            statement = str(dict(t.attributes[i]).get("db.statement", ""))
            if statement.startswith("INSERT") or (statement.startswith("SELECT")
                                                  and "idempotency_key" in statement):
                out.append(int(t.end_ns[i] - t.start_ns[i]) / 1e6)
    return out
