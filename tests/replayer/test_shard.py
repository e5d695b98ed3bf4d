from __future__ import annotations

import pytest

from replayer.errors import UsageError
from replayer.shard import parse_shard, shard
from tests.conftest import cached_incident


def test_shards_partition_the_incident_exactly() -> None:
    inc = cached_incident("slow_query")
    parts = [shard(inc, k, 3) for k in range(3)]
    assert sorted(s.labels for p in parts for s in p.series) == sorted(s.labels
                                                                        for s in inc.series)
    assert sum(p.log_line_count for p in parts) == inc.log_line_count
    assert sum(p.span_count for p in parts) == inc.span_count
    assert all(p.series for p in parts)
    traces = [{t.trace_id[i].tobytes() for t in p.span_tables for i in range(len(t))}
              for p in parts]
    assert not (traces[0] & traces[1]) and not (traces[1] & traces[2])  # traces stay whole
    again = shard(inc, 1, 3)
    assert [s.labels for s in again.series] == [s.labels for s in parts[1].series]


@pytest.mark.parametrize("text", ["2/2", "x/2", "1", "0/0", "-1/3"])
def test_bad_shard_specs(text: str) -> None:
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)
