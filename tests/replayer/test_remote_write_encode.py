"""Decode what we send with the remote-write schema and compare with the recording."""

from __future__ import annotations

import cramjam
import numpy as np
import pytest
from google.protobuf.internal import decoder as pb_decoder

from benchmarks.naive import naive_write_request
from replayer.remote_write import remote_pb2
from replayer.remote_write.encode import (
    SeriesEncoder,
    compress,
    metadata_request,
    plan_pieces,
    varint,
    varint_matrix,
)
from replayer.timeshift import shift
from tests.conftest import cached_incident


def decode(body: bytes) -> remote_pb2.WriteRequest:
    wr = remote_pb2.WriteRequest()
    wr.ParseFromString(body)
    return wr


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31, 1_795_778_361_997, 2**63 - 1,
                                   -1, -1_795_778_361_997])
def test_varint_matches_protobuf(value: int) -> None:
    mine = varint(value)
    decoded, pos = pb_decoder._DecodeSignedVarint(mine, 0)
    assert (decoded, pos) == (value, len(mine))
    rows, lengths = varint_matrix(np.array([value], np.int64))
    assert bytes(rows[0, : lengths[0]]) == mine


def test_whole_incident_decodes_to_exactly_its_samples() -> None:
    inc = shift(cached_incident("slow_query"), 1_795_778_400_000 * 1_000_000)
    enc = SeriesEncoder(inc.series)
    pieces = plan_pieces(inc.series, 37)  # odd size: series split across pieces
    got: dict[tuple, list] = {}
    ex: dict[tuple, list] = {}
    for lo in range(0, len(pieces), 50):
        wr = decode(cramjam.snappy.decompress_raw(compress(enc.write_request(
            pieces[lo:lo + 50]))).read())
        for ts in wr.timeseries:
            key = tuple((lab.name, lab.value) for lab in ts.labels)
            got.setdefault(key, []).extend((s.timestamp, s.value) for s in ts.samples)
            ex.setdefault(key, []).extend(
                (e.timestamp, e.value, tuple((lab.name, lab.value) for lab in e.labels))
                for e in ts.exemplars)
    assert list(got) == [s.labels for s in inc.series]
    for s in inc.series:
        assert got[s.labels] == list(zip(s.t_ms.tolist(), s.values.tolist()))
        e = s.exemplars
        want = [(int(e.t_ms[i]), float(e.value[i]),
                 (("span_id", bytes(e.span_id[i]).hex()), ("trace_id", bytes(e.trace_id[i]).hex())))
                for i in range(len(e))]
        assert ex[s.labels] == want
    assert sum(len(v) for v in ex.values()) == inc.exemplar_count > 0


def test_labels_sorted_and_timestamps_are_milliseconds() -> None:
    inc = shift(cached_incident("baseline"), 1_795_778_400_000 * 1_000_000)
    wr = decode(SeriesEncoder(inc.series).write_request(plan_pieces(inc.series[:3], 5000)))
    for ts in wr.timeseries:
        names = [lab.name for lab in ts.labels]
        assert names == sorted(names) and "__name__" in names
        stamps = [s.timestamp for s in ts.samples]
        assert stamps == sorted(stamps)
        assert 1_795_776_000_000 <= stamps[0] <= 1_795_778_400_000


def test_snappy_is_block_format_not_framed() -> None:
    body = b"remote write body " * 100
    packed = compress(body)
    assert bytes(cramjam.snappy.decompress_raw(packed)) == body
    assert not packed.startswith(b"\xff\x06\x00\x00sNaPpY")  # the framed stream identifier


def test_metadata_decodes() -> None:
    inc = cached_incident("baseline")
    wr = decode(metadata_request(inc.families))
    got = {(m.metric_family_name, m.type, m.help, m.unit) for m in wr.metadata}
    hist = remote_pb2.MetricMetadata.HISTOGRAM
    assert ("http_server_request_duration_seconds", hist, "Duration of HTTP server requests.",
            "seconds") in got
    assert len(got) == len(inc.families)


@pytest.mark.parametrize("scenario", ["slow_query", "pool_exhaustion"])
def test_bytes_equal_protobufs_own_serialisation(scenario: str) -> None:
    inc = shift(cached_incident(scenario), 1_795_778_400_000 * 1_000_000)
    pieces = plan_pieces(inc.series, 100)
    assert SeriesEncoder(inc.series).write_request(pieces) == naive_write_request(
        inc.series, pieces)


def test_zero_values_and_negative_zero_like_protobuf() -> None:
    from generator.model import Series, make_labels

    s = Series(make_labels({"__name__": "z"}), np.array([0, 1, 2], np.int64),
               np.array([0.0, -0.0, 1.5]))
    pieces = plan_pieces([s], 10)
    assert SeriesEncoder([s]).write_request(pieces) == naive_write_request([s], pieces)


def test_metadata_bytes_equal_protobuf() -> None:
    inc = cached_incident("baseline")
    wr = remote_pb2.WriteRequest()
    for f in inc.families:
        wr.metadata.add(type=remote_pb2.MetricMetadata.MetricType.Value(f.type.upper()),
                        metric_family_name=f.name, help=f.help, unit=f.unit)
    assert metadata_request(inc.families) == wr.SerializeToString()


@pytest.mark.parametrize("t0", [1_795_778_400_000, 200, 2**34])
def test_uniform_timestamp_fast_path_matches_protobuf(t0: int) -> None:
    from generator.model import Series, make_labels

    t = t0 + np.arange(50, dtype=np.int64) * 15_000
    values = np.where(np.arange(50) % 3 == 0, 0.0, np.arange(50) * 1.5)
    values[7] = -0.0
    s = Series(make_labels({"__name__": "u"}), t, values)
    pieces = plan_pieces([s], 17)
    assert SeriesEncoder([s]).write_request(pieces) == naive_write_request([s], pieces)


def test_series_sharing_time_grids_encode_like_protobuf() -> None:
    """Series on shared timestamp arrays take the grid path: whole-series requests on one
    grid (broadcast), pieces cut at other offsets, two grids in one request, a grid whose
    varints change length, runs of +0.0 values; a series on its own array falls back."""
    from generator.model import Series, make_labels

    rng = np.random.default_rng(7)
    grid_a = 1_795_778_400_000 + np.arange(240, dtype=np.int64) * 15_000
    grid_b = grid_a + 7_500
    across = 2**35 - 120 * 15_000 + np.arange(240, dtype=np.int64) * 15_000  # 5 -> 6 bytes
    series = []
    for i, t in enumerate([grid_a] * 5 + [grid_b] * 3 + [across] * 2 + [grid_a.copy()]):
        v = rng.normal(size=240).round(2)
        v[rng.integers(0, 240, 3)] = 0.0
        if i % 2:
            v[40:170] = 0.0  # a long run of zeros
        if i == 3:
            v[:] = 0.0  # a counter that never moved
        series.append(Series(make_labels({"__name__": f"m{i}"}), t, v))
    enc = SeriesEncoder(series)
    for max_samples in (240, 100, 37):
        pieces = plan_pieces(series, max_samples)
        for group in ([p for p in pieces if p.series < 5], pieces[:9], pieces):
            assert enc.write_request(group) == naive_write_request(series, group), \
                (max_samples, group[:3])
    assert enc._grids([p for p in plan_pieces(series, 240) if p.series < 8]) is not None
    assert enc._grids([p for p in plan_pieces(series, 240) if p.series in (8, 9)]) is None
    assert enc._grids([p for p in plan_pieces(series, 240) if p.series == 10]) is None


def test_32_bit_varint_path_matches_the_general_one() -> None:
    from replayer import bulk
    from replayer.remote_write.encode import varint_matrix
    from replayer.wire import varint

    edges = [0, 1, 127, 128, 2**14 - 1, 2**14, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**32 - 1]
    values = np.array(edges, np.int64)
    fast, general = bulk.varint_piece(values), varint_matrix(values)
    np.testing.assert_array_equal(fast[1], general[1])
    np.testing.assert_array_equal(fast[0], general[0])
    assert [bytes(fast[0][i, :fast[1][i]]) for i in range(len(edges))] == [varint(v) for v in edges]
    wide = np.array([5, 2**32, 2**40], np.int64)  # past 32 bits: the general path
    assert [bytes(r[:k]) for r, k in zip(*bulk.varint_piece(wide))] == [varint(int(v))
                                                                       for v in wide]


@pytest.mark.parametrize("zero_value", [False, True])
def test_exemplars_of_either_path_equal_protobuf(zero_value: bool) -> None:
    """Same-size exemplars are written as fixed rows; a +0.0 value (left out) or
    timestamps of two varint lengths take the packing path. Both equal protobuf."""
    from generator.model import Exemplars, Series, make_labels

    t = np.array([2**35 - 30_000, 2**35 - 15_000, 2**35, 2**35 + 15_000], np.int64)
    rng = np.random.default_rng(3)
    ex_values = rng.random(4) + 0.5
    if zero_value:
        ex_values[1] = 0.0
    ex = Exemplars(t.copy(), ex_values, rng.integers(0, 256, (4, 16), dtype=np.uint8),
                   rng.integers(0, 256, (4, 8), dtype=np.uint8))
    s = Series(make_labels({"__name__": "h_bucket", "le": "0.5"}), t, np.arange(4.0), ex)
    for pieces in (plan_pieces([s], 10), plan_pieces([s], 2)):
        assert SeriesEncoder([s]).write_request(pieces) == naive_write_request([s], pieces)
    late = Series(s.labels, t + 2**36, np.arange(4.0), Exemplars(
        t + 2**36, ex_values, ex.trace_id, ex.span_id))  # one varint length
    pieces = plan_pieces([late], 10)
    assert SeriesEncoder([late]).write_request(pieces) == naive_write_request([late], pieces)
