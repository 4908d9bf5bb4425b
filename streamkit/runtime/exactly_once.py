"""Exactly-once: the checkpoint that commits each task's outputs, changelog records and consumed
offsets in a Kafka transaction, with one transactional producer per input partition (a
transaction per task) or one per worker (one transaction for every task); the producers and
their fencing are in `runtime/txn_producers.py`.

A new owner of a partition registers its producer first (`InitProducerId`: per partition, this
fences the previous owner's producer and ends its open transaction; per worker, the group
coordinator fences by generation, and the committed offset is read with `require_stable`); only
then does it read the partition's committed offset and its changelog.

The checkpoint, every `commit_interval`, on revoke and on shutdown:

1. Pause: every running task stops at its next event boundary (the event in flight finishes,
   and so do map_async calls in flight with what follows them; no new event starts); a task
   still restoring is not waited for but held at its first. Sinks beyond Kafka then write
   their rows with the offsets they reach, each in one transaction of its destination
   (`runtime/sinks.py`): a destination may get ahead of the Kafka transaction, never behind;
   dead letters of rows it refused join this one.
2. Snapshot, per task, with no await in between: the offset after its last processed event
   (with its partition time: event time, a source topic), its tables' dirty keys appended to
   their changelog partitions, and its collector sealed
   (everything appended so far belongs to this transaction). Then every task resumes; what it
   produces from now on is held back until its transaction is over.
3. Per task, all tasks at once, in the task's own transaction: hand the sealed batches to its
   producer and, while they are delivered, add the offset (`send_offsets_to_transaction`);
   once both are done, commit, begin the next transaction, release the held batches.
4. Per committed task, when its store is due (`state_write_interval` since its last write,
   its unwritten rows at the cache's bound, or the task's last checkpoint): write every
   change its store lacks to it in one SQLite transaction, with the changelog offsets they
   reflect and the input offset (every due task's store in a few thread hops). Until then
   the changes wait in memory, where reads find them; a join's buffered rows and a time
   window's wait past the interval too (`state/deferred.py`). A checkpoint whose records this
   worker's own tasks read leaves this step to the next one (the follow-up, due once they
   are processed: `cadence.py`), unless the last checkpoint left it already, so the
   follow-up's transaction does not wait for SQLite.
5. Per worker, after the checkpoint that closed tasks for good (a revoke's, the stop's): wait
   until each of their changelog partitions' last stable offset is past the last offset a
   committed transaction of theirs wrote there: its commit marker is written, so the next
   owner's restore, which ends at that offset, holds it (`markers.py`). Per partition the
   next owner's `InitProducerId` waits for those markers.

Crash before step 3 commits: the broker aborts the open transaction (when the next owner
registers the id, or at `transaction_timeout_ms`); read_committed readers never see its records,
and the input is read again from the last committed offset. Crash between 3 and 4, or between
two writes of a store: the store is behind; recovery replays its committed changelog tail.
Either way each input event shows in the committed outputs, the changelog and the offsets
exactly once.

A transaction that fails (fenced, or any error) drops the task's uncommitted work: the worker
then drops every task without committing and rejoins the group (`Worker.recover`).

A task cut short (`Task.close` cancelled it mid-event after `shutdown_timeout`) holds part of an
event whose offset is not committable: its outputs, changelog records and dirty keys. Its
checkpoint aborts like a crash: step 3 aborts its transaction (per worker: the worker's one,
every task in it failing), step 4 writes nothing of it, and the next owner replays the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import ProducerFenced
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals import GroupFenced
from streamkit.runtime import faults
from streamkit.runtime.cadence import inputs_written
from streamkit.runtime.checkpoint import partition_times
from streamkit.runtime.collector import RecordCollector, Sealed
from streamkit.runtime.markers import MARKERS_TIMEOUT, StableEnds, await_markers
from streamkit.runtime.sinks import flush_sinks
from streamkit.runtime.task import Task, TaskState
from streamkit.runtime.txn_producers import ABORT_TIMEOUT, NoProducer, ProducerSet, WorkerProducer
from streamkit.state.task_tables import write_stores

log = logging.getLogger(__name__)

# step 3's outcome per task: the changelog offsets written, an error, or None (nothing to commit)
Outcome = dict[tuple[str, int], int] | BaseException | None


class TransactionFailed(Exception):
    """Some tasks' transactions did not commit; their uncommitted work must be dropped."""

    def __init__(self, failed: dict[TopicPartition, BaseException]) -> None:
        self.failed = failed
        fenced = any(isinstance(e, (ProducerFenced, GroupFenced)) for e in failed.values())
        parts = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(failed))
        first = next(iter(failed.values()))
        super().__init__(
            f"transaction of {parts} {'fenced' if fenced else 'failed'}: "
            f"{type(first).__name__}: {first}"
        )

    @property
    def cut_short(self) -> bool:
        """Only because a task was cancelled mid-event (`CutShort`): no broker fault."""
        return all(isinstance(e, CutShort) for e in self.failed.values())


class CutShort(Exception):
    """A task was cancelled mid-event: nothing of its uncommitted work may commit."""


@dataclass
class _Snapshot:
    task: Task
    tp: TopicPartition  # the task's name: its first input partition
    offsets: dict[TopicPartition, int]  # new committable offsets (those that moved)
    times: dict[TopicPartition, str]  # the inputs' commit metadata (partition times)
    changes: dict[str, dict[bytes, bytes | None]]
    sealed: Sealed


def last_written(results: list[Outcome]) -> dict[tuple[str, int], int]:
    """The last offset each partition got in the committed transactions of `results` (per
    worker every task's result is the same one: merged once)."""
    merged: dict[tuple[str, int], int] = {}
    for result in {id(r): r for r in results if isinstance(r, dict)}.values():
        for ctp, last in result.items():
            merged[ctp] = max(last, merged.get(ctp, -1))
    return merged


class TransactionalCheckpointer:
    def __init__(
        self,
        group_id: str,
        producers: ProducerSet,
        inputs: Mapping[TopicPartition, Any] | None = None,
    ) -> None:
        self._group_id = group_id
        self._producers = producers
        # this worker's input partitions (live): a checkpoint that wrote to one of them is
        # followed at once by another (`cadence.py`), which writes the stores (step 4)
        self._inputs: Mapping[TopicPartition, Any] = {} if inputs is None else inputs
        self._deferred = False  # the last checkpoint left its store writes to this one
        self._lock = asyncio.Lock()  # the commit loop and a revoke never interleave
        # per worker: the changelogs' last stable offsets, to wait for a closed task's last
        # transaction to be readable where its next owner's restore ends (`markers.py`)
        self.stable_ends: StableEnds | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._times: dict[TopicPartition, str] = {}  # the metadata last committed with them
        self._adopted: list[Task] = []  # created while a checkpoint ran: held until its end
        self.commits = 0
        self.checkpoints = 0
        self.total_duration = 0.0  # seconds spent in checkpoints (benchmarks read it)
        self.last_duration = 0.0
        self.last_at: float | None = None  # wall-clock time of the last checkpoint
        self.commit_failures = 0  # transactions that did not commit
        self.on_checkpoint: Callable[[float], None] | None = None  # metrics: the duration
        # the last offset each partition got in the last checkpoint's committed transactions
        self.last_written: dict[tuple[str, int], int] = {}

    def adopt(self, tasks: Iterable[Task]) -> None:
        """Tasks just created (a cooperative assignment) while a checkpoint may be running:
        until it ends they are held (what they produce must not join a transaction that does
        not carry their offsets)."""
        if self._lock.locked():
            for task in tasks:
                task.collector.seal()  # nothing in it yet: this only holds what comes
                self._adopted.append(task)

    def between_checkpoints(self) -> asyncio.Lock:
        """Held while a checkpoint runs: `async with` it to act between two checkpoints."""
        return self._lock

    async def commit(self, tasks: Iterable[Task]) -> None:
        """One checkpoint of `tasks`. Raises TransactionFailed naming the tasks whose
        transaction did not commit (the others did, and their state is written)."""
        async with self._lock:
            await self.commit_held(tasks)

    async def commit_held(self, tasks: Iterable[Task]) -> None:
        """`commit`, the caller holding `between_checkpoints()`."""
        try:
            await self._checkpoint(list(tasks))
        finally:
            adopted, self._adopted = self._adopted, []
            for task in adopted:
                task.collector.release()

    async def _checkpoint(self, tasks: list[Task]) -> None:
        started = time.monotonic()
        tasks = list(tasks)
        # 1. pause every task at an event boundary
        busy = [w for w in (task.pause_now() for task in tasks) if w is not None]
        if busy:
            await asyncio.gather(*busy)
        await faults.delayed("delay-checkpoint-paused")
        try:
            # sinks beyond Kafka: rows and these offsets in their destination first
            await flush_sinks(tasks)
            # 2. snapshot offsets and dirty state, seal each collector
            snapshots = [self._snapshot(task) for task in tasks]
        finally:
            for task in tasks:
                task.resume()
        # 3. the transaction(s)
        results = await self._transactions(snapshots)
        faults.reached("crash-after-checkpoint")
        self.last_written = last_written(results)
        later = self._followed(self.last_written)  # step 4 left to the follow-up
        failed: dict[TopicPartition, BaseException] = {}
        due = []
        for snap, result in zip(snapshots, results, strict=True):
            if isinstance(result, BaseException):
                failed[snap.tp] = result
                continue
            task = snap.task
            # (result None: nothing to commit)
            if result is not None and task.state is not None and (snap.changes or snap.offsets):
                if snap.changes:
                    faults.reached("crash-after-commit")
                at = self._committed.get(snap.tp)
                source = None if at is None else (snap.tp.topic, snap.tp.partition, at)
                task.state.record(result, source)
            # 4. the store, when due: the changes it lacks with the offsets they reflect, one
            # SQLite transaction per task (the tasks' stores are separate files: the due ones
            # written in a few thread hops, `write_stores`)
            if task.state is not None and task.state.due(task.status is TaskState.CLOSED, later):
                due.append(task.state)
        await write_stores(due)
        if self.stable_ends is not None:  # 5. per worker: a closed task's last transaction
            await self._readable(snapshots)  # readable by its next owner's restore
        self.last_duration = time.monotonic() - started
        self.checkpoints += 1
        self.total_duration += self.last_duration
        self.last_at = time.time()
        if self.on_checkpoint is not None:
            self.on_checkpoint(self.last_duration)
        if failed:
            self.commit_failures += len(failed)
            await self._producers.discard(failed)
            for snap in snapshots:
                if snap.tp in failed:
                    for itp in snap.task.offsets():
                        self._committed.pop(itp, None)
            raise TransactionFailed(failed)

    async def _readable(self, snapshots: list[_Snapshot]) -> None:
        """Step 5: the commit markers of the last committed transaction (this one or an
        earlier) on every changelog partition of the closed tasks of this checkpoint, their
        last (`markers.await_markers`)."""
        written: dict[TopicPartition, int] = {}
        for snap in snapshots:
            task = snap.task
            if task.status is TaskState.CLOSED and task.state is not None:
                for (topic, partition), at in task.state.changelog_committed.items():
                    written[TopicPartition(topic, partition)] = at
        if written and self.stable_ends is not None:
            await await_markers(self.stable_ends, written, MARKERS_TIMEOUT)

    def _followed(self, written: Mapping[tuple[str, int], int]) -> bool:
        """Whether this checkpoint's store writes wait for the follow-up: it wrote records
        that this worker's tasks read (`written`: the follow-up comes once they have
        processed them, within half an interval), and the last checkpoint did not wait
        already. The follow-up's transaction then does not wait for the SQLite writes;
        whichever checkpoint comes next writes them."""
        if self._deferred:
            self._deferred = False
            return False
        self._deferred = bool(inputs_written(written, self._inputs))
        return self._deferred

    async def _transactions(self, snapshots: list[_Snapshot]) -> list[Outcome]:
        """Step 3: one transaction per task, all at once."""
        return list(
            await asyncio.gather(
                *(self._transact(snap) for snap in snapshots), return_exceptions=True
            )
        )

    def _snapshot(self, task: Task) -> _Snapshot:
        tp = TopicPartition(task.topic.name, task.partition)
        offsets = {
            itp: offset
            for itp, offset in task.offsets().items()
            if offset != self._committed.get(itp)
        }
        changes = {}
        if task.state is not None and task.tables:
            changes = task.state.snapshot(task.collector)
        return _Snapshot(task, tp, offsets, partition_times(task), changes, task.collector.seal())

    async def _transact(self, snap: _Snapshot) -> dict[tuple[str, int], int] | None:
        """Step 3 for one task: its sealed outputs, changelog records and offset, committed
        together. None when there was nothing to commit."""
        collector = snap.task.collector
        if snap.task.cut_short:  # abort like a crash: its open transaction holds half an event
            collector.discard()
            with contextlib.suppress(Exception):  # (KeyError: its producer is gone already)
                await asyncio.wait_for(self._producers[snap.tp].abort_transaction(), ABORT_TIMEOUT)
            raise CutShort(f"{snap.task!r} was cancelled mid-event")
        if snap.sealed.empty and not snap.offsets:
            collector.release()
            return None
        try:
            producer = self._producers[snap.tp]
        except KeyError:  # given up meanwhile (a rebalance stopped its producer)
            collector.discard()
            if snap.task.status is TaskState.CLOSED:
                return None  # revoked: its next owner starts from the last commit
            raise ProducerFenced() from None  # still running: drop it with the others
        try:
            adding = None
            if snap.offsets:
                with_times = {tp: (at, self._time(snap, tp)) for tp, at in snap.offsets.items()}
                adding = producer.send_offsets_to_transaction(with_times, self._group_id)
            (written,) = await _flush_and_offsets([collector.flush_sealed(snap.sealed)], adding)
            faults.reached("fail-before-commit")
            faults.reached("crash-before-commit")
            await producer.commit_transaction()
        except Exception as exc:
            collector.discard()
            causes = [exc, exc.__cause__, *snap.sealed.failures()]
            if any(isinstance(c, ProducerFenced) for c in causes):
                raise ProducerFenced() from exc  # another worker owns the partition now
            with contextlib.suppress(Exception):  # end it now rather than at the timeout
                await asyncio.wait_for(producer.abort_transaction(), ABORT_TIMEOUT)
            raise
        self._committed.update(snap.offsets)
        self._times.update((tp, self._time(snap, tp)) for tp in snap.offsets)
        self.commits += 1
        await producer.begin_transaction()
        collector.release()
        return written

    def _time(self, snap: _Snapshot, tp: TopicPartition) -> str:
        """The partition time to commit with `tp`'s offset: the snapshot's, else the last one
        committed (a task with map_async calls in flight takes none: it is never ahead)."""
        return snap.times.get(tp) or self._times.get(tp, "")

    @property
    def committed(self) -> dict[TopicPartition, int]:
        """The input offsets this worker's checkpoints committed, per partition it owns."""
        return dict(self._committed)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions we no longer own: another owner may commit them past our record."""
        for tp in tps:
            self._committed.pop(tp, None)
            self._times.pop(tp, None)


class WorkerTransactionCheckpointer(TransactionalCheckpointer):
    """The exactly-once checkpoint with one producer per worker: step 3 is one transaction for
    every task (their sealed batches, then all their offsets in one TxnOffsetCommit v3 with
    the group's generation, then one commit). If it fails, every task in it fails. The tasks
    share one collector (`TaskManager.share_collector`), so each destination partition gets one
    batch per checkpoint; new tasks start between checkpoints (`between_checkpoints`)."""

    def __init__(
        self,
        group_id: str,
        producers: WorkerProducer,
        inputs: Mapping[TopicPartition, Any] | None = None,
    ) -> None:
        super().__init__(group_id, producers, inputs)
        self._worker_producer = producers

    async def _transactions(self, snapshots: list[_Snapshot]) -> list[Outcome]:
        results: list[Outcome] = [None] * len(snapshots)
        cut = [s.task for s in snapshots if s.task.cut_short]
        if cut:  # half an event in the worker's transaction: it aborts (`_checkpoint`'s discard)
            cutshort = CutShort(f"{cut[0]!r} was cancelled mid-event")
            for snap in snapshots:
                snap.task.collector.discard()
            if self._worker_producer.gate is not None:
                self._worker_producer.gate.fail()  # nothing more is sent in it
            return [cutshort] * len(snapshots)
        active = [i for i, s in enumerate(snapshots) if not (s.sealed.empty and not s.offsets)]
        busy = set(active)
        idle = [snap for i, snap in enumerate(snapshots) if i not in busy]
        if not active:
            for snap in idle:
                snap.task.collector.release()
            return results
        # Tasks with nothing to commit stay held too until the transaction is over: what they
        # produce now must not join a transaction that does not carry their offset.
        snaps = [snapshots[i] for i in active]
        gate = self._worker_producer.gate
        if gate is None:  # discarded after a failed transaction: this work cannot commit
            gone = NoProducer("the transactional producer was discarded after a failure")
            for i, snap in zip(active, snaps, strict=True):
                snap.task.collector.discard()
                results[i] = gone
            for snap in idle:
                snap.task.collector.release()
            return results
        producer = gate.producer
        sealed: list[tuple[RecordCollector, Sealed]] = []
        try:
            for snap in snaps:  # a batch lost since the last checkpoint fails this transaction
                if snap.task.collector.error is not None:
                    raise snap.task.collector.error
            offsets = {}
            for snap in snaps:  # every task's offsets, so the group checks every transaction
                for itp in snap.task.inputs:
                    at = snap.offsets.get(itp, self._committed.get(itp))
                    if at is not None:
                        offsets[itp] = (at, self._time(snap, itp))
            # the tasks share one collector: one of them sealed the batches, the stateful
            # ones their changelog records since; handed over at once, one seal per
            # collector; the offsets go while the batches are acknowledged
            sealed = _joined(snaps)
            written = await _flush_and_offsets(
                [collector.flush_sealed(seal) for collector, seal in sealed],
                producer.send_offsets_to_transaction(offsets, self._group_id) if offsets else None,
            )
            for _ in snaps:  # counted per task, as in per-partition mode (test hooks' Nth)
                faults.reached("fail-before-commit")
                faults.reached("crash-before-commit")
            gate.open.clear()
            await producer.commit_transaction()
        except Exception as exc:
            gate.fail()  # nothing more goes to this producer: the worker replaces it
            failure: BaseException = exc
            for snap in snaps:
                snap.task.collector.discard()
            causes = [exc, exc.__cause__, *(f for _, seal in sealed for f in seal.failures())]
            fenced = next((c for c in causes if isinstance(c, (ProducerFenced, GroupFenced))), None)
            if fenced is not None:
                failure = fenced
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.abort_transaction(), ABORT_TIMEOUT)
            for i in active:
                results[i] = failure
            for snap in idle:
                snap.task.collector.release()
            return results
        for snap in snaps:
            self._committed.update(snap.offsets)
        self._times.update((tp, meta) for tp, (_, meta) in offsets.items())
        self.commits += 1
        try:
            await self._worker_producer.take_turns()  # the other producer's turn
        finally:
            gate.open.set()
        # the tasks may share one collector (`TaskManager.share_collector`): whichever sealed
        # a changelog record, every task learns the offsets written (each keeps its own)
        merged: dict[tuple[str, int], int] = {}
        for w in written:
            for ctp, at in w.items():
                merged[ctp] = max(at, merged.get(ctp, -1))
        for i, snap in zip(active, snaps, strict=True):
            snap.task.collector.release()
            results[i] = merged
        for snap in idle:
            snap.task.collector.release()
        return results


def _joined(snaps: list[_Snapshot]) -> list[tuple[RecordCollector, Sealed]]:
    """The snapshots' seals, joined per collector (`Sealed.joined`)."""
    by_collector: dict[int, tuple[RecordCollector, list[Sealed]]] = {}
    for snap in snaps:
        if not snap.sealed.empty:
            collector = snap.task.collector
            by_collector.setdefault(id(collector), (collector, []))[1].append(snap.sealed)
    return [(collector, Sealed.joined(parts)) for collector, parts in by_collector.values()]


async def _flush_and_offsets(
    flushes: list[Awaitable[dict[tuple[str, int], int]]], offsets: Awaitable[None] | None
) -> list[dict[tuple[str, int], int]]:
    """Step 3's first two parts at once: the sealed batches' delivery and the offsets'
    AddOffsetsToTxn + TxnOffsetCommit, whose round trips need not wait for the batches'
    acknowledgement (the commit that follows does: nothing commits unless both succeeded, and
    a failure of either aborts the whole transaction). Once both are over, an error is raised
    (a fencing one first: the batches of a fenced transaction fail with other errors too);
    else the changelog offsets each flush wrote."""
    extra = [] if offsets is None else [offsets]
    done = await asyncio.gather(*flushes, *extra, return_exceptions=True)
    errors = [e for e in done if isinstance(e, BaseException)]
    if errors:
        raise next((e for e in errors if isinstance(e, (ProducerFenced, GroupFenced))), errors[0])
    return [w for w in done[: len(flushes)] if isinstance(w, dict)]
