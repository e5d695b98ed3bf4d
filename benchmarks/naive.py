"""Baseline (b): the naive remote-write encoder, one protobuf object per sample.

It is also the reference the fast encoder must equal byte for byte (tests use it)."""

from __future__ import annotations

from collections.abc import Sequence

from generator.model import Series
from replayer.remote_write import remote_pb2
from replayer.remote_write.encode import Piece


def naive_write_request(series: Sequence[Series], pieces: Sequence[Piece]) -> bytes:
    wr = remote_pb2.WriteRequest()
    for p in pieces:
        s = series[p.series]
        ts = wr.timeseries.add()
        for k, v in s.labels:
            ts.labels.add(name=k, value=v)
        for t, v in zip(s.t_ms[p.lo:p.hi].tolist(), s.values[p.lo:p.hi].tolist()):
            ts.samples.add(value=v, timestamp=t)
        e = s.exemplars
        for i in range(p.ex_lo, p.ex_hi):
            ex = ts.exemplars.add(value=float(e.value[i]), timestamp=int(e.t_ms[i]))
            ex.labels.add(name="span_id", value=bytes(e.span_id[i]).hex())
            ex.labels.add(name="trace_id", value=bytes(e.trace_id[i]).hex())
    return wr.SerializeToString()
