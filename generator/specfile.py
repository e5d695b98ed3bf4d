"""Scenario files: an incident written down in TOML, read into the same :class:`Scenario`
the built-in ones are.

A file names the incident, its window, base knobs, one or more faults (each with its own
phases and knobs; the first, or the one marked ``primary``, is the root cause) and red
herrings. Every problem in a file is reported at once, one line each, naming the file,
the key and what is allowed; nothing is generated from a file with a problem.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomllib

from .scenarios import (
    _INT_KNOBS,
    _RANGES,
    FAULT_KINDS,
    KNOB_DEFAULTS,
    RED_HERRING_KINDS,
    SCENARIOS,
    Fault,
    PhasePlan,
    RedHerring,
    Scenario,
    ScenarioError,
)

# the built-in scenario of each fault kind: what a fault of that kind defaults to
KIND_DEFAULTS = {s.fault: s for s in SCENARIOS.values() if s.fault != "none"}
# a scenario name where a kind is expected means its fault
KIND_ALIASES = {name: s.fault for name, s in SCENARIOS.items() if s.fault != "none"}
TOP_KEYS = ("name", "description", "duration", "step", "knobs", "faults", "red_herrings")
FAULT_KEYS = ("kind", "component", "root_cause_kind", "primary", "identity", "phases", "knobs")
PHASE_KEYS = ("onset", "peak", "recovery", "recovered", "onset_jump", "onset_range", "stretch")
HERRING_KEYS = ("kind", "at", "at_range", "length", "version")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class ScenarioFileError(ScenarioError):
    """A scenario file with problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def parse_duration(value: object) -> int | None:
    """Seconds of ``"30m"``, ``"1h30m"``, ``"90s"`` or a whole number of seconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if not isinstance(value, str):
        return None
    m = _DURATION.match(value.strip())
    if not m or not any(m.groups()):
        return None
    h, mi, s = (int(g or 0) for g in m.groups())
    total = h * 3600 + mi * 60 + s
    return total or None


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Reader:
    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[str] = []

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{self.path}: {key}: {text}")

    def unknown_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...],
                     where: str) -> None:
        for key in table:
            if key not in allowed:
                self.problem(f"{where}{key}", f"unknown key{_did_you_mean(key, allowed)}; "
                                              f"allowed: {', '.join(allowed)}")

    def table(self, value: object, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(key, f"needs a table, got {type(value).__name__} {value!r}")
            return {}
        return value

    def fraction(self, value: object, key: str, window_s: int) -> float | None:
        """A point of the window: a fraction in [0, 1] or an offset like "10m"."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if 0.0 <= float(value) <= 1.0:
                return float(value)
            self.problem(key, f"{value!r} is outside the window: give a fraction in [0, 1] "
                              "or an offset such as \"10m\"")
            return None
        seconds = parse_duration(value)
        if seconds is None:
            self.problem(key, f"needs a fraction in [0, 1] or an offset such as \"10m\", "
                              f"got {value!r}")
            return None
        if seconds > window_s:
            self.problem(key, f"offset {value!r} is past the end of the {window_s} s window")
            return None
        return seconds / window_s

    def knobs(self, value: object, key: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, raw in self.table(value, key).items():
            where = f"{key}.{name}"
            if name not in KNOB_DEFAULTS:
                self.problem(where, f"unknown knob{_did_you_mean(name, list(KNOB_DEFAULTS))}; "
                                    f"valid knobs: {', '.join(sorted(KNOB_DEFAULTS))}")
                continue
            if isinstance(raw, bool) or not isinstance(raw, (int, float)):
                self.problem(where, f"needs a number, got {raw!r}")
                continue
            low, high = _RANGES[name]
            if name in _INT_KNOBS and raw != int(raw):
                self.problem(where, f"needs a whole number, got {raw!r}")
                continue
            if not low <= raw <= high:
                self.problem(where, f"{raw!r} is out of range [{low}, {high}]")
                continue
            out[name] = int(raw) if name in _INT_KNOBS else float(raw)
        return out


def load_scenario_file(path: str | Path) -> Scenario:
    """Read and check a scenario file; :class:`ScenarioFileError` lists every problem."""
    p = Path(path)
    r = _Reader(str(path))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioFileError([f"{path}: cannot read the file: {exc}"]) from None
    if not text.strip():
        raise ScenarioFileError([f"{path}: the file is empty; start from "
                                 "`replayer new-scenario NAME`"])
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioFileError([f"{path}: not TOML: {exc}"]) from None
    return parse_scenario(doc, str(path), r)


def parse_scenario(doc: Mapping[str, Any], source: str = "<spec>",
                   reader: _Reader | None = None) -> Scenario:
    """A scenario from a parsed document (a dict as tomllib gives it)."""
    r = reader or _Reader(source)
    r.unknown_keys(doc, TOP_KEYS, "")
    name = doc.get("name")
    if name is None:
        r.problem("name", "missing: every scenario needs a name (lower case, digits, _ or -)")
    elif not isinstance(name, str) or not _NAME.match(name):
        r.problem("name", f"{name!r} is not a name: start with a letter; lower case, digits, "
                          "_ or -; at most 63 characters")
    description = doc.get("description", "")
    if not isinstance(description, str):
        r.problem("description", f"needs a string, got {description!r}")
        description = ""
    duration_s = parse_duration(doc.get("duration", "30m"))
    step_s = parse_duration(doc.get("step", "15s"))
    if duration_s is None:
        r.problem("duration", f"needs a length such as \"30m\" or \"2h\", got "
                              f"{doc.get('duration')!r}")
    if step_s is None:
        r.problem("step", f"needs a length such as \"15s\", got {doc.get('step')!r}")
    if duration_s and step_s and (duration_s % step_s or duration_s < 10 * step_s):
        r.problem("step", f"the window ({duration_s} s) must be a whole number of steps "
                          f"({step_s} s), and at least 10 of them")
    window = duration_s or 1800
    knobs = r.knobs(doc.get("knobs"), "knobs")

    faults_raw = doc.get("faults", [])
    if not isinstance(faults_raw, list):
        r.problem("faults", "needs a list of tables: write each fault as [[faults]]")
        faults_raw = []
    faults: list[tuple[Fault, bool, dict[str, float]]] = []
    kinds_seen: dict[str, int] = {}
    for i, raw in enumerate(faults_raw):
        got = _fault(r, raw, f"faults[{i}]", window)
        if got is None:
            continue
        fault, primary, fknobs = got
        if fault.kind in kinds_seen:
            r.problem(f"faults[{i}].kind", f"{fault.kind!r} is already faults"
                                           f"[{kinds_seen[fault.kind]}]: the model cannot "
                                           "compose a fault with itself; widen its phases "
                                           "instead")
            continue
        kinds_seen[fault.kind] = i
        faults.append((fault, primary, fknobs))
    primaries = [k for k, (_, primary, _) in enumerate(faults) if primary]
    if len(primaries) > 1:
        r.problem("faults", f"{len(primaries)} faults say primary = true; at most one is the "
                            "root cause")
    # fault knobs join the base ones; two that disagree cannot both hold
    merged = dict(knobs)
    owner: dict[str, str] = {k: "knobs" for k in knobs}
    for i, (_, _, fknobs) in enumerate(faults):
        for k, v in fknobs.items():
            if k in merged and merged[k] != v:
                r.problem(f"faults[{i}].knobs.{k}", f"{v!r} contradicts {merged[k]!r} set in "
                                                    f"{owner[k]}: the model has one value of "
                                                    "each knob for the whole window")
                continue
            merged[k] = v
            owner[k] = f"faults[{i}].knobs"

    herrings = []
    herrings_raw = doc.get("red_herrings", [])
    if not isinstance(herrings_raw, list):
        r.problem("red_herrings", "needs a list of tables: write each as [[red_herrings]]")
        herrings_raw = []
    for i, raw in enumerate(herrings_raw):
        h = _herring(r, raw, f"red_herrings[{i}]", window)
        if h is not None:
            herrings.append(h)
    if r.problems:
        raise ScenarioFileError(r.problems)

    order = sorted(range(len(faults)), key=lambda k: (not faults[k][1], k))
    ordered = [faults[k][0] for k in order]
    first = ordered[0] if ordered else None
    spec = Scenario(
        name=str(name), description=description,
        fault=first.kind if first else "none",
        root_cause_component=first.component if first else "none",
        root_cause_kind=first.root_cause_kind if first else "none",
        phases=first.phases if first else None,
        root_cause_identity=dict(first.identity) if first else {},
        knobs=merged, default_duration_s=window, default_step_s=step_s or 15,
        live_mode="", also=tuple(ordered[1:]), red_herrings=tuple(herrings), source=source)
    try:
        spec.resolve_knobs()
    except ScenarioError as exc:
        raise ScenarioFileError([f"{source}: knobs: {exc}"]) from None
    return spec


def _fault(r: _Reader, raw: object, key: str, window: int,
           ) -> tuple[Fault, bool, dict[str, float]] | None:
    t = r.table(raw, key)
    if not t:
        if raw is not None and isinstance(raw, dict):
            r.problem(f"{key}.kind", "missing: every fault needs a kind")
        return None
    r.unknown_keys(t, FAULT_KEYS, f"{key}.")
    kind = t.get("kind")
    if kind is None:
        r.problem(f"{key}.kind", f"missing; allowed: {', '.join(FAULT_KINDS[1:])}")
        return None
    if not isinstance(kind, str):
        r.problem(f"{key}.kind", f"needs a string, got {kind!r}")
        return None
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in KIND_DEFAULTS:
        names = list(FAULT_KINDS[1:]) + list(KIND_ALIASES)
        r.problem(f"{key}.kind", f"unknown fault kind {kind!r}{_did_you_mean(kind, names)}; "
                                 f"allowed: {', '.join(FAULT_KINDS[1:])}")
        return None
    base = KIND_DEFAULTS[kind]
    component = t.get("component", base.root_cause_component)
    root_kind = t.get("root_cause_kind", base.root_cause_kind)
    for k, v in (("component", component), ("root_cause_kind", root_kind)):
        if not isinstance(v, str) or not v:
            r.problem(f"{key}.{k}", f"needs a non-empty string, got {v!r}")
    primary = t.get("primary", False)
    if not isinstance(primary, bool):
        r.problem(f"{key}.primary", f"needs true or false, got {primary!r}")
        primary = False
    identity_raw = t.get("identity", dict(base.root_cause_identity))
    identity = r.table(identity_raw, f"{key}.identity")
    for k, v in identity.items():
        if not isinstance(v, str):
            r.problem(f"{key}.identity.{k}", f"needs a string, got {v!r}")
    phases = _phases(r, t.get("phases"), f"{key}.phases", window, base.phases)
    fknobs = r.knobs(t.get("knobs"), f"{key}.knobs")
    # the kind's own knobs come with it unless the file says otherwise
    fknobs = {**dict(base.knobs), **fknobs}
    if phases is None:
        return None
    return (Fault(kind, str(component), str(root_kind), phases,
                  {str(k): str(v) for k, v in identity.items()}), primary, fknobs)


def _phases(r: _Reader, raw: object, key: str, window: int,
            base: PhasePlan | None) -> PhasePlan | None:
    t = r.table(raw, key)
    r.unknown_keys(t, PHASE_KEYS, f"{key}.")
    assert base is not None
    values: dict[str, Any] = {"onset": base.onset, "peak": base.peak, "recovery": base.recovery,
                              "recovered": base.recovered, "onset_jump": base.onset_jump,
                              "onset_range": base.onset_range, "stretch": base.stretch}
    if "onset" in t and "onset_range" not in t:
        values["onset_range"] = None  # an onset given alone is where it happens
    ok = True
    for name in ("onset", "peak", "recovery", "recovered"):
        if name in t:
            f = r.fraction(t[name], f"{key}.{name}", window)
            ok &= f is not None
            values[name] = f
    for name in ("onset_jump", "stretch"):
        if name in t:
            v = t[name]
            limit = 1.0 if name == "onset_jump" else 0.999
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= limit:
                r.problem(f"{key}.{name}", f"needs a number in [0, {limit}], got {v!r}")
                ok = False
            else:
                values[name] = float(v)
    if "onset_range" in t:
        v = t["onset_range"]
        if not isinstance(v, list) or len(v) != 2:
            r.problem(f"{key}.onset_range", f"needs two points [earliest, latest], got {v!r}")
            ok = False
        else:
            lo = r.fraction(v[0], f"{key}.onset_range[0]", window)
            hi = r.fraction(v[1], f"{key}.onset_range[1]", window)
            if lo is None or hi is None:
                ok = False
            elif lo > hi:
                r.problem(f"{key}.onset_range", f"earliest {v[0]!r} is after latest {v[1]!r}")
                ok = False
            else:
                values["onset_range"] = (lo, hi)
    if not ok:
        return None
    points = [values[n] for n in ("onset", "peak", "recovery", "recovered")]
    if points != sorted(points):
        r.problem(key, "phases out of order: onset <= peak <= recovery <= recovered, got "
                       + ", ".join(f"{n} {v:.3f}" for n, v in zip(
                           ("onset", "peak", "recovery", "recovered"), points)))
        return None
    try:
        return PhasePlan(**values)
    except ScenarioError as exc:
        r.problem(key, str(exc))
        return None


def _herring(r: _Reader, raw: object, key: str, window: int) -> RedHerring | None:
    t = r.table(raw, key)
    if not t:
        return None
    r.unknown_keys(t, HERRING_KEYS, f"{key}.")
    kind = t.get("kind")
    if not isinstance(kind, str) or kind not in RED_HERRING_KINDS:
        hint = _did_you_mean(kind, RED_HERRING_KINDS) if isinstance(kind, str) else ""
        r.problem(f"{key}.kind", f"{'missing' if kind is None else repr(kind)}{hint}; "
                                 f"allowed: {', '.join(RED_HERRING_KINDS)}")
        return None
    if "at" not in t:
        r.problem(f"{key}.at", "missing: when it happens (a fraction or an offset like \"10m\")")
        return None
    at = r.fraction(t["at"], f"{key}.at", window)
    at_range = None
    if "at_range" in t:
        v = t["at_range"]
        if not isinstance(v, list) or len(v) != 2:
            r.problem(f"{key}.at_range", f"needs two points [earliest, latest], got {v!r}")
        else:
            lo = r.fraction(v[0], f"{key}.at_range[0]", window)
            hi = r.fraction(v[1], f"{key}.at_range[1]", window)
            if lo is not None and hi is not None:
                if lo > hi:
                    r.problem(f"{key}.at_range", f"earliest {v[0]!r} is after latest {v[1]!r}")
                else:
                    at_range = (lo, hi)
    length = parse_duration(t.get("length", 30))
    if length is None:
        r.problem(f"{key}.length", f"needs a length such as \"45s\", got {t.get('length')!r}")
    version = t.get("version", "1.4.3")
    if not isinstance(version, str) or not version:
        r.problem(f"{key}.version", f"needs a version string, got {version!r}")
    if at is None or length is None:
        return None
    return RedHerring(kind, at, at_range, float(length), str(version))


def _fmt(value: float) -> str:
    return repr(float(value))


def scenario_to_toml(s: Scenario) -> str:
    """A scenario as a file that reads back into the same scenario (built-in ones too)."""
    lines = [f"name = {_q(s.name)}", f"description = {_q(s.description)}",
             f"duration = \"{s.default_duration_s}s\"", f"step = \"{s.default_step_s}s\""]
    faults: list[tuple[str, str, str, Mapping[str, str], PhasePlan | None]] = []
    if s.fault != "none":
        faults.append((s.fault, s.root_cause_component, s.root_cause_kind,
                       s.root_cause_identity, s.phases))
    faults += [(f.kind, f.component, f.root_cause_kind, f.identity, f.phases) for f in s.also]
    # knobs a fault kind brings by default are written with the fault that brings them
    brought: dict[str, float] = {}
    for kind, *_ in faults:
        brought.update(KIND_DEFAULTS[kind].knobs)
    base = {k: v for k, v in s.knobs.items() if brought.get(k) != v}
    lines.append("")
    lines.append("[knobs]")
    lines += [f"{k} = {_num(k, v)}" for k, v in sorted(base.items())]
    for i, (kind, component, root_kind, identity, plan) in enumerate(faults):
        assert plan is not None
        lines += ["", "[[faults]]", f"kind = {_q(kind)}", f"component = {_q(component)}",
                  f"root_cause_kind = {_q(root_kind)}"]
        if i == 0:
            lines.append("primary = true")
        lines.append("identity = { " + ", ".join(f"{_key(k)} = {_q(v)}"
                                                 for k, v in identity.items()) + " }")
        lines += ["[faults.phases]", f"onset = {_fmt(plan.onset)}", f"peak = {_fmt(plan.peak)}",
                  f"recovery = {_fmt(plan.recovery)}", f"recovered = {_fmt(plan.recovered)}",
                  f"onset_jump = {_fmt(plan.onset_jump)}", f"stretch = {_fmt(plan.stretch)}"]
        if plan.onset_range is not None:
            lines.append(f"onset_range = [{_fmt(plan.onset_range[0])}, "
                         f"{_fmt(plan.onset_range[1])}]")
        own = {k: v for k, v in KIND_DEFAULTS[kind].knobs.items() if s.knobs.get(k) == v}
        if own:
            lines.append("[faults.knobs]")
            lines += [f"{k} = {_num(k, v)}" for k, v in sorted(own.items())]
    for h in s.red_herrings:
        lines += ["", "[[red_herrings]]", f"kind = {_q(h.kind)}", f"at = {_fmt(h.at)}"]
        if h.at_range is not None:
            lines.append(f"at_range = [{_fmt(h.at_range[0])}, {_fmt(h.at_range[1])}]")
        lines += [f"length = {int(h.length_s)}", f"version = {_q(h.version)}"]
    return "\n".join(lines) + "\n"


def _num(key: str, value: float) -> str:
    return str(int(value)) if key in _INT_KNOBS else _fmt(value)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _q(k)


TEMPLATE = '''# A scenario file for telemetry-replayer: `replayer load {name}.toml`, `generate`,
# `inspect` and `plot` take it wherever they take a scenario name.
name = "{name}"
description = "What happens, in a sentence or two."
duration = "30m"          # the window: "30m", "2h", "1h30m" or seconds
step = "15s"              # the scrape interval; the window holds at least 10 steps

[knobs]                   # the service around the faults (`replayer list` names them all)
rps_post_payment = 8.0
rps_get_payment = 5.0

# Faults: each is a fault kind of the generator with its own phases. Several compose in
# one simulation; the one marked primary (else the first) is the root cause.
[[faults]]
kind = "slow_query"       # {kinds}
component = "postgres"    # the root cause as the ground truth names it
root_cause_kind = "missing_index"
primary = true
identity = {{ job = "postgres", relname = "payments" }}  # how the data names it
[faults.phases]           # fractions of the window, or offsets such as "10m"
onset = 0.33              # the fault starts (drawn in onset_range when given)
onset_range = [0.22, 0.45]
peak = 0.34               # full strength
recovery = 0.70           # the fix starts
recovered = 0.71          # back to normal
onset_jump = 1.0          # strength at the onset: 1 a step, 0 a ramp
stretch = 0.25            # each phase's length varies by up to this share with the seed
[faults.knobs]            # knobs of this fault (they join [knobs])
select_peak_ms = 1500.0

# Red herrings: they happen, show in the data and cause nothing; the ground truth lists
# them so an investigation that blames one can be caught.
[[red_herrings]]
kind = "deploy"           # {herrings}
at = "5m"                 # a fraction of the window or an offset
version = "1.4.3"         # deploy: the version that changes nothing
'''


def template(name: str) -> str:
    if not _NAME.match(name):
        raise ScenarioError(f"{name!r} is not a scenario name: start with a letter; lower "
                            "case, digits, _ or -")
    return TEMPLATE.format(name=name, kinds=" | ".join(FAULT_KINDS[1:]),
                           herrings=" | ".join(RED_HERRING_KINDS))
