"""Real request/response pairs recorded from Prometheus 2.42, Loki and Tempo
(copied from shared/reference/captures so the project tests itself on any clone)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "data"


def capture(name: str) -> dict[str, Any]:
    for file in sorted(DATA.glob("*.json")):
        for entry in json.loads(file.read_text()):
            if entry["name"] == name:
                return entry
    raise KeyError(name)


def body_text(name: str) -> str:
    body = capture(name)["response"]["body"]
    return body if isinstance(body, str) else json.dumps(body)


def status(name: str) -> int:
    return int(capture(name)["response"]["status"])
