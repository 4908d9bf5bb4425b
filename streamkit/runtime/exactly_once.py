"""Exactly-once: one transactional producer per input partition, and the checkpoint that commits
each partition's outputs, changelog records and consumed offset in one Kafka transaction.

The transactional id of the producer of input partition `topic[p]` is `{app_id}-{topic}-{p}`,
stable across workers and restarts. A new owner's producer registers that id first
(`InitProducerId`), which fences the previous owner's producer and ends its open transaction;
only then does the new owner read the partition's committed offset and its changelog. (aiokafka
0.14 sends TxnOffsetCommit v0, which carries no group generation: without a producer per input
partition a zombie could not be fenced.)

The checkpoint, every `commit_interval`, on revoke and on shutdown:

1. Pause: every running task stops at its next event boundary (the event in flight finishes,
   and so do map_async calls in flight with what follows them; no new event starts); a task
   still restoring is not waited for but held at its first. Sinks beyond Kafka then write
   their rows with the offsets they reach, each in one transaction of its destination
   (`runtime/sinks.py`): a destination may get ahead of the Kafka transaction, never behind;
   dead letters of rows it refused join this one.
2. Snapshot, per task, with no await in between: the offset after its last processed event,
   its tables' dirty keys appended to their changelog partitions, and its collector sealed
   (everything appended so far belongs to this transaction). Then every task resumes; what it
   produces from now on is held back until its transaction is over.
3. Per task, all tasks at once, in the task's own transaction: hand the sealed batches to its
   producer and wait for their delivery, add the offset (`send_offsets_to_transaction`),
   commit, begin the next transaction, release the held batches.
4. Per committed task: write the snapshot to its SQLite store in one transaction, with the
   changelog offsets it reflects and the input offset.

Crash before step 3 commits: the broker aborts the open transaction (when the next owner
registers the id, or at `transaction_timeout_ms`); read_committed readers never see its records,
and the input is read again from the last committed offset. Crash between 3 and 4: the store is
one checkpoint behind; recovery replays its committed changelog tail. Either way each input event
shows in the committed outputs, the changelog and the offsets exactly once.

A transaction that fails (fenced, or any error) drops the task's uncommitted work: the worker
then drops every task without committing and rejoins the group (`Worker.recover`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals import (
    GroupFenced,
    enable_group_fencing,
    fetch_stable_offsets,
    group_metadata,
)
from streamkit.clients import make_producer
from streamkit.runtime import faults
from streamkit.runtime.collector import Sealed
from streamkit.runtime.sinks import flush_sinks
from streamkit.runtime.task import Task, TaskState
from streamkit.settings import Settings

log = logging.getLogger(__name__)

ABORT_TIMEOUT = 5.0

# step 3's outcome per task: the changelog offsets written, an error, or None (nothing to commit)
Outcome = dict[tuple[str, int], int] | BaseException | None


def transactional_id(app_id: str, tp: TopicPartition) -> str:
    return f"{app_id}-{tp.topic}-{tp.partition}"


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


class NoProducer(Exception):
    """The worker's transactional producer is gone (a failed transaction discarded it)."""


class TransactionalProducers:
    """The transactional producers of this worker, one per owned input partition. A producer
    outlives a rebalance that gives its partition back to this worker."""

    def __init__(self, settings: Settings, app_id: str, client_id: str) -> None:
        self._settings = settings
        self._app_id = app_id
        self._client_id = client_id
        self._producers: dict[TopicPartition, Any] = {}

    def __getitem__(self, tp: TopicPartition) -> Any:
        return self._producers[tp]

    async def acquire(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, Any]:
        """A producer with a transaction begun for each of `tps` (new ones fence the previous
        owner of the partition before this returns)."""
        tps = list(tps)
        missing = [tp for tp in tps if tp not in self._producers]
        await asyncio.gather(*(self._start(tp) for tp in missing))
        return {tp: self._producers[tp] for tp in tps}

    async def _start(self, tp: TopicPartition) -> None:
        producer = make_producer(
            self._settings,
            f"{self._client_id}-{tp.topic}-{tp.partition}",
            transactional_id=transactional_id(self._app_id, tp),
            transaction_timeout_ms=self._settings.transaction_timeout_ms,
        )
        await producer.start()
        try:
            await producer.begin_transaction()  # waits for InitProducerId: the fence
        except BaseException:
            await producer.stop()
            raise
        self._producers[tp] = producer

    async def keep_only(self, tps: Iterable[TopicPartition]) -> None:
        """Stop the producers of partitions this worker no longer owns."""
        keep = set(tps)
        await self.discard([tp for tp in self._producers if tp not in keep])

    async def discard(self, tps: Iterable[TopicPartition]) -> None:
        """Stop these producers; a transaction they left open is aborted by the broker when the
        id is registered again."""
        gone = [self._producers.pop(tp) for tp in list(tps) if tp in self._producers]
        await asyncio.gather(*(_stop(p) for p in gone))

    async def close(self) -> None:
        await self.discard(list(self._producers))

    async def committed(self, consumer: Any, tps: list[TopicPartition]) -> list[int | None]:
        """The group's committed offsets (final once each partition's id is registered)."""
        return list(await asyncio.gather(*(consumer.committed(tp) for tp in tps)))


async def _stop(producer: Any) -> None:
    with contextlib.suppress(Exception):
        await producer.stop()


@dataclass
class _Snapshot:
    task: Task
    tp: TopicPartition  # the task's name: its first input partition
    offsets: dict[TopicPartition, int]  # new committable offsets (those that moved)
    changes: dict[str, dict[bytes, bytes | None]]
    sealed: Sealed


class TransactionalCheckpointer:
    def __init__(self, group_id: str, producers: ProducerSet) -> None:
        self._group_id = group_id
        self._producers = producers
        self._lock = asyncio.Lock()  # the commit loop and a revoke never interleave
        self._committed: dict[TopicPartition, int] = {}
        self._adopted: list[Task] = []  # created while a checkpoint ran: held until its end
        self.commits = 0
        self.checkpoints = 0
        self.total_duration = 0.0  # seconds spent in checkpoints (benchmarks read it)
        self.last_duration = 0.0
        self.last_at: float | None = None  # wall-clock time of the last checkpoint
        self.commit_failures = 0  # transactions that did not commit
        self.on_checkpoint: Callable[[float], None] | None = None  # metrics: the duration

    def adopt(self, tasks: Iterable[Task]) -> None:
        """Tasks just created (a cooperative assignment) while a checkpoint may be running:
        until it ends they are held (what they produce must not join a transaction that does
        not carry their offsets)."""
        if self._lock.locked():
            for task in tasks:
                task.collector.seal()  # nothing in it yet: this only holds what comes
                self._adopted.append(task)

    async def commit(self, tasks: Iterable[Task]) -> None:
        """One checkpoint of `tasks`. Raises TransactionFailed naming the tasks whose
        transaction did not commit (the others did, and their state is written)."""
        async with self._lock:
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
        await asyncio.gather(*(task.pause() for task in tasks))
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
        failed: dict[TopicPartition, BaseException] = {}
        for snap, result in zip(snapshots, results, strict=True):
            if isinstance(result, BaseException):
                failed[snap.tp] = result
                continue
            if result is None:
                continue  # nothing to commit
            # 4. state and the offsets it reflects, one SQLite transaction per task
            task = snap.task
            if task.state is not None and (snap.changes or snap.offsets):
                if snap.changes:
                    faults.reached("crash-after-commit")
                at = self._committed.get(snap.tp)
                source = None if at is None else (snap.tp.topic, snap.tp.partition, at)
                await task.state.write(snap.changes, result, source)
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
        return _Snapshot(task, tp, offsets, changes, task.collector.seal())

    async def _transact(self, snap: _Snapshot) -> dict[tuple[str, int], int] | None:
        """Step 3 for one task: its sealed outputs, changelog records and offset, committed
        together. None when there was nothing to commit."""
        collector = snap.task.collector
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
            written = await collector.flush_sealed(snap.sealed)
            if snap.offsets:
                await producer.send_offsets_to_transaction(snap.offsets, self._group_id)
            faults.reached("fail-before-commit")
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
        self.commits += 1
        await producer.begin_transaction()
        collector.release()
        return written

    @property
    def committed(self) -> dict[TopicPartition, int]:
        """The input offsets this worker's checkpoints committed, per partition it owns."""
        return dict(self._committed)

    def forget(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions we no longer own: another owner may commit them past our record."""
        for tp in tps:
            self._committed.pop(tp, None)


# -- one transactional producer per worker (KIP-447) ---------------------------------------------


class ProducerSet(Protocol):
    """What the checkpointer and the worker use of the transactional producers."""

    def __getitem__(self, tp: TopicPartition) -> Any: ...

    async def acquire(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, Any]: ...

    async def keep_only(self, tps: Iterable[TopicPartition]) -> None: ...

    async def discard(self, tps: Iterable[TopicPartition]) -> None: ...

    async def close(self) -> None: ...

    async def committed(self, consumer: Any, tps: list[TopicPartition]) -> list[int | None]: ...


class Gate:
    """The worker's one producer as the tasks' collectors see it: `send_batch` waits while the
    checkpoint is between `commit_transaction` and `begin_transaction`, so a task assigned in
    that instant never writes outside a transaction; once the transaction failed (`fail`),
    every send is refused (the producer is about to be discarded)."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self.open = asyncio.Event()
        self.open.set()
        self.failed = False

    def create_batch(self) -> Any:
        return self.producer.create_batch()

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> Any:
        await self.open.wait()
        if self.failed:
            raise KafkaError("the worker's transaction failed: its producer is being replaced")
        return await self.producer.send_batch(builder, topic, partition=partition)

    def fail(self) -> None:
        self.failed = True
        self.open.set()


class WorkerProducer:
    """One transactional producer for every partition this worker owns (`ProducerSet`).

    Its offsets commit with the group's generation and member id (TxnOffsetCommit v3 through
    `aiokafka_internals.enable_group_fencing`): a worker that lost its partitions (a zombie,
    an old generation) is refused by the group coordinator, not by a per-partition id. Its
    transactional id is stable for the worker: `{app}-{instance_id}`, else a token kept in the
    workdir, so a restarted worker's `InitProducerId` aborts the transaction it left open.
    A partition's new owner reads its committed offset with `require_stable`: it waits until
    no transaction (a zombie's) still holds offsets for it."""

    def __init__(self, settings: Settings, app_id: str, client_id: str, consumer: Any) -> None:
        self._settings = settings
        self._client_id = client_id
        self._consumer = consumer
        # the lock on the workdir's token is held as long as this object lives (the process)
        self.transactional_id, self._lock = worker_transactional_id(settings, app_id)
        self.gate: Gate | None = None
        self._starting = asyncio.Lock()

    @property
    def producer(self) -> Any:
        assert self.gate is not None, "no transactional producer: acquire() first"
        return self.gate.producer

    def __getitem__(self, tp: TopicPartition) -> Any:
        if self.gate is None:
            raise KeyError(tp)
        return self.gate

    async def acquire(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, Any]:
        async with self._starting:
            if self.gate is None:
                producer = make_producer(
                    self._settings,
                    f"{self._client_id}-txn",
                    transactional_id=self.transactional_id,
                    transaction_timeout_ms=worker_transaction_timeout(self._settings),
                )
                await producer.start()
                try:
                    enable_group_fencing(
                        producer,
                        lambda: group_metadata(self._consumer),
                        newer_generation=self._settings.rebalance_protocol == "cooperative",
                    )
                    await producer.begin_transaction()  # after InitProducerId
                except BaseException:
                    await producer.stop()
                    raise
                self.gate = Gate(producer)
                log.info("transactional producer %s (one per worker) ready", self.transactional_id)
        gate = self.gate
        return {tp: gate for tp in tps}

    async def keep_only(self, tps: Iterable[TopicPartition]) -> None:
        """Nothing to stop: the producer serves whatever partitions the worker owns."""

    async def discard(self, tps: Iterable[TopicPartition]) -> None:
        """A failed transaction is the worker's: the producer goes (the next one, same id,
        aborts what it left open)."""
        if list(tps):
            await self.close()

    async def close(self) -> None:
        """Abort the open transaction (no other worker's id will: while it is open, the
        partitions' next owners wait for its offsets), then stop the producer."""
        gate, self.gate = self.gate, None
        if gate is not None:
            gate.fail()  # a task waiting to send is refused rather than sent nowhere
            with contextlib.suppress(Exception):
                await asyncio.wait_for(gate.producer.abort_transaction(), ABORT_TIMEOUT)
            await _stop(gate.producer)

    async def committed(self, consumer: Any, tps: list[TopicPartition]) -> list[int | None]:
        offsets = await fetch_stable_offsets(consumer, tps)
        return [offsets[tp] for tp in tps]


WORKER_TRANSACTION_TIMEOUT_MS = 10_000


def worker_transaction_timeout(settings: Settings) -> int:
    """`transaction_timeout_ms` when set; else 10 s for the per-worker producer (as Kafka
    Streams under exactly-once): a worker killed and not restarted under the same id leaves
    its transaction open this long, and its partitions' next owners wait for it."""
    if "transaction_timeout_ms" in settings.model_fields_set:
        return settings.transaction_timeout_ms
    return WORKER_TRANSACTION_TIMEOUT_MS


def worker_transactional_id(settings: Settings, app_id: str) -> tuple[str, IO[str] | None]:
    """`{app}-{instance_id}`, else `{app}-worker-{token}` with the token kept in
    `{workdir}/{app}/producer.id` and locked while the worker runs (a second worker on the
    same workdir gets a fresh token rather than fencing the first)."""
    if settings.instance_id:
        return f"{app_id}-{settings.instance_id}", None
    folder = settings.workdir / app_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "producer.id"
    lock = open(folder / "producer.id.lock", "a")  # noqa: SIM115 (held while the worker runs)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        token = uuid.uuid4().hex[:12]
        log.warning(
            "workdir %s is in use by another worker: transactional id token %s", folder, token
        )
        return f"{app_id}-worker-{token}", None
    token = path.read_text().strip() if path.exists() else ""
    if not token:
        token = uuid.uuid4().hex[:12]
        path.write_text(token + "\n")
    return f"{app_id}-worker-{token}", lock


class WorkerTransactionCheckpointer(TransactionalCheckpointer):
    """The exactly-once checkpoint with one producer per worker: step 3 is one transaction for
    every task (their sealed batches, then all their offsets in one TxnOffsetCommit v3 with
    the group's generation, then one commit). If it fails, every task in it fails."""

    def __init__(self, group_id: str, producers: WorkerProducer) -> None:
        super().__init__(group_id, producers)
        self._worker_producer = producers

    async def _transactions(self, snapshots: list[_Snapshot]) -> list[Outcome]:
        results: list[Outcome] = [None] * len(snapshots)
        active = [i for i, s in enumerate(snapshots) if not (s.sealed.empty and not s.offsets)]
        idle = [snapshots[i] for i in range(len(snapshots)) if i not in active]
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
        try:
            written = await asyncio.gather(
                *(s.task.collector.flush_sealed(s.sealed) for s in snaps), return_exceptions=True
            )
            for w in written:
                if isinstance(w, BaseException):
                    raise w
            offsets = {}
            for snap in snaps:  # every task's offsets, so the group checks every transaction
                for itp in snap.task.inputs:
                    at = snap.offsets.get(itp, self._committed.get(itp))
                    if at is not None:
                        offsets[itp] = at
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self._group_id)
            for _ in snaps:  # counted per task, as in per-partition mode (test hooks' Nth)
                faults.reached("fail-before-commit")
            gate.open.clear()
            await producer.commit_transaction()
        except Exception as exc:
            gate.fail()  # nothing more goes to this producer: the worker replaces it
            failure: BaseException = exc
            for snap in snaps:
                snap.task.collector.discard()
            causes = [exc, exc.__cause__, *(f for s in snaps for f in s.sealed.failures())]
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
        self.commits += 1
        try:
            await producer.begin_transaction()
        finally:
            gate.open.set()
        for i, snap, w in zip(active, snaps, written, strict=True):
            snap.task.collector.release()
            results[i] = w
        for snap in idle:
            snap.task.collector.release()
        return results
