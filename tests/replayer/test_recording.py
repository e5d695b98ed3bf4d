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
        if rec["kind"] == "end":
            del rec["sha256"]  # nor a digest
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
    with pytest.raises(RecordingError, match="altered after it was written"):
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


def _small(tmp_path: Path) -> list[dict]:
    inc = generate("slow_query", duration_ms=600_000)
    write_recording(inc, tmp_path / "a.jsonl")
    return [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]


def _first(recs: list[dict], kind: str) -> int:
    return next(i for i, r in enumerate(recs) if r["kind"] == kind)


def _mutate(kind: str, change):  # type: ignore[no-untyped-def]
    def apply(recs: list[dict]) -> int:
        i = _first(recs, kind)
        change(recs[i])
        return i + 1
    return apply


def _dup(rec: dict) -> None:
    rec["t_ms"][3] = rec["t_ms"][2]


@pytest.mark.parametrize("mutation, message", [
    (_mutate("header", lambda r: r.update(step_ms=0)),
     "header field 'step_ms' must be a whole number >= 1, got 0"),
    (_mutate("header", lambda r: r.update(seed="abc")),
     "header field 'seed' must be a whole number >= 0, got 'abc'"),
    (_mutate("spans", lambda r: r["spans"][0].update(kind=300)),
     "malformed 'spans' record: span 0: field 'kind' must be 0-5 (OTLP), got 300"),
    (_mutate("spans", lambda r: r["spans"][0].update(start_ns="soon")),
     "malformed 'spans' record: field 'start_ns': 'soon' is not a whole number"),
    (_mutate("log_stream", lambda r: r["t_ns"].__setitem__(0, 1e30)),
     "malformed 'log_stream' record: field 't_ns': 1e+30 is not a whole number"),
    (_mutate("series", _dup), "malformed 'series' record: series t_ms must increase"),
])
def test_every_malformed_recording_is_exit_2_with_line_and_field(
        tmp_path: Path, mutation, message: str) -> None:  # type: ignore[no-untyped-def]
    """Issue 17, defect 8: these gave tracebacks and exit 1, or (a duplicated timestamp)
    loaded with a sample silently lost."""
    from click.testing import CliRunner

    from replayer.cli import cli

    recs = _small(tmp_path)
    line = mutation(recs)
    path = _write_lines(tmp_path / "bad.jsonl", [json.dumps(r) for r in recs])
    r = CliRunner().invoke(cli, ["load", str(path), "--dry-run"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and not isinstance(r.exception, (TypeError, ValueError))
    first = r.output.splitlines()[0]
    assert first.startswith(f"error: {path}:{line}: "), first
    assert message in first, first


def test_an_altered_value_is_detected_by_the_digest(tmp_path: Path) -> None:
    """A flipped digit in a value loaded silently: the end record's SHA-256 catches it."""
    write_recording(generate("baseline", duration_ms=600_000), tmp_path / "a.jsonl.gz")
    text = gzip.decompress((tmp_path / "a.jsonl.gz").read_bytes()).decode()
    lines = text.splitlines()
    end = json.loads(lines[-1])
    assert len(end["sha256"]) == 64
    rec = json.loads(lines[1])
    i = next(i for i, v in enumerate(rec["values"]) if isinstance(v, float) and v > 1)
    rec["values"][i] = rec["values"][i] + 1  # one digit off, still a valid file otherwise
    lines[1] = json.dumps(rec, sort_keys=True, separators=(",", ":"))
    bad = _write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(RecordingError, match=rf"{len(lines)}: the file was altered after it"):
        read_recording(bad)
    # untouched, it reads; and files from before the digest (none in 'end') still read
    assert read_recording(tmp_path / "a.jsonl.gz").sample_count > 0
    del end["sha256"]
    lines[1] = text.splitlines()[1]
    lines[-1] = json.dumps(end)
    assert read_recording(_write_lines(tmp_path / "old.jsonl", lines)).sample_count > 0
