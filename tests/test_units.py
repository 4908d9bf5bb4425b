"""Codecs, settings and stream operators on their own (no broker needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import streamkit as sk
from streamkit.keys import partition_for_key
from streamkit.serde import JSON, RAW, STR, DecodeError, ModelCodec, TypedCodec, codec_for
from streamkit.settings import load_settings
from streamkit.state.store import open_store
from streamkit.state.table import TablePartition
from streamkit.testing import TestDriver


class Item(BaseModel):
    name: str
    qty: int


def test_codecs_round_trip_and_fail_clearly() -> None:
    assert codec_for(bytes) is RAW and codec_for(str) is STR and codec_for(None) is JSON
    assert isinstance(codec_for(dict), TypedCodec)  # validated: a JSON object (tests/test_types.py)
    model = codec_for(Item)
    assert isinstance(model, ModelCodec)
    assert model.decode(model.encode(Item(name="a", qty=2))) == Item(name="a", qty=2)
    assert JSON.decode(JSON.encode({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}
    with pytest.raises(DecodeError, match="invalid JSON"):
        JSON.decode(b"{nope")
    with pytest.raises(DecodeError, match=r"invalid Item: qty"):
        model.decode(b'{"name": "a", "qty": "many"}')
    with pytest.raises(DecodeError, match="not UTF-8"):
        STR.decode(b"\xff\xfe")


def test_partitioner_matches_java_vectors() -> None:
    # Kafka's UtilsTest.testMurmur2 vectors; partitions printed by the Java client 4.1.1
    # (Utils.toPositive(Utils.murmur2(key)) % 1000).
    from aiokafka.partitioner import murmur2

    java = {b"21": -973932308, b"foobar": -790332482, b"abc": 479470107}
    # aiokafka returns the same 32 bits as an unsigned int.
    assert {k: murmur2(k) for k in java} == {k: v & 0xFFFFFFFF for k, v in java.items()}
    cases = {b"21": 340, b"foobar": 166, b"abc": 107, b"user_123": 615}
    assert {k: partition_for_key(k, 1000) for k in cases} == cases


def test_settings_validate_with_actionable_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(sk.ConfigError, match=r"commit_interval.*STREAMKIT_COMMIT_INTERVAL"):
        load_settings(commit_interval=-1)
    monkeypatch.setenv("STREAMKIT_PROCESSING_GUARANTEE", "maybe_once")
    with pytest.raises(sk.ConfigError, match="processing_guarantee"):
        load_settings()
    monkeypatch.delenv("STREAMKIT_PROCESSING_GUARANTEE")
    monkeypatch.setenv("STREAMKIT_COMIT_INTERVAL", "1")
    with pytest.raises(sk.ConfigError, match="unknown setting STREAMKIT_COMIT_INTERVAL"):
        load_settings()
    monkeypatch.delenv("STREAMKIT_COMIT_INTERVAL")
    with pytest.raises(sk.ConfigError, match="host:port"):
        load_settings(broker="kafka://nohostport")
    with pytest.raises(sk.ConfigError, match="app id"):
        sk.App("bad id!")


def test_the_commit_interval_default_follows_the_guarantee(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().commit_interval == 1.0
    assert load_settings(processing_guarantee="exactly_once").commit_interval == 0.1
    monkeypatch.setenv("STREAMKIT_PROCESSING_GUARANTEE", "exactly_once")
    assert load_settings().commit_interval == 0.1
    assert load_settings(commit_interval=2).commit_interval == 2.0
    monkeypatch.setenv("STREAMKIT_COMMIT_INTERVAL", "3")
    assert load_settings().commit_interval == 3.0


def test_test_hooks_parse() -> None:
    from streamkit.runtime import faults

    assert faults._parse("crash-after-commit:3, fail-before-commit, crash-x:2@delay-y") == {
        "crash-after-commit": (3, ""),
        "fail-before-commit": (1, ""),
        "crash-x": (2, "delay-y"),
    }


def test_map_filter_and_processed_marking() -> None:
    app = sk.App("map-filter")
    src = app.topic("map-filter-in", partitions=1)
    out = app.topic("map-filter-out", partitions=1)
    odd_tens = app.stream(src).filter(lambda v: v % 2 == 1).map(lambda v: v * 10)

    @app.agent(odd_tens, sink=out)
    async def collect(stream: sk.Stream[int]) -> AsyncIterator[int]:
        async for v in stream:
            yield v

    with TestDriver(app) as driver:
        driver.send_many(src, [1, 2, 3, 4, 5])
        assert driver.read_values(out) == [10, 30, 50]
        driver.checkpoint()
        assert driver.committed(src) == {0: 5}  # filtered-out events count as processed


def test_a_table_after_rebalance_is_refused_at_start() -> None:
    app = sk.App("tables-check")
    src = app.topic("tables-in", partitions=2)
    totals = app.table("totals", default=int)
    spread_out = app.stream(src).rebalance(partitions=4)

    @app.agent(spread_out, state=[totals])
    async def spread(stream: sk.Stream[dict[str, int]]) -> None:
        async for v in stream:
            totals[v["k"]] += 1

    with pytest.raises(sk.ConfigError, match=r"table totals.*shuffle/rebalance.*key_by before it"):
        _ = app.stages


def test_a_table_binds_to_the_stage_after_key_by_with_its_partition_count() -> None:
    app = sk.App("tables-bind")
    src = app.topic("bind-in", partitions=2)
    totals = app.table("totals", default=int)
    keyed = app.stream(src).key_by("k", partitions=6)

    @app.agent(keyed, state=[totals])
    async def by_key(stream: sk.Stream[dict[str, int]]) -> None:
        async for v in stream:
            totals[v["k"]] += 1

    stages = app.stages
    assert [t.name for t in stages[1].tables] == ["totals"] and not stages[0].tables
    from streamkit.partitioning import resolve_partitions

    src.partitions = 2
    resolve_partitions(stages)
    assert totals.changelog.partitions == 6
    assert totals.changelog.config == {"cleanup.policy": "compact"}


def test_a_fresh_partition_answers_new_keys_without_sqlite_until_it_evicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition whose store was empty at its first miss keeps every row in its cache: a new
    key costs no SQLite read. After an eviction the store holds rows the cache does not, so
    misses read SQLite again — and find the evicted value, not the default."""
    app = sk.App("fresh")
    table = app.table("t", default=int)
    store = open_store(tmp_path / "p0.sqlite", {"t": "1"}, ["t"])
    reads: list[bytes] = []
    real_get = store.get

    def counting_get(name: str, key: bytes) -> bytes | None:
        reads.append(key)
        return real_get(name, key)

    monkeypatch.setattr(store, "get", counting_get)
    rows = TablePartition(table, 0, store, max_entries=20, on_full=lambda: None)
    for i in range(20):
        assert rows.get(f"k{i}", 0) == 0
        rows.set(f"k{i}", i + 100)
    assert reads == []  # 20 new keys, no SQLite round trip
    store.apply({"t": rows.take_dirty()}, {})
    rows.flushing = {}
    for i in range(20, 40):  # past the bound: clean keys k0.. are evicted
        rows.get(f"k{i}", 0)
    assert "k0" not in rows.cache
    assert rows.get("k0", 0) == 100  # read back from SQLite, not taken for absent
    assert reads
    store.close()


def test_a_checkpoint_takes_changed_keys_in_the_order_of_their_first_change(
    tmp_path: Path,
) -> None:
    """The changelog and SQLite get a snapshot's keys in the order they first changed, not in
    a hash order: a join's rows, buffered in time order, then reach the store's B-tree nearly
    in key order (shuffled, each insert cost 2-3x as much)."""
    app = sk.App("ordered")
    table = app.table("t", default=int)
    store = open_store(tmp_path / "p0.sqlite", {"t": "1"}, ["t"])
    rows = TablePartition(table, 0, store, max_entries=1000, on_full=lambda: None)
    keys = [f"k{(i * 7919) % 500}" for i in range(500)]  # no order a hash would give
    for i, key in enumerate(keys):
        rows.set(key, i)
    rows.set(keys[0], -1)  # changed again: keeps its place
    rows.remove(keys[1])
    rows.forget(keys[2])  # forgotten: not taken at all
    taken = list(rows.take_dirty())
    codec = table.key_codec
    assert taken == [codec.encode(k) for k in keys if k != keys[2]]
    store.close()


def test_a_partition_restored_with_rows_reads_sqlite_on_a_miss(tmp_path: Path) -> None:
    app = sk.App("restored")
    table = app.table("t", default=int)
    store = open_store(tmp_path / "p0.sqlite", {"t": "1"}, ["t"])
    store.apply({"t": {table.key_codec.encode("old"): table.value_codec.encode(7)}}, {})
    rows = TablePartition(table, 0, store, max_entries=20, on_full=lambda: None)
    assert rows.get("new", 0) == 0
    assert rows.get("old", 0) == 7
    store.close()
