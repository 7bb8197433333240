"""The HTTP benchmark's latency breakdown: it reads the server's Server-Timing header and its
stages, with HTTP (the client's latency less the server's total), add up to the latency."""

from __future__ import annotations

import pytest

from rnnlm.bench.http import breakdown, server_timing_stages
from service.routes.next_token import server_timing


def test_the_header_the_server_writes_is_the_one_the_benchmark_reads() -> None:
    stages = {"validation": 0.001, "model": 0.0125, "total": 0.0140}
    assert server_timing_stages(server_timing(stages)) == pytest.approx(stages)
    assert server_timing_stages('db;desc="x";dur=2.5, cache;dur=0.5') == pytest.approx(
        {"db": 0.0025, "cache": 0.0005}
    )


def test_the_breakdown_adds_up_to_the_client_latency() -> None:
    timings = [
        (0.010, {"validation": 0.001, "model": 0.006, "serialize": 0.001, "total": 0.0085}),
        (0.020, {"validation": 0.002, "model": 0.012, "serialize": 0.001, "total": 0.0160}),
    ]
    rows = {r[0]: r for r in breakdown(timings)}
    assert list(rows) == ["http", "validation", "model", "serialize", "server, unnamed", "latency (client)"]
    assert rows["http"][2] == pytest.approx(1e3 * (0.0015 + 0.004) / 2)  # mean ms
    assert rows["server, unnamed"][2] == pytest.approx(1e3 * (0.0005 + 0.001) / 2)
    parts = [r for name, r in rows.items() if name != "latency (client)"]
    assert sum(r[2] for r in parts) == pytest.approx(rows["latency (client)"][2])  # mean ms add up
    assert sum(r[3] for r in parts) == pytest.approx(100.0)  # and so do the shares
    assert breakdown([]) == []
