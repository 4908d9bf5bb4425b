"""The assignment side of exactly-once with one transactional producer per worker, with real
worker processes (`tests.procapp`): tasks of newly assigned partitions start between two
checkpoints, and the next checkpoint must pause them and carry their offsets with whatever
they produced into the collector every task shares. Every input record's output is checked
by its coordinates, read to the end offsets (read_committed)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.kafkahelp import wait_until
from tests.rebalancehelp import feed, teardown
from tests.test_cooperative import PARTITIONS, assert_once_each, coop_worker

RATE = 300  # events/s over the partitions


async def test_the_checkpoint_after_an_assignment_commits_the_new_tasks_offsets(
    uid: str, tmp_path: Path
) -> None:
    """`a` runs alone, `b` joins, then leaves (SIGTERM): `a` gets `b`'s partitions back while
    its own keep running. Their tasks start holding the checkpoints' lock for a second (a
    test hook), so the commit loop's next checkpoint waits for them. (Without the hook the
    same order comes about when the assignment waits for a running checkpoint and the next
    one is due at once, e.g. the last took longer than the interval: the lock goes to the
    assignment first, while the commit loop already holds its list.) That checkpoint takes
    a second between its pause and its snapshot (a test hook: a task slow to reach its event
    boundary), during which the new tasks process records into the collector every task
    shares; `a` is killed -9 right after it commits. A checkpoint of the tasks that were
    running when it was called, not of those running when it began, commits the new tasks'
    outputs without their offsets, and the next owner produces them again."""
    topic, out = f"proc-in-{uid}", f"proc-out-{uid}"
    hooks = ",".join(
        (
            "delay-start-beside:1",
            "delay-checkpoint-paused:1@delay-start-beside",
            "crash-after-checkpoint:1@delay-checkpoint-paused",
        )
    )
    a = coop_worker(uid, tmp_path, "a", STREAMKIT_TEST_HOOK=hooks).start()
    workers = [a]
    stop, sent = asyncio.Event(), list[int]()
    feeder: asyncio.Task[None] | None = None
    try:
        await wait_until(lambda: "assigned proc-in" in a.log(), within=60, what="a")
        feeder = asyncio.create_task(feed(topic, PARTITIONS, RATE, stop, sent, total=RATE * 7))
        b = coop_worker(uid, tmp_path, "b").start()
        workers.append(b)
        await wait_until(lambda: "assigned proc-in" in b.log(), within=60, what="b's partitions")
        await wait_until(lambda: len(sent) > RATE * 3, within=30, what="events sent")
        b.signal(signal.SIGTERM)
        await wait_until(lambda: not a.alive, within=60, what="a's crash after the checkpoint")
        log = a.log()
        assert "test hook: crash-after-checkpoint" in log, log
        # the delayed start was of b's partitions beside a's running ones
        started = log.split("test hook: delay-start-beside", 1)[1].split("test hook", 1)[0]
        assert "(new: proc-in" in started, log
        workers.append(coop_worker(uid, tmp_path, "c").start())
        await feeder
        await assert_once_each(out, sent)
    finally:
        await teardown(stop, feeder, None, workers)
