"""The transactional producers of exactly-once: one per input partition
(`TransactionalProducers`) or per worker (`WorkerProducer`, KIP-447, the default: two that take
turns), both seen by the checkpoint (`runtime/exactly_once.py`) as a `ProducerSet`.

Per partition, the producer of input partition `topic[p]` has the transactional id
`{app_id}-{topic}-{p}`, stable across workers and restarts: a new owner registers it first
(`InitProducerId`), which fences the previous owner and ends its open transaction. Per worker,
the ids are the worker's and the group coordinator fences (TxnOffsetCommit v3 with the group's
generation and member id).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import uuid
from collections.abc import Iterable
from typing import IO, Any, Protocol

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals import (
    TransactionalProducer,
    enable_group_fencing,
    group_metadata,
)
from streamkit.clients import make_producer, make_transactional_producer
from streamkit.settings import Settings

log = logging.getLogger(__name__)

ABORT_TIMEOUT = 5.0  # seconds to wait for an abort before giving up on it
# A transaction's produce request to a partition whose last transaction's markers are not all
# written yet is refused by the broker's transaction verification (KIP-890: CONCURRENT_
# TRANSACTIONS, which aiokafka's produce version receives as NOT_ENOUGH_REPLICAS) and sent
# again after the producer's retry backoff. At aiokafka's 100 ms default, that made ~1
# checkpoint in 4 take ~120 ms instead of ~15 at 10,000 events/s, and an output's p99 latency
# under exactly-once 1,170 instead of 1,078 ms (docs/benchmarks.md). Java's producer waits
# 20 ms between transactions in the like case.
RETRY_BACKOFF_MS = 20


def transactional_id(app_id: str, tp: TopicPartition) -> str:
    return f"{app_id}-{tp.topic}-{tp.partition}"


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
            retry_backoff_ms=RETRY_BACKOFF_MS,
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
        await asyncio.gather(*(stop_quietly(p) for p in gone))

    async def close(self) -> None:
        await self.discard(list(self._producers))


async def stop_quietly(producer: Any) -> None:
    with contextlib.suppress(Exception):
        await producer.stop()


class ProducerSet(Protocol):
    """What the checkpointer and the worker use of the transactional producers."""

    def __getitem__(self, tp: TopicPartition) -> Any: ...

    async def acquire(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, Any]: ...

    async def keep_only(self, tps: Iterable[TopicPartition]) -> None: ...

    async def discard(self, tps: Iterable[TopicPartition]) -> None: ...

    async def close(self) -> None: ...


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
        # streamkit's producer takes a checkpoint's batches in one call (`send_batches`)
        self.bulk = isinstance(producer, TransactionalProducer)

    def create_batch(self) -> Any:
        return self.producer.create_batch()

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> Any:
        await self.open.wait()
        if self.failed:
            raise KafkaError("the worker's transaction failed: its producer is being replaced")
        return await self.producer.send_batch(builder, topic, partition=partition)

    async def send_batches(self, batches: list[tuple[str, int, Any]]) -> list[Any]:
        """`send_batch` for many (only when `bulk`)."""
        await self.open.wait()
        if self.failed:
            raise KafkaError("the worker's transaction failed: its producer is being replaced")
        return await self.producer.send_batches(batches)  # type: ignore[no-any-return]

    async def flush(self) -> None:
        """Until every batch handed over so far is delivered or failed."""
        await self.producer.flush()

    def fail(self) -> None:
        self.failed = True
        self.open.set()


class WorkerProducer:
    """The transactional producers for every partition this worker owns (`ProducerSet`): two
    that take turns, one transaction each per checkpoint.

    While one producer's committed transaction still has its commit markers written to every
    partition it touched (the broker refuses that id a new partition until then:
    CONCURRENT_TRANSACTIONS), the other's transaction takes the next checkpoint's records.
    The group coordinator keeps, of two committed transactions' offsets for a partition, the
    one appended later, whichever marker lands first, so the turns never move an offset back.

    Their offsets commit with the group's generation and member id (TxnOffsetCommit v3 through
    `aiokafka_internals.enable_group_fencing`): a worker that lost its partitions (a zombie,
    an old generation) is refused by the group coordinator, not by a per-partition id. Their
    transactional ids are stable for the worker (`worker_transactional_ids`), so a restarted
    worker's `InitProducerId` aborts the transactions it left open. A partition's new owner
    reads its committed offset with `require_stable`: it waits until no transaction (a
    zombie's) still holds offsets for it."""

    def __init__(
        self, settings: Settings, app_id: str, client_id: str, consumer: Any, pause: float = 0.0
    ) -> None:
        self._settings = settings
        self._pause = pause  # the longest a checkpoint's step 1 may wait (map_async calls)
        self._client_id = client_id
        self._consumer = consumer
        # the lock on the workdir's token is held as long as this object lives (the process)
        self.transactional_id, self._lock = worker_transactional_id(settings, app_id)
        self.gate: Gate | None = None
        self._spare: Any = None  # the producer whose turn is next (a transaction begun)
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
                ids = worker_transactional_ids(self.transactional_id)
                started = await asyncio.gather(
                    *(self._start(txn_id, i) for i, txn_id in enumerate(ids)),
                    return_exceptions=True,
                )
                failed = [r for r in started if isinstance(r, BaseException)]
                if failed:  # the other one, if it started, goes too
                    ok = [p for p in started if not isinstance(p, BaseException)]
                    await asyncio.gather(*(stop_quietly(p) for p in ok))
                    raise failed[0]
                self.gate = Gate(started[0])
                self._spare = started[1]
                log.info(
                    "transactional producers %s (per worker, %s) ready",
                    ", ".join(ids),
                    self._settings.transactional_client,
                )
        gate = self.gate
        return {tp: gate for tp in tps}

    async def _start(self, txn_id: str, turn: int) -> Any:
        if self._settings.transactional_client == "streamkit":
            return await self._start_own(txn_id, turn)
        producer = make_producer(
            self._settings,
            f"{self._client_id}-txn{turn}",
            transactional_id=txn_id,
            transaction_timeout_ms=worker_transaction_timeout(self._settings, self._pause),
            retry_backoff_ms=RETRY_BACKOFF_MS,
        )
        await producer.start()
        try:
            enable_group_fencing(
                producer,
                lambda: group_metadata(self._consumer),
                newer_generation=self._settings.rebalance_protocol == "cooperative",
            )
            await producer.begin_transaction()  # after InitProducerId: the previous one's end
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def _start_own(self, txn_id: str, turn: int) -> Any:
        producer = make_transactional_producer(
            self._settings,
            f"{self._client_id}-txn{turn}",
            transactional_id=txn_id,
            transaction_timeout_ms=worker_transaction_timeout(self._settings, self._pause),
            retry_backoff_ms=RETRY_BACKOFF_MS,
            group_metadata=lambda: group_metadata(self._consumer),
            newer_generation=self._settings.rebalance_protocol == "cooperative",
        )
        await producer.start()  # InitProducerId: the previous one's end
        await producer.begin_transaction()
        return producer

    async def take_turns(self) -> None:
        """After the gate's producer committed: the spare (its transaction begun, nothing in it
        yet) takes the next checkpoint's records; the one that committed begins its next
        transaction, locally (the broker hears of it at its first record, a turn later)."""
        assert self.gate is not None and self._spare is not None
        done, self.gate.producer = self.gate.producer, self._spare
        self._spare = done
        await done.begin_transaction()

    async def keep_only(self, tps: Iterable[TopicPartition]) -> None:
        """Nothing to stop: the producers serve whatever partitions the worker owns."""

    async def discard(self, tps: Iterable[TopicPartition]) -> None:
        """A failed transaction is the worker's: the producers go (the next ones, same ids,
        abort what they left open)."""
        if list(tps):
            await self.close()

    async def close(self) -> None:
        """Abort the open transaction (no other worker's id will: while it is open, the
        partitions' next owners wait for its offsets), then stop both producers."""
        gate, self.gate = self.gate, None
        spare, self._spare = self._spare, None
        if gate is not None:
            gate.fail()  # a task waiting to send is refused rather than sent nowhere
            with contextlib.suppress(Exception):
                await asyncio.wait_for(gate.producer.abort_transaction(), ABORT_TIMEOUT)
            await stop_quietly(gate.producer)
        if spare is not None:  # nothing sent in its transaction: it ends without a request
            await stop_quietly(spare)


def worker_transactional_ids(base: str) -> list[str]:
    """The two producers' ids: the worker's id, and the same with `#1` (a character no
    instance id and no workdir token holds, so no other worker's id is ever one of them)."""
    return [base, f"{base}#1"]


WORKER_TRANSACTION_TIMEOUT_MS = 10_000


def worker_transaction_timeout(settings: Settings, pause: float = 0.0) -> int:
    """`transaction_timeout_ms` when set; else 10 s for the per-worker producer (as Kafka
    Streams under exactly-once) plus `pause`, the longest a checkpoint's first step may wait
    for map_async calls in flight while the transaction is open (`async_map.longest_calls`;
    without it such a checkpoint outlived its transaction and was fenced). A worker killed
    and not restarted under the same id leaves its transaction open this long, and its
    partitions' next owners wait for it."""
    if "transaction_timeout_ms" in settings.model_fields_set:
        return settings.transaction_timeout_ms
    return WORKER_TRANSACTION_TIMEOUT_MS + math.ceil(pause * 1000)


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
