"""streamkit's own transactional producer, on aiokafka's client and connections: what one
producer per worker needs (KIP-98, KIP-447), with a Produce path built for many partitions.

The same interface as the part of `AIOKafkaProducer` the exactly-once checkpoint uses
(`create_batch`, `send_batch`, `flush`, `begin_transaction`, `send_offsets_to_transaction`,
`commit_transaction`, `abort_transaction`, `start`, `stop`), so `runtime/txn_producers.py`
holds either; and `send_batches`, a checkpoint's batches in one call. Batches are
aiokafka's `BatchBuilder`s (the collector fills them through the C record builder,
`batches.py`); requests are aiokafka's `client.send`, with Produce encoded and decoded by
hand (`produce.py`).

The protocol, in the order a transaction sends it:

1. `start`: find the transaction coordinator; ask a broker for the cluster's finalized
   features (ApiVersions v3, `api_versions.py`): with `transaction.version` 2 or more
   (KIP-890 part 2, a Kafka 4 cluster's default) the transaction is of version 2. Then
   `InitProducerId` (this bumps the id's epoch: a previous producer with the id is fenced and
   its open transaction aborted). Every partition's sequence starts at 0.
2. `send_batch` queues a batch on its partition (waiting first while `BUFFER_BYTES` of
   batches are undelivered). Version 1: the sender adds partitions new to the transaction
   first (`AddPartitionsToTxn`, one request for all that are ready). Then it sends Produce
   requests to each leader (v7; version 2: v12, whose leader adds the partition to the
   transaction itself) with the first unsent batch of each ready partition, up to
   `MAX_REQUEST_BYTES` a request and `MAX_IN_FLIGHT` requests a leader. A batch gets its
   sequence number when it is first built, and keeps it (and its bytes) through retries:
   the broker drops a repeat (DUPLICATE_SEQUENCE_NUMBER) and refuses a gap. One batch per
   partition is in flight at a time.
3. `send_offsets_to_transaction`: version 1, `AddOffsetsToTxn` first; then `TxnOffsetCommit`
   (v3; version 2: v5, which adds the offsets to the transaction itself) to the group
   coordinator with the group's generation and member id (`groups.py`), so the group
   coordinator refuses a zombie's offsets.
4. `commit_transaction`: every batch delivered, then `EndTxn` (version 2: v5, which bumps
   the epoch: the next transaction has the answer's epoch, and its sequences start at 0).

Retriable errors (a moved leader, a coordinator loading or moved, a transaction still
completing: CONCURRENT_TRANSACTIONS, which Produce v7 receives as NOT_ENOUGH_REPLICAS) are
retried after `retry_backoff_ms` until `delivery_timeout_ms`. Anything else fails the
transaction: every later call raises it, `abort_transaction` sends EndTxn(abort) unless the
producer was fenced, and the caller replaces the producer (a new one with the same
transactional id aborts whatever this one left open, step 1).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiokafka import errors
from aiokafka.client import AIOKafkaClient
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals.groups import GroupMetadata
from streamkit.aiokafka_internals.produce import ProduceBatches
from streamkit.aiokafka_internals.produce_queue import (
    BUFFER_BYTES,
    MAX_IN_FLIGHT,
    MAX_REQUEST_BYTES,
    RETRY_PRODUCE,
    SEQUENCE_LIMIT,
    TRANSIENT,
    Delivered,
    QueuedBatch,
)
from streamkit.aiokafka_internals.txn_coordinator import (
    CONNECTION_ERRORS,
    DUPLICATE_SEQUENCE_NUMBER,
    FENCED,
    NONE,
    TxnCoordinator,
)


class TransactionalProducer:
    def __init__(
        self,
        options: dict[str, Any],
        *,
        client_id: str,
        transactional_id: str,
        transaction_timeout_ms: int,
        max_batch_size: int,
        retry_backoff_ms: int,
        group_metadata: Callable[[], GroupMetadata],
        newer_generation: bool = False,
        request_timeout_ms: int = 30_000,
        delivery_timeout_ms: int = 120_000,
        transaction_v2: bool = True,
    ) -> None:
        self.transactional_id = transactional_id
        self._client: Any = AIOKafkaClient(
            **options,
            client_id=client_id,
            request_timeout_ms=request_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
        )
        self._max_batch_size = max_batch_size
        self._backoff = retry_backoff_ms / 1000
        self._request_timeout_ms = request_timeout_ms
        self._delivery_timeout = delivery_timeout_ms / 1000
        self._txn = TxnCoordinator(
            self._client,
            transactional_id,
            transaction_timeout_ms=transaction_timeout_ms,
            backoff=self._backoff,
            deadline=self._delivery_timeout,
            group_metadata=group_metadata,
            newer_generation=newer_generation,
        )
        self._sequences: dict[TopicPartition, int] = {}
        self._queues: dict[TopicPartition, collections.deque[QueuedBatch]] = {}
        self._busy: set[TopicPartition] = set()  # a batch in flight
        self._requests_to: dict[int, int] = {}  # Produce requests in flight, per node
        self._not_before: dict[TopicPartition, float] = {}  # retry backoff
        self._first_try: dict[TopicPartition, float] = {}  # the head batch's first send
        self._attempts: dict[TopicPartition, int] = {}  # its quick retries so far
        self._added: set[TopicPartition] = set()  # partitions in the open transaction
        self._offsets_added = False
        self._touched = False  # a request of this transaction went out (version 2)
        self._allow_v2 = transaction_v2
        self._in_transaction = False
        self._error: BaseException | None = None
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # no batch queued or in flight
        self._drained.set()
        self._buffered = 0  # bytes of the batches queued or in flight (`BUFFER_BYTES`)
        self._room = asyncio.Event()  # set while `_buffered` is below the bound
        self._room.set()
        self._sender: asyncio.Task[None] | None = None
        self._requests: set[asyncio.Task[None]] = set()

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Step 1: bootstrap, InitProducerId (fences the id's previous producer)."""
        await self._client.bootstrap()
        try:
            await self._txn.probe(self._allow_v2)
            await self._txn.init_producer_id()
            self._sequences = {}
        except BaseException:
            await self._client.close()
            raise
        self._sender = asyncio.create_task(self._send_loop(), name=f"txn-{self.transactional_id}")

    async def stop(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        for task in list(self._requests):
            task.cancel()
        await asyncio.gather(*self._requests, return_exceptions=True)
        self._fail_queued(errors.KafkaError("the transactional producer was stopped"))
        await self._client.close()

    @property
    def transaction_v2(self) -> bool:
        """Transaction version 2 in use (known after `start`)."""
        return self._txn.v2

    @property
    def identity(self) -> tuple[int, int]:
        """(producer id, epoch) since `start`."""
        return self._txn.producer_id, self._txn.producer_epoch

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self._max_batch_size, 0, is_transactional=True)

    # -- the transaction ---------------------------------------------------------------------

    async def begin_transaction(self) -> None:
        if self._error is not None:
            raise self._error
        if self._in_transaction:
            raise errors.IllegalOperation("a transaction is open already")
        self._in_transaction = True

    async def send_batch(
        self, builder: BatchBuilder, topic: str, *, partition: int
    ) -> asyncio.Future[Delivered]:
        """Step 2: queue a filled batch; the future is its delivery."""
        (future,) = await self.send_batches([(topic, partition, builder)])
        return future

    async def send_batches(
        self, batches: list[tuple[str, int, BatchBuilder]]
    ) -> list[asyncio.Future[Delivered]]:
        """Step 2 for many batches at once (a checkpoint's: hundreds at hundreds of
        partitions), all queued before the sender looks; their deliveries, in order."""
        if self._error is not None:
            raise self._error
        if not self._in_transaction:
            raise errors.IllegalOperation("Can't send messages while not in transaction")
        while self._buffered >= BUFFER_BYTES:  # until deliveries make room (or it failed)
            self._room.clear()
            await self._room.wait()
            if self._error is not None:
                raise self._error
        cluster = self._client.cluster
        for topic in {topic for topic, _, _ in batches}:
            if cluster.partitions_for_topic(topic) is None:
                await self._client._wait_on_metadata(topic)
                if self._error is not None:  # failed meanwhile: the batch must not be queued
                    raise self._error
        create_future = asyncio.get_running_loop().create_future
        queues = self._queues
        futures: list[asyncio.Future[Delivered]] = []
        for topic, partition, builder in batches:
            tp = TopicPartition(topic, partition)
            queue = queues.get(tp)
            if queue is None:
                queue = queues[tp] = collections.deque()
            future = create_future()
            size = builder.size()
            self._buffered += size
            queue.append(QueuedBatch(builder, future, size))
            futures.append(future)
        if futures:
            self._drained.clear()
            self._wake.set()
        return futures

    async def flush(self) -> None:
        """Until every batch handed over so far is delivered or failed (never raises: their
        futures say how it went)."""
        await self._drained.wait()

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, Any], group_id: str
    ) -> None:
        """Step 3: the consumed offsets join the transaction, fenced by the group's generation."""
        if self._error is not None:
            raise self._error
        if not offsets:
            return
        try:
            self._touched = True
            if not self._offsets_added and not self._txn.v2:
                await self._txn.add_offsets(group_id)
                self._offsets_added = True
            await self._txn.commit_offsets(offsets, group_id)
        except BaseException as exc:
            self._fail(exc)
            raise

    async def commit_transaction(self) -> None:
        """Step 4: every batch delivered, then EndTxn(commit)."""
        await self._end(commit=True)

    async def abort_transaction(self) -> None:
        """Whatever is queued fails; EndTxn(abort) once the requests in flight are answered
        (none when fenced: the transaction is the new producer's to abort)."""
        self._fail(self._error or errors.KafkaError("the transaction was aborted"))
        await self._drained.wait()
        if self._txn.fenced or not self._in_transaction:
            return
        if self._open_on_broker():
            await self._txn.end_txn(commit=False)
        self._reset()

    async def _end(self, *, commit: bool) -> None:
        if self._error is not None:
            raise self._error
        await self._drained.wait()
        if self._error is not None:
            raise self._error
        if self._open_on_broker():
            try:
                await self._txn.end_txn(commit=commit)
            except BaseException as exc:
                self._fail(exc)
                raise
        self._reset()

    def _open_on_broker(self) -> bool:
        return bool(self._added or self._offsets_added or self._touched)

    def _reset(self) -> None:
        if self._touched and self._txn.v2:
            self._sequences = {}  # a new epoch (EndTxn v5): sequences start again at 0
        self._in_transaction = False
        self._added = set()
        self._offsets_added = False
        self._touched = False

    # -- the sender (step 2) -----------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._send_ready()
            except Exception as exc:  # the transaction cannot go on
                self._fail(exc)

    async def _send_ready(self) -> None:
        now = time.monotonic()
        ready = [
            tp
            for tp, queue in self._queues.items()
            if queue and tp not in self._busy and self._not_before.get(tp, 0.0) <= now
        ]
        if self._error is not None:
            self._fail_queued(self._error)
            return
        if not ready:
            return
        new = [] if self._txn.v2 else [tp for tp in ready if tp not in self._added]
        if new:
            self._added |= await self._txn.add_partitions(new)
            if self._error is not None:
                return
        cluster = self._client.cluster
        by_node: dict[int, list[TopicPartition]] = {}
        unknown = False
        for tp in ready:
            node = cluster.leader_for_partition(tp)
            if node is None or node < 0:
                unknown = True
                self._later(tp, now)
                continue
            by_node.setdefault(node, []).append(tp)
        if unknown:
            self._client.force_metadata_update()
        for node, tps in by_node.items():
            free = MAX_IN_FLIGHT - self._requests_to.get(node, 0)
            chunk: list[TopicPartition] = []
            size = 0
            for tp in tps:
                if free <= 0:
                    break  # the rest when a request to this node is answered
                batch = self._head(tp, now)
                chunk.append(tp)
                size += len(batch.data)
                if size >= MAX_REQUEST_BYTES:
                    self._request(node, chunk)
                    free -= 1
                    chunk, size = [], 0
            if chunk:
                self._request(node, chunk)

    def _request(self, node: int, tps: list[TopicPartition]) -> None:
        """One Produce request of `tps`' head batches to `node`, answered in a task."""
        batches = [self._queues[tp][0] for tp in tps]
        self._requests_to[node] = self._requests_to.get(node, 0) + 1
        self._busy.update(tps)
        self._touched = True
        task = asyncio.create_task(self._produce(node, tps, batches))
        self._requests.add(task)
        task.add_done_callback(self._requests.discard)

    def _head(self, tp: TopicPartition, now: float) -> QueuedBatch:
        """The partition's next batch, built with its sequence number on its first send."""
        batch = self._queues[tp][0]
        if batch.data is None:
            sequence = self._sequences.get(tp, 0)
            builder = batch.builder
            batch.count = builder.record_count()
            builder._set_producer_state(self._txn.producer_id, self._txn.producer_epoch, sequence)
            batch.data = builder._build()
            self._sequences[tp] = (sequence + batch.count) % SEQUENCE_LIMIT
            self._first_try[tp] = now
        return batch

    async def _produce(
        self, node: int, tps: list[TopicPartition], batches: list[QueuedBatch]
    ) -> None:
        topics: dict[str, list[tuple[int, Any]]] = {}
        for tp, batch in zip(tps, batches, strict=True):
            topics.setdefault(tp.topic, []).append((tp.partition, batch.data))
        request = ProduceBatches(
            self.transactional_id, self._request_timeout_ms, topics, flexible=self._txn.v2
        )
        try:
            try:
                response = await self._client.send(node, request)
            except CONNECTION_ERRORS:
                now = time.monotonic()
                for tp in tps:
                    self._retry(tp, now, errors.RequestTimedOutError())
                self._client.force_metadata_update()
                return
            self._answered(tps, response.partitions)
        except Exception as exc:
            self._fail(exc)
        finally:
            self._requests_to[node] -= 1
            self._busy.difference_update(tps)
            if self._error is not None:  # what this answer left unresolved fails too
                self._fail_queued(self._error)
            self._settle()
            self._wake.set()

    def _answered(
        self, tps: list[TopicPartition], answers: list[tuple[str, int, int, int]]
    ) -> None:
        now = time.monotonic()
        seen = set()
        refresh = False
        for topic, partition, code, offset in answers:
            tp = TopicPartition(topic, partition)
            queue = self._queues.get(tp)
            if tp not in self._busy or not queue:
                continue
            seen.add(tp)
            if code in (NONE, DUPLICATE_SEQUENCE_NUMBER):
                batch = queue.popleft()
                self._resolved(batch)
                self._first_try.pop(tp, None)
                self._attempts.pop(tp, None)
                if not batch.future.done():
                    batch.future.set_result(
                        Delivered(topic, partition, offset if code == NONE else None)
                    )
                continue
            error = errors.for_code(code)
            if code in FENCED:
                self._txn.fenced = True
                self._fail(errors.ProducerFenced())
                return
            if code in RETRY_PRODUCE or getattr(error, "retriable", False):
                refresh = refresh or getattr(error, "invalid_metadata", False)
                self._retry(tp, now, error(), soon=code in TRANSIENT)
                continue
            self._fail(error(f"producing to {topic}[{partition}]"))
            return
        for tp in tps:
            if tp not in seen:  # not in the answer: send again
                self._retry(tp, now, errors.KafkaError(f"no answer for {tp}"))
        if refresh:
            self._client.force_metadata_update()

    def _retry(
        self, tp: TopicPartition, now: float, cause: BaseException, *, soon: bool = False
    ) -> None:
        """Send the partition's batch again after the backoff (`soon`: after 1, 2, 4... ms,
        up to the backoff, for a refusal that passes in a moment)."""
        if now - self._first_try.get(tp, now) > self._delivery_timeout:
            self._fail(errors.KafkaTimeoutError(f"{tp} not written in time: {cause!r}"))
            return
        delay = self._backoff
        if soon:
            attempt = self._attempts.get(tp, 0)
            self._attempts[tp] = attempt + 1
            delay = min(delay, 0.001 * 2**attempt)
        self._later(tp, now, delay)

    def _later(self, tp: TopicPartition, now: float, delay: float | None = None) -> None:
        delay = self._backoff if delay is None else delay
        self._not_before[tp] = now + delay
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    def _resolved(self, batch: QueuedBatch) -> None:
        """`batch` left its queue (delivered or failed): its bytes leave the buffer."""
        self._buffered -= batch.size
        if self._buffered < BUFFER_BYTES:
            self._room.set()

    def _settle(self) -> None:
        if not self._busy and not any(self._queues.values()):
            self._drained.set()

    def _fail(self, exc: BaseException) -> None:
        """The transaction failed: every later call raises `exc`; queued batches fail with it."""
        if self._error is None:
            self._error = exc
        if isinstance(exc, errors.ProducerFenced):
            self._txn.fenced = True
        self._room.set()  # a hand-over waiting for room raises the error instead
        self._fail_queued(self._error)

    def _fail_queued(self, exc: BaseException) -> None:
        for tp, queue in self._queues.items():
            keep = queue[0] if tp in self._busy and queue else None
            while queue:
                batch = queue.popleft()
                if batch is keep:
                    continue
                self._resolved(batch)
                if not batch.future.done():
                    batch.future.set_exception(exc)
            if keep is not None:
                queue.append(keep)  # its request answers it
        self._settle()
