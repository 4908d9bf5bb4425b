"""A checkpoint's pause reaches a task still restoring its state: the task must stay held at
its first event boundary until `resume` (found by the three-broker chaos: such a task started
processing and submitting while the checkpoint paused the others, and the checkpoint then
sealed a batch that was being handed to the producer — an IndexError in the collector and a
batch sent twice)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
from aiokafka.structs import ConsumerRecord

import streamkit as sk
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.task import Task, TaskState
from tests.badinput import ListCollector


class CountingCollector(ListCollector):
    def __init__(self) -> None:
        super().__init__()
        self.submits = 0

    async def submit(self) -> None:
        self.submits += 1


class SlowState:
    """Stands in for a task's tables: opening waits until the test lets it."""

    def __init__(self) -> None:
        self.partitions: dict[str, Any] = {}
        self.may_open = asyncio.Event()

    async def open(self, reader: Any) -> None:
        await self.may_open.wait()


def record(topic: str, offset: int) -> Any:
    value = orjson.dumps({"n": offset})
    return ConsumerRecord(topic, 0, offset, 0, 0, None, value, None, 0, len(value), ())


async def turns(n: int = 200) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_task_paused_while_restoring_waits_for_resume_before_processing() -> None:
    app = sk.App("pause-restoring")
    source = app.topic("pause-in", partitions=1)
    out = app.topic("pause-out", partitions=1)

    @app.agent(source, sink=out)
    async def echo(stream: sk.Stream[Any]) -> AsyncIterator[Any]:
        async for value in stream:
            yield value

    (stage,) = app.stages
    collector, state = CountingCollector(), SlowState()
    task = Task(
        stage,
        0,
        cast(RecordCollector, collector),
        dlq_topic=app.dlq.name,
        on_agent_error="dlq",
        on_room=lambda: None,
        state=cast(Any, state),
        reader=cast(Any, object()),
    )
    task.start()
    try:
        await turns()
        assert task.status is TaskState.RESTORING
        await asyncio.wait_for(task.pause(), 1)  # nothing to wait for while restoring
        state.may_open.set()
        for _ in range(100):
            if task.accepting:
                break
            await asyncio.sleep(0)
        assert task.accepting
        assert task.put([record(source.name, i) for i in range(5)])
        await turns()
        # held: nothing processed, nothing handed to the producer, until the checkpoint ends
        assert collector.records == [] and collector.submits == 0
        assert task.committable is None
        task.resume()
        for _ in range(1000):
            if task.committable == 5:
                break
            await asyncio.sleep(0)
        assert [orjson.loads(r.value or b"") for r in collector.records] == [
            {"n": i} for i in range(5)
        ]
    finally:
        if task.runner is not None:
            task.runner.cancel()
            await asyncio.gather(task.runner, return_exceptions=True)
