"""The store written at most every `state_write_interval` (`TaskTables.record/due/write`): the
changes of checkpoints between two writes wait merged in the tables' `flushing` overlay, where
reads find them after the cache evicted their keys; a write puts all of them into SQLite with
the newest changelog offsets. Real SQLite files; the restore reads an empty changelog."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.state.store import open_store
from streamkit.state.task_tables import TaskTables


class Appended:
    """The checkpoint's collector: the changelog records a snapshot appends."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, int]] = []

    def add(
        self, tp: tuple[str, int], key: bytes | None, value: bytes | None, headers: None, ts: None
    ) -> None:
        self.records.append((tp[0], key, value, tp[1]))


class NothingToReplay:
    async def restore(self, store: Any, sources: Any) -> int:
        return 0


def keyed_app() -> tuple[sk.App, sk.Table[str, int]]:
    app = sk.App("store-writes")
    src = app.topic("sw-in", partitions=1)
    totals = app.table("totals", default=int)

    @app.agent(app.stream(src).key_by("k", partitions=1), state=[totals])
    async def count(stream: sk.Stream[dict[str, str]]) -> None:
        async for v in stream:
            totals[v["k"]] += 1

    return app, totals


async def opened(tmp_path: Path, cache: int, interval: float) -> tuple[TaskTables, str]:
    app, totals = keyed_app()
    stage = app.stages[1]
    tables = TaskTables(app.id, tmp_path, stage, 0, cache, lambda: None, write_interval=interval)
    await tables.open(NothingToReplay())
    return tables, totals.changelog.name


def stored(tables: TaskTables) -> dict[bytes, bytes]:
    assert tables.store is not None
    return dict(tables.store.scan("totals"))


async def test_changes_wait_merged_between_store_writes_and_reads_see_them(
    tmp_path: Path,
) -> None:
    tables, changelog = await opened(tmp_path, cache=100, interval=3600)
    part = tables.partitions["totals"]
    out = Appended()
    for i in range(10):
        part.set(f"k{i}", i)
    tables.snapshot(out)
    tables.record({(changelog, 0): 9}, None)
    assert not tables.due()  # the first write comes after half the interval at the earliest
    part.set("k0", 99)
    part.remove("k1")
    tables.snapshot(out)
    tables.record({(changelog, 0): 11, ("other-changelog", 0): 5}, ("sw-in", 0, 40))
    assert not tables.due()
    assert len(out.records) == 12  # every snapshot went to the changelog
    assert stored(tables) == {} and tables.writes == 0
    for i in range(300):  # misses fill the cache: the clean k0..k9 are evicted
        assert part.get(f"miss{i}", None) is None
    assert "k0" not in part.cache and "k2" not in part.cache
    assert part.get("k0") == 99 and part.get("k2") == 2  # from the overlay
    assert part.get("k1", "absent") == "absent"
    assert sorted(part.iter_keys()) == sorted(["k0"] + [f"k{i}" for i in range(2, 10)])

    assert tables.due(final=True)
    await tables.write()
    encode = part.table.key_codec.encode
    rows = stored(tables)
    assert set(rows) == {encode("k0")} | {encode(f"k{i}") for i in range(2, 10)}
    assert part.table.value_codec.decode(rows[encode("k0")]) == 99
    assert tables.store is not None
    assert tables.store.offsets() == {(changelog, 0): 11, ("sw-in", 0): 40}
    assert part.flushing == {} and tables.writes == 1
    assert part.get("k0") == 99 and part.get("k1", "absent") == "absent"
    tables.close()


async def test_a_write_is_due_at_the_row_bound_and_after_the_interval(tmp_path: Path) -> None:
    tables, _ = await opened(tmp_path, cache=100, interval=0.3)
    part = tables.partitions["totals"]
    out = Appended()
    await tables.write()  # the interval starts again from now
    assert not tables.due()
    for i in range(100):
        part.set(f"k{i}", i)
    tables.snapshot(out)
    assert tables.due() and tables.due(later=True)  # 100 unwritten rows: the cache's bound
    await tables.write()
    assert len(stored(tables)) == 100
    part.set("k0", -1)
    tables.snapshot(out)
    started = time.monotonic()
    assert not tables.due()
    while not tables.due():
        assert time.monotonic() - started < 10, "the interval never ended"
        await asyncio.sleep(0.01)
    assert time.monotonic() - started >= 0.25
    # a checkpoint followed in a moment by another leaves the write to it, not the last one
    assert not tables.due(later=True) and tables.due(final=True, later=True)
    await tables.write()
    assert part.table.value_codec.decode(stored(tables)[part.table.key_codec.encode("k0")]) == -1
    tables.close()


async def test_interval_zero_writes_every_checkpoint(tmp_path: Path) -> None:
    tables, changelog = await opened(tmp_path, cache=100, interval=0.0)
    part = tables.partitions["totals"]
    part.set("a", 1)
    tables.snapshot(Appended())
    tables.record({(changelog, 0): 0}, None)
    assert tables.due() and tables.due(later=True)  # 0: asked of every checkpoint
    await tables.write()
    assert len(stored(tables)) == 1 and tables.writes == 1
    tables.close()


class Finals:
    """A deferred table's owner (`state/deferred.py`'s `Finality`), set by the test."""

    def __init__(self, marker: bytes) -> None:
        self.watermark = -1
        self.newest_final = -1
        self.marker = marker


async def test_a_deferred_tables_rows_wait_for_the_watermark_memory_or_the_retention(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A join's rows (here any table's, deferred) reach SQLite only when they must; until
    then the store records the changelog offset before the oldest range that may hold a live
    row, so a restore replays them."""
    tables, changelog = await opened(tmp_path, cache=100, interval=0.0)
    part, out = tables.partitions["totals"], Appended()
    encode = part.table.key_codec.encode
    finals = Finals(encode("k0"))  # its marker: written with every store write
    tables.defer("totals", finals)
    assert tables.store is not None

    def checkpoint(keys: range, end: int, newest_final: int) -> None:
        for i in keys:
            part.set(f"k{i}", i)
        finals.newest_final = newest_final
        tables.snapshot(out)
        tables.record({(changelog, 0): end}, ("sw-in", 0, end))

    checkpoint(range(10), 9, 500)  # changelog offsets 0..9, the rows final after 500
    assert tables.due()
    await tables.write()
    assert set(stored(tables)) == {encode("k0")}
    assert tables.store.offsets() == {(changelog, 0): -1, ("sw-in", 0): 9}
    checkpoint(range(10, 12), 12, 900)  # 10 is the last transaction's marker: 11, 12
    await tables.write()
    assert tables.store.offsets()[(changelog, 0)] == -1  # the first range is still live
    finals.watermark = 500  # not past 500 yet
    await tables.write()
    assert tables.store.offsets()[(changelog, 0)] == -1
    finals.watermark = 501  # the first range's rows are all final: replay from 10
    await tables.write()
    assert tables.store.offsets()[(changelog, 0)] == 9
    finals.watermark = 901
    await tables.write()
    assert tables.store.offsets()[(changelog, 0)] == 12 and set(stored(tables)) == {encode("k0")}
    assert part.get("k11") == 11 and len(part.flushing) == 11  # reads still find them

    assert "state_cache_entries" not in caplog.text
    checkpoint(range(12, 101), 101, 2000)  # 100 unwritten rows: the cache's bound
    assert tables.due()
    spilled = [r for r in caplog.records if "state_cache_entries is 100:" in r.getMessage()]
    assert len(spilled) == 1 and "the rows of totals go to SQLite" in spilled[0].getMessage()
    await tables.write()
    assert len(stored(tables)) == 101 and part.flushing == {}
    assert tables.store.offsets()[(changelog, 0)] == 101

    checkpoint(range(101, 106), 106, 3000)
    await tables.write()
    assert len(stored(tables)) == 101
    assert tables.due(final=True)  # the task's last checkpoint: its rows still wait
    await tables.write()
    assert len(stored(tables)) == 101 and len(part.flushing) == 5
    assert tables.store.offsets()[(changelog, 0)] == 101  # a restore replays 102..106

    checkpoint(range(106, 108), 108, 4000)
    tables.deferred["totals"].max_age = -1.0  # older than the changelog would keep them
    await tables.write()
    assert len(stored(tables)) == 108

    checkpoint(range(108, 210), 210, 5000)  # the bound again: written, not said again
    assert tables.due()
    assert len([r for r in caplog.records if "state_cache_entries" in r.getMessage()]) == 1
    tables.close()


@settings(max_examples=25, deadline=None)
@given(
    first=st.integers(0, 1300),
    second=st.integers(0, 1300),
    dropped=st.integers(0, 1300),
)
def test_rows_written_in_chunks_read_back_exactly(first: int, second: int, dropped: int) -> None:
    """`PartitionStore.apply` writes rows CHUNK to a statement, the remainder in binary
    sizes: any count of upserts and deletes, across two writes, reads back as a dict would."""
    with tempfile.TemporaryDirectory() as wd:
        store = open_store(Path(wd) / "p.sqlite", {"t": "1"}, ["t"])
        try:
            expected: dict[bytes, bytes] = {}
            one = {b"k%05d" % i: b"v1-%d" % i for i in range(first)}
            store.apply({"t": one}, {("cl", 0): 1})
            expected.update(one)
            two: dict[bytes, bytes | None] = {b"k%05d" % i: None for i in range(dropped)}
            two.update({b"n%05d" % i: b"v2-%d" % i for i in range(second)})
            store.apply({"t": two}, {("cl", 0): 2})
            for key, value in two.items():
                if value is None:
                    expected.pop(key, None)
                else:
                    expected[key] = value
            assert dict(store.scan("t")) == expected
            assert store.offsets() == {("cl", 0): 2}
        finally:
            store.close()
