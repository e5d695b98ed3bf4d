"""Score an incident investigator against the library, on a live stack.

For each scenario and seed: load the incident into the stack under its own run label
(and trace-ID salt), run the investigator with the stack's URLs and the window in its
environment, read its verdict (JSON on stdout) and score it against the ground truth.

The investigator's environment:

``PROMETHEUS_URL``, ``LOKI_URL``, ``TEMPO_URL`` (Tempo's query API; empty when not given),
``GRAFANA_URL`` (when given), ``INCIDENT_START``, ``INCIDENT_END`` (RFC 3339, UTC),
``INCIDENT_STEP_SECONDS``, ``REPLAYER_RUN_SELECTOR`` (``replayer_run="..."``: add it to
every PromQL and LogQL selector, so the queries see this case's data only),
``REPLAYER_RUN_LABELS`` (the same as JSON), ``REPLAYER_TENANT`` (when given).

Its verdict, on stdout::

    {"root_cause": {"component": "postgres", "kind": "missing_index"},
     "onset": "2026-11-28T10:12:00Z",                     (optional)
     "candidates": [{"component": ..., "kind": ...}, ...], (optional, ranked)
     "evidence": ["<query>", ...]}                          (optional)

``{"component": ..., "kind": ...}`` at the top level is read too. ``component`` "none"
says there is no incident.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata

from generator import GENERATOR_VERSION, SCENARIOS, ScenarioError, get_scenario

from .api import LoadReport, Targets, load
from .errors import ReplayerError, UsageError

RUN_LABEL = "replayer_run"
# identity keys whose value names the cause the way an investigator would say it
NAME_KEYS = ("server.address", "server_address", "application_name")
STDERR_KEPT = 4000


@dataclass(frozen=True)
class Verdict:
    component: str
    kind: str
    onset: dt.datetime | None
    candidates: tuple[tuple[str, str], ...]
    evidence: tuple[str, ...] = ()


@dataclass
class CaseResult:
    scenario: str
    seed: int
    status: str  # ok | crashed | timed_out | garbage | load_failed
    truth_component: str
    truth_kind: str
    verdict: Verdict | None = None
    top1: bool = False
    top3: bool = False
    component_hit: bool = False
    onset_error_s: float | None = None
    herrings_blamed: tuple[str, ...] = ()
    seconds: float = 0.0
    stderr: str = ""
    detail: str = ""


@dataclass
class EvaluationReport:
    investigator: str
    end: dt.datetime
    seeds: tuple[int, ...]
    scenarios: tuple[str, ...]
    results: list[CaseResult] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    def score(self, scenario: str | None = None) -> dict[str, object]:
        rs = [r for r in self.results if scenario is None or r.scenario == scenario]
        n = len(rs)
        onset = [r.onset_error_s for r in rs if r.onset_error_s is not None]
        return {
            "cases": n, "top1": sum(r.top1 for r in rs), "top3": sum(r.top3 for r in rs),
            "component": sum(r.component_hit for r in rs),
            "onset_error_s_median": float(sorted(onset)[len(onset) // 2]) if onset else None,
            "red_herrings_blamed": sum(len(r.herrings_blamed) for r in rs),
            "failed": sum(r.status != "ok" for r in rs),
            "seconds": round(sum(r.seconds for r in rs), 2),
        }

    def table(self) -> str:
        width = max([20] + [len(s) + 1 for s in self.scenarios])
        head = (f"{'scenario':<{width}} {'top-1':>7} {'top-3':>7} {'component':>10} "
                f"{'onset err':>10} {'herrings':>9} {'failed':>7}")
        lines = [head, "-" * len(head)]
        for name in self.scenarios + ("all",):
            s = self.score(None if name == "all" else name)
            n = s["cases"]
            onset = s["onset_error_s_median"]
            if name == "all":
                lines.append("-" * len(head))
            lines.append(f"{name:<{width}} {s['top1']:>3}/{n:<3} {s['top3']:>3}/{n:<3} "
                         f"{s['component']:>6}/{n:<3} "
                         f"{'-' if onset is None else f'{onset:.0f} s':>10} "
                         f"{s['red_herrings_blamed']:>9} {s['failed']:>7}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        def case(r: CaseResult) -> dict[str, object]:
            d = asdict(r)
            if r.verdict is not None and r.verdict.onset is not None:
                d["verdict"]["onset"] = r.verdict.onset.isoformat()
            return d

        return {"investigator": self.investigator, "end": self.end.isoformat(),
                "seeds": list(self.seeds), "scenarios": list(self.scenarios),
                "versions": self.versions, "overall": self.score(),
                "by_scenario": {s: self.score(s) for s in self.scenarios},
                "cases": [case(r) for r in self.results]}

    def plot(self, path: str) -> None:
        """Scenarios x seeds: top-1 hit, a wrong answer, or a failure."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap

        grid = [[next((2 if r.top1 else 1 if r.status == "ok" else 0)
                      for r in self.results if r.scenario == s and r.seed == seed)
                 for seed in self.seeds] for s in self.scenarios]
        fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(self.seeds),
                                        0.9 + 0.35 * len(self.scenarios)))
        ax.imshow(grid, cmap=ListedColormap(["#9e9e9e", "#d9534f", "#5cb85c"]), vmin=0,
                  vmax=2, aspect="auto")
        ax.set_xticks(range(len(self.seeds)), [f"seed {s}" for s in self.seeds])
        ax.set_yticks(range(len(self.scenarios)), list(self.scenarios))
        overall = self.score()
        ax.set_title(f"top-1 {overall['top1']}/{overall['cases']}  "
                     "(green hit, red miss, grey failed)", fontsize=9)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)


def parse_verdict(text: str) -> Verdict:
    """The verdict an investigator printed (the last JSON object on stdout)."""
    doc = None
    for line in reversed([ln for ln in text.strip().splitlines() if ln.strip()]):
        try:
            doc = json.loads(line)
            break
        except json.JSONDecodeError:
            continue
    if doc is None:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("stdout holds no JSON object") from None
    if not isinstance(doc, dict):
        raise ValueError(f"the verdict is a {type(doc).__name__}, not a JSON object")
    rc = doc.get("root_cause", doc)
    if not isinstance(rc, dict) or not isinstance(rc.get("component"), (str, type(None))):
        raise ValueError("the verdict has no root_cause.component")
    component = str(rc.get("component") or "none")
    kind = str(rc.get("kind") or "")
    onset = None
    if doc.get("onset"):
        try:
            onset = dt.datetime.fromisoformat(str(doc["onset"]).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"onset {doc['onset']!r} is not an RFC 3339 time") from None
        if onset.tzinfo is None:
            onset = onset.replace(tzinfo=dt.timezone.utc)
    cands = [(component, kind)]
    for c in doc.get("candidates") or []:
        if isinstance(c, dict) and isinstance(c.get("component"), str):
            pair = (c["component"], str(c.get("kind") or ""))
            if pair not in cands:
                cands.append(pair)
    evidence = tuple(str(e) for e in doc.get("evidence") or [] if isinstance(e, str))
    return Verdict(component, kind, onset, tuple(cands), evidence)


def _names(report: LoadReport) -> set[str]:
    t = report.truth
    names = {t.root_cause_component.lower()}
    names |= {v.lower() for k, v in t.root_cause_identity if k in NAME_KEYS}
    return names


def _kinds(report: LoadReport, scenario: str) -> set[str]:
    kinds = {report.truth.root_cause_kind.lower()}
    try:
        spec = get_scenario(scenario)
    except ScenarioError:
        return kinds
    if spec.fault != "none":
        kinds |= {spec.fault, spec.name}
    return kinds


def score_case(result: CaseResult, report: LoadReport, scenario: str) -> None:
    v = result.verdict
    assert v is not None
    t = report.truth
    none = t.root_cause_component == "none"
    names, kinds = _names(report), _kinds(report, scenario)

    def hit(component: str, kind: str) -> bool:
        c = component.strip().lower()
        if none:
            return c in ("", "none")
        return c in names and kind.strip().lower() in kinds

    result.top1 = hit(v.component, v.kind)
    result.top3 = any(hit(c, k) for c, k in v.candidates[:3])
    result.component_hit = (v.component.strip().lower() in ("", "none") if none
                            else v.component.strip().lower() in names)
    if v.onset is not None and t.onset is not None:
        result.onset_error_s = round(abs((v.onset - t.onset).total_seconds()), 1)
    blamed = []
    text = f"{v.component} {v.kind}".lower()
    for kind, *_ in t.red_herrings:
        if ((kind == "deploy" and "deploy" in text)
                or (kind == "scrape_gap" and ("scrape" in text or "exporter" in text))
                or (kind == "report_run" and "reporting" in text)):
            blamed.append(kind)
    if blamed and not any(f[0] == "deploy_regression" for f in t.faults) \
            and t.root_cause_kind != "deploy_regression":
        result.herrings_blamed = tuple(blamed)


Investigator = Callable[[Mapping[str, str]], object]


def _run_command(cmd: str, env: Mapping[str, str], limit_s: float,
                 ) -> tuple[str, str, str, str]:
    """(status, stdout, stderr, detail) of one run of the investigator command."""
    try:
        proc = subprocess.run(shlex.split(cmd), env={**os.environ, **env}, capture_output=True,
                              text=True, timeout=limit_s)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (
            exc.stderr or "")
        return "timed_out", "", err, f"no verdict within {limit_s:g} s"
    except OSError as exc:
        return "crashed", "", "", f"could not start {cmd!r}: {exc}"
    if proc.returncode != 0:
        return "crashed", proc.stdout, proc.stderr, f"exit code {proc.returncode}"
    return "ok", proc.stdout, proc.stderr, ""


def _run_callable(fn: Investigator, env: Mapping[str, str], limit_s: float,
                  ) -> tuple[str, str, str, str]:
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["out"] = fn(dict(env))
        except Exception as exc:  # the investigator's own failure: scored, not raised
            box["error"] = f"{type(exc).__name__}: {exc}"

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(limit_s)
    if th.is_alive():
        return "timed_out", "", "", f"no verdict within {limit_s:g} s (the thread is left)"
    if "error" in box:
        return "crashed", "", str(box["error"]), str(box["error"])
    out = box.get("out")
    return "ok", out if isinstance(out, str) else json.dumps(out, default=str), "", ""


def evaluate(investigator: str | Investigator, scenarios: Sequence[str] | None = None,
             seeds: Sequence[int] = (1, 2, 3), targets: Targets | None = None,
             end: dt.datetime | None = None, signals: Sequence[str] = ("metrics", "logs",
                                                                          "traces"),
             time_limit_s: float = 120.0, tempo_query_url: str | None = None,
             grafana_url: str | None = None,
             progress: Callable[[CaseResult], None] | None = None) -> EvaluationReport:
    """Score ``investigator`` (a command line, or a Python callable taking the environment
    mapping and returning the verdict) over ``scenarios`` x ``seeds``. Every case of one
    evaluation ends at the same ``end``; each is isolated by its run label."""
    targets = targets or Targets()
    names = tuple(scenarios) if scenarios else tuple(sorted(SCENARIOS))
    if not names or not seeds:
        raise UsageError("nothing to evaluate: give scenarios and seeds")
    if end is None:
        now = time.time()
        end = dt.datetime.fromtimestamp(now - now % 60, tz=dt.timezone.utc)
    label = investigator if isinstance(investigator, str) else getattr(
        investigator, "__name__", "callable")
    report = EvaluationReport(label, end, tuple(seeds), names, versions={
        "telemetry-replayer": _version(), "generator": GENERATOR_VERSION,
        "python": sys.version.split()[0]})
    for scenario in names:
        for seed in seeds:
            run = "eval-" + hashlib.sha256(f"{scenario}/{seed}/{end.isoformat()}".encode()
                                           ).hexdigest()[:10]
            result = _case(investigator, scenario, seed, run, targets, end, signals,
                           time_limit_s, tempo_query_url, grafana_url)
            report.results.append(result)
            if progress is not None:
                progress(result)
    return report


def _case(investigator: str | Investigator, scenario: str, seed: int, run: str,
          targets: Targets, end: dt.datetime, signals: Sequence[str], limit_s: float,
          tempo_query_url: str | None, grafana_url: str | None) -> CaseResult:
    try:
        loaded = load(scenario, targets, end=end, signals=signals, labels={RUN_LABEL: run},
                      seed=seed, trace_id_salt=run)
    except ReplayerError as exc:
        return CaseResult(scenario, seed, "load_failed", "", "", detail=str(exc))
    t = loaded.truth
    if loaded.failures:
        return CaseResult(scenario, seed, "load_failed", t.root_cause_component,
                          t.root_cause_kind, detail="; ".join(
                              f"{n}: {why}" for n, (_, why) in loaded.failures.items()))
    env = {
        "PROMETHEUS_URL": targets.prometheus if "metrics" in signals else "",
        "LOKI_URL": targets.loki if "logs" in signals else "",
        "TEMPO_URL": (tempo_query_url or "") if "traces" in signals else "",
        "INCIDENT_START": loaded.window_start.isoformat().replace("+00:00", "Z"),
        "INCIDENT_END": loaded.window_end.isoformat().replace("+00:00", "Z"),
        "INCIDENT_STEP_SECONDS": f"{loaded.step.total_seconds():g}",
        "REPLAYER_RUN_SELECTOR": f'{RUN_LABEL}="{run}"',
        "REPLAYER_RUN_LABELS": json.dumps({RUN_LABEL: run}),
    }
    if grafana_url:
        env["GRAFANA_URL"] = grafana_url
    if targets.tenant:
        env["REPLAYER_TENANT"] = targets.tenant
    began = time.monotonic()
    if isinstance(investigator, str):
        status, out, err, detail = _run_command(investigator, env, limit_s)
    else:
        status, out, err, detail = _run_callable(investigator, env, limit_s)
    result = CaseResult(scenario, seed, status, t.root_cause_component, t.root_cause_kind,
                        seconds=round(time.monotonic() - began, 2),
                        stderr=err[-STDERR_KEPT:], detail=detail)
    if status == "ok":
        try:
            result.verdict = parse_verdict(out)
        except ValueError as exc:
            result.status = "garbage"
            result.detail = f"{exc}; stdout began {out[:200]!r}"
            return result
        score_case(result, loaded, scenario)
    return result


def _version() -> str:
    try:
        return metadata.version("telemetry-replayer")
    except metadata.PackageNotFoundError:
        return "unknown"
