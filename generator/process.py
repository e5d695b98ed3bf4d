"""prometheus_client's process and GC collectors for payment-service, from the work done.

CPU time is spent per request (more on error paths that format a traceback), memory
follows the requests in flight and the worker threads alive, garbage collections follow
allocations. Each has its own noise, so no two series are copies of each other.
"""

from __future__ import annotations

import numpy as np

from .resource import resource_of
from .scenarios import PhasePlan
from .series import APP_JOB, SeriesBuilder
from .simulate import BASE_RSS_BYTES, ERR_NONE, HEALTH, POST_PAYMENT, Simulation

CPU_S = {POST_PAYMENT: 0.0024, 1: 0.0015, HEALTH: 0.0003}  # median CPU per request
GC_THRESHOLD0 = 700  # CPython's gc.get_threshold()[0]: allocations per gen0 collection
ALLOCS = {POST_PAYMENT: 5200.0, 1: 3300.0, HEALTH: 260.0}  # net allocations per request
STACK_BYTES = 8 * 1024 * 1024 + 4096  # a worker thread's reserved stack and guard page


def process_series(b: SeriesBuilder, sim: Simulation, rng: np.random.Generator,
                   knobs: dict[str, float], plan: PhasePlan | None) -> None:
    traffic, inst, n = sim.traffic, sim.instants, b.n
    job = APP_JOB
    idx = b.app_index(traffic.end_ns)
    route = traffic.route.astype(np.int64)
    step_s = sim.step_ms / 1000.0
    per_req = np.array([CPU_S[r] for r in range(3)])[route]
    cpu_req = per_req * np.exp(0.4 * rng.standard_normal(route.shape[0]))
    cpu_req += np.where(traffic.error != ERR_NONE, 0.0016, 0.0)
    idle = np.concatenate([[0.0], rng.gamma(4.0, 0.004 * step_s / 4.0, n - 1)])
    cpu = 41.7 + np.cumsum(idle) + b.counter(idx, cpu_req)
    b.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in "
             "seconds.", "seconds")
    b.add("process_cpu_seconds_total", job, np.floor(cpu * 100.0) / 100.0)

    active = inst.active["GET"] + inst.active["POST"]
    # a fresh process's heap settles over its first hours; the first one started before
    # the window
    age_s = b.t_ms / 1000.0 - np.where(b.app_era > 0, b.app_start_s, 0.0)
    drift = 0.9e6 * np.sqrt(np.maximum(age_s, 0.0) / 3600.0)
    rss = BASE_RSS_BYTES + drift + 61_000.0 * active + b.ar("rss", rng, 0.35e6, 0.95) + \
        _leaked_bytes(b, sim, knobs, plan)
    b.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "bytes")
    b.add("process_resident_memory_bytes", job, np.round(rss / 4096.0) * 4096.0)
    alive = np.maximum(inst.threads_busy, np.concatenate([inst.threads_busy[:1],
                                                          inst.threads_busy[:-1]]))
    arenas = np.minimum(np.floor(alive / 3.0), 16) * 65536.0 * 16  # malloc arenas, 1 MiB each
    vms = 366.5e6 + (alive + 3) * STACK_BYTES + arenas + np.round(b.ar("vms", rng, 1.5, 0.8)) * \
        (1 << 20)
    b.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", "bytes")
    b.add("process_virtual_memory_bytes", job, np.round(vms / 4096.0) * 4096.0)
    b.family("process_open_fds", "gauge", "Number of open file descriptors.")
    sockets = active + rng.binomial(3, 0.5, n)  # kept-alive client connections come and go
    b.add("process_open_fds", job, 11.0 + inst.used + inst.idle + sockets)
    b.family("process_max_fds", "gauge", "Maximum number of open file descriptors.")
    b.add("process_max_fds", job, b.const(1048576))
    b.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch "
             "in seconds.", "seconds")
    # Stored relative to the window start; the time shift adds the window's epoch.
    b.add("process_start_time_seconds", job, b.app_start_s)
    _gc_series(b, idx, route, rng)
    b.family("target_info", "gauge", "Target metadata")
    by_labels: dict[tuple, np.ndarray] = {}  # a restart in place keeps its labels
    for era in range(len(sim.restarts) + 1):
        key = tuple((k.replace(".", "_"), str(v)) for k, v in resource_of(sim.restarts, era))
        by_labels[key] = by_labels.get(key, np.zeros(b.n, bool)) | (b.app_era == era)
    for key, live in by_labels.items():
        b.add("target_info", {**job, **dict(key)}, np.where(live, 1.0, np.nan))
    b.family("python_info", "gauge", "Python platform information")
    b.add("python_info", {**job, "implementation": "CPython", "major": "3", "minor": "11",
                          "patchlevel": "7", "version": "3.11.7"}, b.const(1))


def _leaked_bytes(b: SeriesBuilder, sim: Simulation, knobs: dict[str, float],
                  plan: PhasePlan | None) -> np.ndarray:
    """memory_leak: what the cache keeps of each payment the running process answered
    while the flag was on."""
    per = knobs["leak_kb_per_payment"] * 1024.0
    plan = sim.plan_of("memory_leak")
    if plan is None or per <= 0:
        return np.zeros(b.n)
    t, duration_ns = sim.traffic, b.window_ms * 1_000_000
    on = ((t.route == POST_PAYMENT) & (t.status == 200) & (t.end_ns >= plan.onset * duration_ns)
          & (t.end_ns < plan.recovery * duration_ns))
    out = np.zeros(b.n)
    first = int(b.app_era[0])
    for era in range(len(sim.restarts) + 1):
        mine = on & (t.era == era)
        # an earlier span's cache goes on in the process that was running at its end
        out = np.where(b.app_era == era, b.counter(b.index(t.end_ns[mine])) * per
                       + (b.start("leaked", 0.0) if era == first else 0.0), out)
    b.end("leaked", out[-1])
    return out


def _gc_series(b: SeriesBuilder, idx: np.ndarray, route: np.ndarray,
               rng: np.random.Generator) -> None:
    """CPython's generational collector: a gen0 collection per ``threshold0`` net
    allocations; every tenth of those is a gen1 instead, and every tenth gen1 a gen2 when
    enough long-lived objects are pending (about half the time here)."""
    allocs = np.array([ALLOCS[r] for r in range(3)])[route]
    allocs = allocs * np.exp(0.5 * rng.standard_normal(route.shape[0]))
    total = b.counter(idx, allocs) + b.start("allocations", 4.2e6)
    b.end("allocations", total[-1])
    events = np.floor(total / GC_THRESHOLD0).astype(np.int64)
    tenth = events // 10
    full_tries = tenth // 10
    # (a later span of a long window draws for its own tries only: its counts go on from the
    # earlier span's)
    tries = full_tries - (full_tries[0] if b.carry is not None and not b.carry.first else 0)
    granted = np.cumsum(np.concatenate([[0], rng.random(int(tries[-1]) + 1) < 0.5]))
    gen2 = granted[tries]
    gen1 = tenth - gen2
    gen0 = events - tenth
    b.family("python_gc_collections_total", "counter", "Number of times this generation was "
             "collected")
    b.family("python_gc_objects_collected_total", "counter", "Objects collected during gc")
    b.family("python_gc_objects_uncollectable_total", "counter", "Uncollectable objects found "
             "during GC")
    for gen, count, per in (("0", gen0, 7.4), ("1", gen1, 15.3), ("2", gen2, 240.0)):
        b.add("python_gc_collections_total", {**APP_JOB, "generation": gen},
              count.astype(np.float64))
        step = np.diff(count, prepend=count[0])
        freed = rng.poisson(per * np.maximum(step, 0)).astype(np.float64)
        b.add("python_gc_objects_collected_total", {**APP_JOB, "generation": gen},
              np.cumsum(freed) + per * float(count[0]))
        b.add("python_gc_objects_uncollectable_total", {**APP_JOB, "generation": gen},
              b.const(0))
