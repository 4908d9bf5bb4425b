"""A closed task's last transaction readable where its next owner's restore ends (one producer
per worker, `runtime/markers.py`): the wait on the changelog partitions' last stable offsets,
against the broker, with a transaction left open, then committed; and one never committed."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streamkit.runtime.exactly_once import TransactionalCheckpointer
from streamkit.runtime.markers import await_markers
from streamkit.runtime.task import TaskState
from streamkit.settings import load_settings
from streamkit.state.changelog import ChangelogReader
from tests.kafkahelp import bootstrap, create_topic


async def test_the_wait_ends_once_the_transaction_s_marker_is_on_the_partition(uid: str) -> None:
    topic = f"markers-{uid}"
    await create_topic(topic, 1)
    tp = TopicPartition(topic, 0)
    reader = ChangelogReader(load_settings(broker=bootstrap()), f"markers-{uid}")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), transactional_id=f"mk-{uid}")
    await producer.start()
    try:
        await producer.begin_transaction()
        sent = await (await producer.send(topic, b"row", key=b"k"))
        written = {tp: sent.offset}
        waiting = asyncio.create_task(await_markers(reader.stable_ends, written, 60))
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert not done, "returned while the transaction was open (its row not readable yet)"
        assert (await reader.stable_ends([tp]))[tp] <= sent.offset
        await producer.commit_transaction()
        assert await asyncio.wait_for(waiting, 20)
        assert (await reader.stable_ends([tp]))[tp] > sent.offset  # where a restore reads to

        # a transaction that never commits: the wait gives up after its patience
        await producer.begin_transaction()
        open_row = await (await producer.send(topic, b"row2", key=b"k"))
        assert not await await_markers(reader.stable_ends, {tp: open_row.offset}, 0.3)
        await producer.abort_transaction()
        assert await await_markers(reader.stable_ends, {tp: open_row.offset}, 20)  # aborted

        async def unreachable(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
            raise ConnectionError("broker away")

        assert not await await_markers(unreachable, {tp: 0}, 20)  # logged, not raised
    finally:
        await producer.stop()
        await reader.stop()


async def test_the_checkpoint_waits_for_the_changelogs_of_its_closed_tasks_only() -> None:
    """Step 5 asks for the committed changelog offsets of the tasks it closed for good, not of
    the ones that go on running (their next checkpoint is theirs)."""
    asked: list[list[TopicPartition]] = []

    async def ends(tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        asked.append(sorted(tps))
        return {tp: 1_000 for tp in tps}  # every marker written

    checkpointer = TransactionalCheckpointer("g", cast(Any, None))
    checkpointer.stable_ends = ends

    def task(status: TaskState, committed: dict[tuple[str, int], int]) -> Any:
        return SimpleNamespace(task=SimpleNamespace(
            status=status, state=SimpleNamespace(changelog_committed=committed)
        ))  # fmt: skip

    closed = task(TaskState.CLOSED, {("a-changelog", 1): 5, ("b-changelog", 1): 9})
    running = task(TaskState.RUNNING, {("a-changelog", 0): 7})
    await checkpointer._readable([closed, running])
    assert asked == [[TopicPartition("a-changelog", 1), TopicPartition("b-changelog", 1)]]
