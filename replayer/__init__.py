"""telemetry-replayer: replay one named incident into Prometheus, Loki and Tempo.

The public API (pinned by tests/replayer/test_api.py):

- :func:`generate` a scenario into an :class:`Incident`;
- :func:`load` a scenario, recording or incident into the backends -> :class:`LoadReport`
  (per-signal accounting, the absolute window, the ground truth in absolute time);
- :func:`read_recording`, :func:`write_recording`, :func:`record` (a window of a stack).
"""

from .api import (
    AbsoluteTruth,
    Incident,
    LoadReport,
    SignalReport,
    Targets,
    generate,
    load,
    read_recording,
    record,
    scope_logql,
    scope_promql,
    write_recording,
)

__all__ = ["AbsoluteTruth", "Incident", "LoadReport", "SignalReport", "Targets", "generate",
           "load", "read_recording", "record", "scope_logql", "scope_promql",
           "write_recording"]
__version__ = "0.1.0"
