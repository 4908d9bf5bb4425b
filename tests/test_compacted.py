"""The one reader of compacted topics (state/compacted.py) against the broker: each of its four
users (restore, standbys, global tables, tables read from a topic) meets a vanished offset
(records deleted by retention, a topic deleted and created again, shorter or longer than the
copy) and ends with exactly the topic's rows, never a mix of two logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import TopicPartition

from streamkit.settings import Settings, load_settings
from streamkit.state import compacted
from streamkit.state.changelog import ChangelogReader
from streamkit.state.compacted import CompactedReader
from streamkit.state.global_table import GlobalTable, GlobalTables
from streamkit.state.source_tables import follow_source_tables
from streamkit.state.standby import Standbys
from streamkit.state.store import PartitionStore, open_store
from streamkit.state.table import Table, TablePartition
from streamkit.state.task_tables import TaskTables
from tests.kafkahelp import bootstrap, create_topic, produce, wait_until

GONE = "is gone"


@pytest.fixture(autouse=True)
def _warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="streamkit.state.compacted")


def settings(workdir: Path | None = None) -> Settings:
    s = load_settings()
    return s if workdir is None else s.model_copy(update={"workdir": workdir})


async def recreate(topic: str, partitions: int = 1) -> None:
    """Delete `topic` and create it again, empty (what `streamkit reset` does to changelogs)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        await admin.delete_topics([topic])
        for _ in range(100):
            await asyncio.sleep(0.1)
            if topic not in await admin.list_topics():
                break
        for _ in range(100):
            try:
                await create_topic(topic, partitions)
                return
            except TopicAlreadyExistsError:
                await asyncio.sleep(0.1)
        raise AssertionError(f"{topic} not created again")
    finally:
        await admin.close()


async def delete_before(tp: TopicPartition, offset: int) -> None:
    """Delete the records of `tp` before `offset` (as retention would)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(offset)})
    finally:
        await admin.close()


async def put(topic: str, rows: dict[bytes, bytes], partition: int = 0) -> None:
    await produce(topic, list(rows.values()), keys=list(rows), partition=partition)


def rows(n: int, tag: str, start: int = 0) -> dict[bytes, bytes]:
    return {f"k{i}".encode(): f"{tag}{i}".encode() for i in range(start, start + n)}


async def topic_id(topic: str) -> str | None:
    reader = CompactedReader(settings(), "test-ids", "test")
    try:
        return (await reader.start({TopicPartition(topic, 0): None}, _no_wipe)).get(topic)
    finally:
        await reader.close()


async def _no_wipe(tp: TopicPartition, start: int) -> None:
    raise AssertionError(f"{tp} wiped")


async def restore(store: PartitionStore, tp: TopicPartition) -> int:
    reader = ChangelogReader(settings(), "test-restore")
    try:
        return await reader.restore(store, {"t": tp})
    finally:
        await reader.stop()


# -- restore -----------------------------------------------------------------------------------


async def test_restore_rebuilds_a_store_whose_changelog_is_shorter_than_its_offset(
    uid: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"cl-short-{uid}"
    tp = TopicPartition(topic, 0)
    await create_topic(topic, 1)
    await put(topic, rows(3, "new"))
    store = open_store(tmp_path / "s.sqlite", {"app": "a"}, ["t"])
    store.apply({"t": {b"stale": b"x", b"k0": b"old0"}}, {(topic, 0): 9})  # an older log
    try:
        assert await restore(store, tp) == 3
        assert dict(store.scan("t")) == rows(3, "new")
        assert store.offsets() == {(topic, 0): 2}
        assert store.topic_ids() == {topic: await topic_id(topic)}
    finally:
        store.close()
    assert f"{topic}[0]: offset 9 {GONE} (log start 0, end 3" in caplog.text


async def test_restore_rebuilds_a_store_whose_offset_retention_deleted(
    uid: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"cl-ret-{uid}"
    tp = TopicPartition(topic, 0)
    await create_topic(topic, 1)
    await put(topic, rows(10, "v"))
    await delete_before(tp, 6)
    store = open_store(tmp_path / "s.sqlite", {"app": "a"}, ["t"])
    store.apply({"t": rows(3, "v")}, {(topic, 0): 2})  # read up to 2, then retention moved on
    try:
        await restore(store, tp)
        assert dict(store.scan("t")) == rows(4, "v", start=6)  # only what the log holds
        assert store.offsets() == {(topic, 0): 9}
    finally:
        store.close()
    assert f"{topic}[0]: offset 2 {GONE} (log start 6, end 10: deleted by retention" in caplog.text


async def test_a_store_from_before_a_reset_is_rebuilt_though_the_new_log_is_longer(
    uid: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`streamkit reset` deletes and recreates the changelog; a store left on another machine
    still reflects offset 1 of the old one. The new log has grown past that offset, so the
    offsets alone look fine: the topic id the store recorded tells."""
    topic = f"cl-reset-{uid}"
    tp = TopicPartition(topic, 0)
    await create_topic(topic, 1)
    await put(topic, {b"a": b"old", b"b": b"old"})
    store = open_store(tmp_path / "s.sqlite", {"app": "a"}, ["t"])
    try:
        await restore(store, tp)
        old_id = store.topic_ids()[topic]
        assert store.offsets() == {(topic, 0): 1}
        await recreate(topic)
        await put(topic, rows(5, "new"))
        new_id = await topic_id(topic)
        assert new_id is not None and new_id != old_id
        assert await restore(store, tp) == 5
        assert dict(store.scan("t")) == rows(5, "new")  # no a, b: not a mix of two logs
        assert store.topic_ids() == {topic: new_id}
        assert store.offsets() == {(topic, 0): 4}
    finally:
        store.close()
    assert f"created again (id {old_id}, now {new_id})" in caplog.text


# -- standbys ----------------------------------------------------------------------------------


def fake_stage(source: str, changelog: str) -> Any:
    table = SimpleNamespace(name="t", changelog=SimpleNamespace(name=changelog), source=False)
    return SimpleNamespace(name="agent.0", source=SimpleNamespace(name=source), tables=[table])


async def test_a_standby_rebuilds_on_a_vanished_offset_at_start_and_while_following(
    uid: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, changelog = f"sb-in-{uid}", f"sb-cl-{uid}"
    await create_topic(changelog, 1)
    await put(changelog, rows(4, "a"))
    stage = fake_stage(source, changelog)
    stale = TaskTables("app", tmp_path, stage, 0, 1000, on_full=lambda: None)
    await stale.open_store()
    assert stale.store is not None
    stale.store.apply({"t": {b"stale": b"x"}}, {(changelog, 0): 40})  # from an older log
    stale.close()

    standbys = Standbys("app", settings(tmp_path), {source: stage}, "test-standby")
    standbys.interval = 0.05
    runner = asyncio.create_task(standbys.run())
    try:
        await standbys.update({TopicPartition(source, 0)})
        (tables,) = standbys.tables.values()
        assert tables.store is not None
        store = tables.store
        await wait_until(lambda: dict(store.scan("t")) == rows(4, "a"), what="the standby")
        assert f"{changelog}[0]: offset 40 {GONE}" in caplog.text

        await recreate(changelog)  # while it follows: its position (4) is past the new end
        await put(changelog, rows(2, "b"))
        await wait_until(lambda: dict(store.scan("t")) == rows(2, "b"), what="the rebuild")
        assert store.offsets() == {(changelog, 0): 1}
        assert f"{changelog}[0]: offset 3 {GONE}" in caplog.text
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await standbys.close()


# -- global tables -----------------------------------------------------------------------------


def global_table(topic: str) -> GlobalTable[bytes, bytes]:
    source = cast(Any, SimpleNamespace(name=topic, partitions=2))
    return GlobalTable("g", source, key_type=bytes, value_type=bytes)


async def test_a_global_table_rebuilds_one_partition_whose_offset_vanished(
    uid: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"gt-{uid}"
    await create_topic(topic, 2)
    await put(topic, rows(5, "p0-"), partition=0)
    await put(topic, rows(3, "p1-", start=10), partition=1)
    first = global_table(topic)
    tables = GlobalTables("app", [first], settings(tmp_path), "test-global")
    await tables.start()
    await tables.close()
    assert first.data == {**rows(5, "p0-"), **rows(3, "p1-", start=10)}

    # retention deletes p0's records before 4 (and more come): the stored offset (4) is fine;
    # p1 loses records the copy has not read yet
    await put(topic, rows(2, "p1b-", start=20), partition=1)
    await delete_before(TopicPartition(topic, 1), 4)
    second = global_table(topic)
    tables = GlobalTables("app", [second], settings(tmp_path), "test-global", interval=0.05)
    await tables.start()
    runner = asyncio.create_task(tables.run())
    try:
        # p1 was read again from its log start (4): only what the log still holds
        assert second.data == {**rows(5, "p0-"), **rows(1, "p1b-", start=21)}
        assert f"{topic}[1]: offset 2 {GONE} (log start 4, end 5: deleted by retention" in (
            caplog.text
        )
        # the topic is created again while the table follows it
        await recreate(topic, 2)
        await put(topic, {b"k0": b"new"}, partition=0)
        await wait_until(lambda: second.data == {b"k0": b"new"}, what="the rebuilt table")
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await tables.close()


# -- tables read from a topic ------------------------------------------------------------------


async def test_a_source_table_partition_is_rebuilt_when_its_topic_is_created_again(
    uid: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    topic = f"st-{uid}"
    await create_topic(topic, 1)
    await put(topic, rows(3, "new"))
    table: Table[bytes, bytes] = Table(
        "t", cast(Any, SimpleNamespace(name=topic)), key_type=bytes, value_type=bytes, source=True
    )
    store = open_store(tmp_path / "s.sqlite", {"app": "a"}, ["t"])
    store.apply({"t": {b"stale": b"x", b"k0": b"old"}}, {(topic, 0): 7})  # an older log
    part = TablePartition(table, 0, store, 1000, lambda: None)
    part.source_offset = 7
    task = SimpleNamespace(tables={"t": part}, wake=lambda: None)
    tasks = cast(Any, SimpleNamespace(tasks={0: task}))
    runner = asyncio.create_task(follow_source_tables(tasks, settings(), "test-src", 0.05))
    try:

        def live() -> dict[bytes, bytes | None]:
            return {**dict(store.scan("t")), **part.flushing}

        await wait_until(lambda: live() == {**rows(3, "new"), b"stale": None}, what="rebuild")
        assert part.source_offset == 2
        assert f"{topic}[0]: offset 7 {GONE} (log start 0, end 3" in caplog.text
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        store.close()


async def test_a_followed_topic_created_again_past_its_position_is_told_by_its_id(
    uid: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a table follows a topic, the topic is deleted, created again and written past
    the table's position before the next fetch: no OffsetOutOfRange, the id tells."""
    monkeypatch.setattr(compacted, "ID_CHECK", 0.0)
    topic = f"gt-id-{uid}"
    await create_topic(topic, 2)
    await put(topic, rows(2, "old"), partition=0)
    table = global_table(topic)
    tables = GlobalTables("app", [table], settings(tmp_path), "test-global", interval=0.05)
    await tables.start()
    try:
        assert table.data == rows(2, "old")
        await recreate(topic, 2)
        await put(topic, rows(5, "new", start=10), partition=0)
        runner = asyncio.create_task(tables.run())
        try:
            await wait_until(lambda: table.data == rows(5, "new", start=10), what="the rebuild")
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    finally:
        await tables.close()
    assert f"{topic}[0]: offset 1 {GONE} (log start 0, end 5: the topic was created again (id" in (
        caplog.text
    )
