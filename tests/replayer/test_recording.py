from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from generator import generate
from generator.model import Series, make_labels
from replayer.errors import RecordingError
from replayer.recording import read_recording, recording_bytes, write_recording
from tests.conftest import BUILT_IN, cached_incident

ROOT = Path(__file__).resolve().parents[2]


def test_round_trip_is_lossless(tmp_path: Path) -> None:
    inc = cached_incident("pool_exhaustion")
    path = tmp_path / "r.jsonl.gz"
    write_recording(inc, path)
    back = read_recording(path)
    assert recording_bytes(back) == recording_bytes(inc)
    assert back.truth == inc.truth
    assert [s.labels for s in back.series] == [s.labels for s in inc.series]
    for a, b in zip(inc.span_tables, back.span_tables):
        assert a.attributes == b.attributes and a.events == b.events
        np.testing.assert_array_equal(a.trace_id, b.trace_id)
        # version 2 keeps what the exporter wrote beyond the span's fields
        assert b.scope_schema_url == a.scope_schema_url
        assert (b.scope_schema_url != "") == b.scope_name.startswith(
            "opentelemetry.instrumentation.")
        np.testing.assert_array_equal(b.span_flags(), a.span_flags())
        # the parent's remoteness, as the SDK wrote it: local within payment-service,
        # remote for card-processor's spans (their parent is payment-service's call)
        remote = dict(b.resource)["service.name"] == "card-processor"
        assert set(b.span_flags().tolist()) == {0x300 if remote else 0x100}


def test_version_1_recordings_still_read(tmp_path: Path) -> None:
    """A file written before span flags and schema URLs were kept reads with neither."""
    path = tmp_path / "v1.jsonl"
    write_recording(cached_incident("error_spike"), path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for rec in records:
        if rec["kind"] == "header":
            rec["version"] = 1
        if rec["kind"] == "spans":
            del rec["scope"]["schema_url"]
            for span in rec["spans"]:
                del span["flags"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    back = read_recording(path)
    assert back.span_count == cached_incident("error_spike").span_count
    assert all(t.scope_schema_url == "" and not t.span_flags().any() for t in back.span_tables)


def test_special_floats_survive(tmp_path: Path) -> None:
    inc = generate("baseline", duration_ms=300_000)
    t = np.array([0, 15_000, 30_000], np.int64)
    odd = Series(make_labels({"__name__": "odd"}), t, np.array([np.nan, np.inf, -0.0]))
    from dataclasses import replace

    inc = replace(inc, series=inc.series + (odd,))
    write_recording(inc, tmp_path / "x.jsonl")
    back = read_recording(tmp_path / "x.jsonl").series[-1].values
    assert np.isnan(back[0]) and back[1] == np.inf and np.signbit(back[2])


def test_gzip_bytes_are_deterministic(tmp_path: Path) -> None:
    inc = cached_incident("baseline")
    write_recording(inc, tmp_path / "a.jsonl.gz")
    write_recording(inc, tmp_path / "b.jsonl.gz")
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()
    assert gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()) == recording_bytes(inc)


def test_readable_with_standard_tools(tmp_path: Path) -> None:
    write_recording(cached_incident("baseline"), tmp_path / "a.jsonl")
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    header = json.loads(lines[0])
    assert header["kind"] == "header" and header["version"] == 2
    assert json.loads(lines[-1])["kind"] == "end"
    assert {json.loads(x)["kind"] for x in lines} == {"header", "series", "log_stream", "spans",
                                                      "end"}


@pytest.mark.parametrize("scenario", BUILT_IN)
def test_committed_recordings_regenerate_byte_for_byte(scenario: str) -> None:
    path = ROOT / "recordings" / f"{scenario}.jsonl.gz"
    assert gzip.decompress(path.read_bytes()) == recording_bytes(cached_incident(scenario)), (
        f"{path.name} no longer matches the generator; if the change is intended, run "
        "scripts/regenerate-recordings.sh and commit the files")


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_truncated_file_is_reported(tmp_path: Path) -> None:
    write_recording(cached_incident("baseline"), tmp_path / "a.jsonl")
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    with pytest.raises(RecordingError, match="truncated"):
        read_recording(_write_lines(tmp_path / "cut.jsonl", lines[:-1]))
    with pytest.raises(RecordingError, match="damaged"):
        read_recording(_write_lines(tmp_path / "gap.jsonl", lines[:3] + lines[4:]))


@pytest.mark.parametrize("lines, fragment", [
    (["{not json"], ":1: not a JSON line"),
    (['{"kind": "series"}'], "first record must be the header"),
    (['{"kind": "header", "format": "other"}'], "not a telemetry-replayer recording"),
    (['{"kind": "header", "format": "telemetry-replayer-recording", "version": 99}'],
     "format version 99"),
    ([], "empty file"),
])
def test_malformed_recordings_name_the_line(tmp_path: Path, lines: list[str],
                                            fragment: str) -> None:
    with pytest.raises(RecordingError, match=fragment):
        read_recording(_write_lines(tmp_path / "bad.jsonl", lines))


def test_malformed_series_record(tmp_path: Path) -> None:
    write_recording(cached_incident("baseline"), tmp_path / "a.jsonl")
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["values"] = rec["values"][:-1]
    lines[1] = json.dumps(rec)
    with pytest.raises(RecordingError, match=r":2: malformed 'series' record"):
        read_recording(_write_lines(tmp_path / "bad.jsonl", lines))


def test_series_with_equal_timestamps_share_one_array_when_read(tmp_path: Path) -> None:
    inc = cached_incident("slow_query")
    path = tmp_path / "r.jsonl"
    write_recording(inc, path)
    back = read_recording(path)
    assert len({id(s.t_ms) for s in back.series}) == len({s.t_ms.tobytes()
                                                          for s in inc.series})
    assert all((a.t_ms == b.t_ms).all() for a, b in zip(inc.series, back.series))
