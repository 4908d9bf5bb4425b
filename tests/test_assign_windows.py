"""The assignment side of exactly-once with one transactional producer per worker, with real
worker processes (`tests.procapp`): tasks of newly assigned partitions start between two
checkpoints, and the next checkpoint must pause them and carry their offsets with whatever
they produced into the collector every task shares. Every input record's output is checked
by its coordinates, read to the end offsets (read_committed)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from tests.kafkahelp import WorkerProcess, wait_until
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

    def logs() -> str:
        return "\n".join(f"{w.log_path.name}:\n{w.log()[-6000:]}" for w in workers)

    async def join_and_leave(b: WorkerProcess) -> None:
        workers.append(b)
        await wait_until(
            lambda: "assigned proc-in" in b.log(), within=60, what="b's partitions", detail=logs
        )
        mark = len(sent)
        await wait_until(lambda: len(sent) > mark + RATE * 2, within=30, what="events sent")
        b.signal(signal.SIGTERM)
        with contextlib.suppress(AssertionError):  # (the caller looks at what happened)
            await wait_until(
                lambda: "test hook: delay-start-beside" in a.log() or not a.alive, within=45
            )

    try:
        await wait_until(lambda: "assigned proc-in" in a.log(), within=60, what="a")
        feeder = asyncio.create_task(feed(topic, PARTITIONS, RATE, stop, sent))
        # b joins and leaves; `a` must then start b's partitions beside its running ones. A
        # rebalance of another shape (e.g. `a` lost its partitions to a session timeout on a
        # loaded machine: all its tasks start anew) proves nothing: another b, up to 3 times
        for attempt in range(3):
            await join_and_leave(coop_worker(uid, tmp_path, f"b{attempt}").start())
            if "test hook: delay-start-beside" in a.log() or not a.alive:
                break
        await wait_until(
            lambda: not a.alive, within=60, what="a's crash after the checkpoint", detail=logs
        )
        log = a.log()
        assert "test hook: crash-after-checkpoint" in log, log
        # the delayed start was of b's partitions beside a's running ones
        started = log.split("test hook: delay-start-beside", 1)[1].split("test hook", 1)[0]
        assert "(new: proc-in" in started, log
        workers.append(coop_worker(uid, tmp_path, "c").start())
        await wait_until(lambda: "assigned proc-in" in workers[-1].log(), within=60, what="c")
        mark = len(sent)
        await wait_until(lambda: len(sent) > mark + RATE, within=30, what="events sent to c")
        stop.set()
        await feeder
        await assert_once_each(out, sent)
    finally:
        await teardown(stop, feeder, None, workers)
