"""Exactly-once: where the tasks of newly assigned partitions start, without holding up the
group (`Worker.on_assigned`).

aiokafka heartbeats only between rebalance callbacks: a callback longer than
`session_timeout_ms` gets the worker expelled from the group, and its next transaction is
fenced. A partition's committed offset may stay unstable for up to a transaction timeout: an
open transaction of its previous owner (killed, or expelled) still holds offsets for it. So the
callback waits for no such transaction:

1. Register the transactional producers of the partitions' tasks (per partition, this ends the
   previous owner's open transaction; per worker, it ends what this worker's ids left open).
2. Read the committed offsets once, with require_stable. The tasks whose every input is final
   are seeked and started now.
3. The others are pending: a background wait reads their offsets until no transaction holds
   them, then seeks and starts their tasks, unless they were revoked meanwhile (`revoked`) or
   a recovery dropped every task (`reset`). Meanwhile the worker heartbeats, takes part in
   rebalances and checkpoints its other tasks; a pending partition is not fetched (it has no
   task) and commits nothing.

A task starts between two checkpoints when the tasks share a transaction (`lock`), and always
with producers acquired at that moment (a failed transaction may have replaced them); an
assignment of nothing new waits for no checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals import Commits, fetch_stable_commits, stable_commits_once
from streamkit.runtime import faults
from streamkit.runtime.task_manager import TaskManager
from streamkit.runtime.txn_producers import ProducerSet

log = logging.getLogger(__name__)

# Start the tasks of these partitions: (partitions, producers by task, their commits)
Assign = Callable[[set[TopicPartition], dict[TopicPartition, Any], Commits], None]


class Positions:
    def __init__(
        self,
        consumer: Any,
        producers: ProducerSet,
        tasks: TaskManager,
        assign: Assign,
        on_failure: Callable[[BaseException], None],
        lock: asyncio.Lock | None = None,
    ) -> None:
        self._consumer = consumer
        self._producers = producers
        self._tasks = tasks
        self._assign = assign
        self._on_failure = on_failure
        self._lock = lock  # held while a checkpoint runs (tasks sharing one transaction)
        self._epoch = 0  # moved by `reset`: what was read before it starts nothing
        self._pending: dict[TopicPartition, int] = {}  # waiting for a stable offset: epoch
        self._waits: set[asyncio.Task[None]] = set()
        self.stopping: Callable[[], bool] = lambda: False

    @property
    def pending(self) -> set[TopicPartition]:
        """Assigned partitions whose tasks wait for their committed offset."""
        return set(self._pending)

    async def assigned(self, tps: set[TopicPartition]) -> None:
        """Steps 1-3 for partitions just assigned."""
        epoch = self._epoch
        began = time.monotonic()
        keys = {self._tasks.task_key(tp) for tp in tps}
        waiting = {self._tasks.task_key(tp) for tp in self._pending}
        await self._producers.keep_only(keys | waiting | set(self._tasks.tasks))  # (1)
        await self._producers.acquire(keys)
        fenced_in = time.monotonic() - began
        found, held = await stable_commits_once(self._consumer, sorted(tps))  # (2)
        held_keys = {self._tasks.task_key(tp) for tp in held}
        later = {tp for tp in tps if self._tasks.task_key(tp) in held_keys}
        await self._start(tps - later, found, epoch)
        log.info(
            "transactional producers of %d partitions ready in %.2fs, committed offsets read "
            "in %.2fs%s",
            len(keys),
            fenced_in,
            time.monotonic() - began - fenced_in,
            f"; {len(later)} still held by an open transaction: their tasks start once it ends"
            if later
            else "",
        )
        if later and epoch == self._epoch:  # (3)
            for tp in later:
                self._pending[tp] = epoch
            wait = asyncio.create_task(self._wait(later, epoch), name="streamkit-positions")
            self._waits.add(wait)
            wait.add_done_callback(self._wait_done)

    def revoked(self, tps: Iterable[TopicPartition]) -> None:
        """Pending partitions revoked: their wait starts nothing for them."""
        for tp in tps:
            self._pending.pop(tp, None)

    def reset(self) -> None:
        """A recovery dropped every task and rejoins: nothing read before starts a task."""
        self._epoch += 1
        self._pending.clear()
        for wait in self._waits:
            wait.cancel()

    async def close(self) -> None:
        self.reset()
        waits, self._waits = list(self._waits), set()
        await asyncio.gather(*waits, return_exceptions=True)

    async def _wait(self, tps: set[TopicPartition], epoch: int) -> None:
        began = time.monotonic()
        found = await fetch_stable_commits(self._consumer, sorted(tps))
        started = await self._start(tps, found, epoch, pending=True)
        if started:
            log.info(
                "committed offsets of %d held partitions final after %.2fs: their tasks start",
                len(started),
                time.monotonic() - began,
            )

    def _wait_done(self, wait: asyncio.Task[None]) -> None:
        self._waits.discard(wait)
        if not wait.cancelled() and wait.exception() is not None:
            self._on_failure(wait.exception())  # type: ignore[arg-type]

    async def _start(
        self,
        tps: set[TopicPartition],
        found: Commits,
        epoch: int,
        pending: bool = False,
    ) -> set[TopicPartition]:
        """Seek and start the tasks of `tps` (those still ours), between two checkpoints; an
        assignment of nothing new is logged as such too (scripts wait for that line)."""
        # nothing new to start (a cooperative round's kept partitions): no checkpoint to wait
        # for, and the member rejoins at once for the round that hands over what it revoked
        guard = self._lock if self._lock is not None and tps else contextlib.nullcontext()
        async with guard:
            if epoch != self._epoch or self.stopping():
                return set()
            if pending:  # only those neither revoked nor dropped meanwhile
                tps = {tp for tp in tps if self._pending.get(tp) == epoch}
                for tp in tps:
                    del self._pending[tp]
                if not tps:
                    return set()
            if tps and self._tasks.tasks:  # (a test hook: new tasks beside running ones)
                await faults.delayed("delay-start-beside")
            producers = await self._producers.acquire({self._tasks.task_key(tp) for tp in tps})
            if epoch != self._epoch:
                return set()
            commits: Commits = {}
            for tp in sorted(tps):
                commit = found.get(tp)
                if commit is not None:
                    try:
                        self._consumer.seek(tp, commit.offset)
                    except IllegalStateError:  # no longer assigned: its revoke is on its way
                        continue
                    commits[tp] = commit
            self._assign(tps, producers, commits)
        return tps
