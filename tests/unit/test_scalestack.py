"""How ``benchmarks.scale --hosts N`` spreads gateway processes and client connections."""

from __future__ import annotations

from benchmarks.loadclient import ClientConfig
from benchmarks.scalestack import by_transport, per_host, split


def test_split_is_even_and_complete() -> None:
    assert split(7, 2) == [4, 3]
    assert split(5000, 3) == [1667, 1667, 1666]


def test_per_host_gives_each_host_its_own_tokens_and_enough_processes() -> None:
    cfg = ClientConfig(
        port=8700, connections=45_000, tokens=tuple(str(i) for i in range(45_000)), processes=3
    )
    parts = per_host(cfg, ["127.0.0.2", "127.0.0.3"], max_per_process=19_000)
    assert [p.host for p in parts] == ["127.0.0.2", "127.0.0.3"]
    assert [p.connections for p in parts] == [22_500, 22_500]
    assert parts[0].tokens + parts[1].tokens == cfg.tokens
    assert all(p.connections / p.processes <= 19_000 for p in parts)
    assert by_transport(parts, [22_500, 22_499]) == {"ws": {"target": 45_000, "connected": 44_999}}
    assert per_host(cfg, ["127.0.0.1"], 19_000) == [cfg]
