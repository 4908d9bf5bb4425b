"""`Task.pause` (the exactly-once checkpoint's first step) on a real task, no broker: a task
paused while it is still restoring processes nothing until `resume`, even once
records arrive; a closing task's pause returns only once it ended. (Under cooperative
rebalancing new tasks restore while the others checkpoint: a task that started processing
during a checkpoint's pause was sealed in the middle of handing a batch to the producer.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import streamkit as sk
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.pass_control import PassControl
from streamkit.runtime.task import Task, TaskState
from tests.badinput import ListCollector, Made, consumer_record


def echo_task(uid: str) -> tuple[Task, ListCollector, str]:
    app = sk.App(f"pause-{uid}")
    source = app.topic(f"pause-in-{uid}", partitions=1)
    out = app.topic(f"pause-out-{uid}", partitions=1)

    @app.agent(source, sink=out)
    async def echo(stream: sk.Stream[Any]) -> AsyncIterator[Any]:
        async for value in stream:
            yield value

    (stage,) = app.stages
    collector = ListCollector()
    task = Task(
        stage,
        0,
        cast(RecordCollector, collector),
        dlq_topic=app.dlq.name,
        on_agent_error="dlq",
        on_room=lambda: None,
    )
    return task, collector, source.name


async def spin(n: int = 200) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_a_task_paused_while_restoring_processes_nothing_until_resumed(uid: str) -> None:
    task, collector, topic = echo_task(uid)
    task.start()
    assert task.status is TaskState.RESTORING  # not running yet
    await task.control.pause(task)
    await spin()
    assert task.accepting  # running now (mypy narrowed `status` above)
    made = [Made("good", None, b'{"n": %d}' % i) for i in range(5)]
    assert task.put([consumer_record(topic, i, m) for i, m in enumerate(made)])
    await spin()
    assert collector.records == [] and task.committable is None  # held at the boundary
    task.resume()
    for _ in range(1000):
        if task.committable == 5:
            break
        await asyncio.sleep(0)
    assert len(collector.records) == 5
    await task.close(5)


async def test_pausing_a_closing_task_waits_until_it_ended(uid: str) -> None:
    task, _, _ = echo_task(uid)
    task.start()
    await spin()
    closing = asyncio.create_task(task.close(5))
    await asyncio.sleep(0)
    assert task.status is TaskState.CLOSING
    await task.control.pause(task)
    assert task.runner is not None and task.runner.done()
    await closing


class _Runner:
    """A stand-in task for `PassControl`: its runner takes events of a few steps each and
    parks between them."""

    def __init__(self, control: PassControl) -> None:
        self.status = TaskState.RUNNING
        self.control = control
        self.events = 0
        self.mid_event = False
        self.runner: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            self.mid_event = True
            for _ in range(3):  # an event of three steps
                await asyncio.sleep(0)
            self.mid_event = False
            self.events += 1
            await self.control.park(None)


async def test_pause_now_awaits_only_a_busy_task_and_never_misses_its_boundary() -> None:
    control = PassControl()
    fake = _Runner(control)
    fake.runner = asyncio.create_task(fake.run())
    await asyncio.sleep(0)
    assert fake.mid_event
    waiting = control.pause_now(fake)
    assert waiting is not None  # busy: to be awaited
    await spin(10)  # it reaches its boundary before anyone awaits: the pause still ends
    await asyncio.wait_for(waiting, 1.0)
    assert not fake.mid_event and fake.events == 1
    control.wake()  # while pausing, nothing but a close wakes it
    await spin(10)
    assert fake.events == 1
    control.resume(more=False)
    assert control.pause_now(fake) is None  # parked: nothing to await
    control.resume(more=True)  # woken: the next event starts
    await spin(10)
    assert fake.events == 2
    fake.runner.cancel()
