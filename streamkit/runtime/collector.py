"""RecordCollector: one task's outputs, batched per destination partition, handed to a producer.

`append` is synchronous and cheap (encode is done by the caller, the record goes into an
aiokafka `BatchBuilder` through its C record builder: `aiokafka_internals/batches.py`);
`add` (a known partition) and the functions `keyed` makes (a record to its key's partition)
are the hot path's, done in C in the common case (`batches.adder`, `batches.router`);
`submit` hands open batches to the producer without waiting for the broker; `flush` submits
and then waits for every delivery, raising the first failure.

Under exactly-once a task owns one collector bound to its own transactional producer. The
checkpoint `seal`s the collector (everything appended so far belongs to the transaction being
committed) and lets the task go on: what it appends next is *held* (kept in batches, never handed
to the producer) until `release`, after the transaction committed and the next one began.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka.errors import IllegalOperation, KafkaError, KafkaTimeoutError

from streamkit.aiokafka_internals import Add, OpenBatch, Route, adder, router
from streamkit.events import Headers
from streamkit.keys import partition_for_key, partition_of


class ProduceFailed(Exception):
    """Outputs could not be handed to or written by the broker: the worker must stop, never
    treat it as a bad event."""


# aiokafka 0.14's `send_batch` waits for the partition's previous batch with a timeout that it
# shrinks by the *cumulative* elapsed time on every pass (message_accumulator.add_batch), so
# when several tasks feed one partition it can give up after a second or two instead of
# `request_timeout_ms`. The batch was not queued then, so we retry until our own deadline.
SUBMIT_DEADLINE = 60.0
HELD_BATCHES = 64  # full batches a held collector keeps before its task waits for the release

_NO_HEADERS: list[tuple[str, bytes]] = []  # never mutated: the builder only reads it


class RecordCollector:
    # `add(tp, key, value, headers, timestamp_ms)`: `append` to a known partition, positional:
    # the hot path's (an exchange, a sink, a changelog and an agent's output call it once per
    # record). True when a batch filled up. `_add` in C for the common case (`batches.adder`).
    add: Add

    def __init__(
        self,
        producer: Any,
        partition_counts: dict[str, int],
        *,
        transactional: bool = False,
        delivered: dict[tuple[str, int], int] | None = None,
    ) -> None:
        self._producer = producer
        # records acknowledged per destination partition, counted per batch (the worker's
        # metrics read it; shared by every collector of a worker)
        self.delivered: dict[tuple[str, int], int] = {} if delivered is None else delivered
        # Transactional: a failed send is kept for the checkpoint (which drops the task's
        # uncommitted work) instead of stopping the worker.
        self._transactional = transactional
        self.error: ProduceFailed | None = None
        self._partition_counts = partition_counts
        self._open: dict[tuple[str, int], OpenBatch] = {}  # cleared, never replaced (`adder`)
        self.add = adder(self._open, self._add)
        self._full: list[tuple[str, int, Any]] = []
        self._in_flight: list[tuple[int, asyncio.Future[Any]]] = []  # (records, future)
        self._sticky: dict[str, int] = {}  # keyless records: one partition per batch
        self._submit_lock = asyncio.Lock()  # one submitter at a time keeps partition order
        self._released = asyncio.Event()  # cleared while held (exactly-once checkpoint running)
        self._released.set()

    @property
    def producer(self) -> Any:
        return self._producer

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
        partition: int | None = None,
    ) -> bool:
        """Add one encoded record to the open batch of its destination partition. Keyed
        records go where Java would put them; keyless ones stick to one partition per batch
        (as Java's sticky partitioner does). True when a batch filled up (`submit_full`)."""
        if partition is None:
            if key is not None:
                partition = partition_for_key(key, self._partition_counts[topic])
            else:
                partition = self._sticky.get(topic)
                if partition is None:
                    partition = self._next_sticky(topic)
        return self.add((topic, partition), key, value, headers, timestamp_ms)

    def _add(
        self,
        tp: tuple[str, int],
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
        timestamp_ms: int | None,
    ) -> bool:
        """`add` in Python: every case (a batch to open, one that filled up, headers to copy)."""
        batch = self._open.get(tp)
        if batch is None:
            batch = self._open[tp] = OpenBatch(self._producer.create_batch())
        if not headers:
            headers = _NO_HEADERS
        elif type(headers) is not list:  # consumed records carry a tuple; the builder wants lists
            headers = list(headers)
        if batch.append(batch.count, timestamp_ms, key, value, headers) is not None:
            batch.count += 1
            return False
        # batch full: queue it, start another
        topic, partition = tp
        self._full.append((topic, partition, batch.closed()))
        batch = self._open[tp] = OpenBatch(self._producer.create_batch())
        if batch.append(0, timestamp_ms, key, value, headers) is None:
            raise ValueError(f"record for {topic} is larger than max_batch_size")
        batch.count = 1
        if key is None:
            self._next_sticky(topic)
        return True

    def keyed(self, topic: str) -> Route:
        """`append` for records of `topic` that keep their key (a sink, an agent's output):
        `(key, value, timestamp_ms, headers=None)`, one function per topic, positional, with
        the key's partition remembered. Keyless records go as `append` sends them."""
        tps: list[tuple[str, int]] = []  # filled on the first keyed record
        known: dict[bytes, int] = {}  # the keys' partitions (`partition_of`)
        append, counts = self.append, self._partition_counts

        def place(key: bytes) -> int:
            if not tps:
                tps.extend((topic, p) for p in range(counts[topic]))
            return partition_of(known, key, len(tps))

        def keyless(value: bytes | None, timestamp_ms: int | None, headers: Any) -> bool:
            return append(topic, None, value, headers=headers, timestamp_ms=timestamp_ms)

        return self.keyed_router(tps, known, place, keyless)

    def keyed_router(
        self,
        tps: list[tuple[str, int]],
        known: dict[bytes, int],
        place: Callable[[bytes], int],
        keyless: Callable[[bytes | None, int | None, Any], bool],
    ) -> Route:
        """A router of the caller's own (an exchange's `key_by`): `batches.router` on `add`."""
        return router(self.add, tps, known, place, keyless)

    def _next_sticky(self, topic: str) -> int:
        previous = self._sticky.get(topic, -1)
        partition = self._sticky[topic] = (previous + 1) % self._partition_counts[topic]
        return partition

    async def submit_full(self) -> None:
        """Hand the batches that filled up to the producer (held: keep them, and wait for the
        release once too many are waiting)."""
        while not self._released.is_set():
            if len(self._full) < HELD_BATCHES:
                return
            await self._released.wait()
        async with self._submit_lock:
            # A seal (a checkpoint; another task of a shared collector is not paused while it
            # closes) may come while a batch is in hand: that batch is already on its way to
            # this transaction's producer, so its delivery joins the sealed list it was taken
            # for (`flush_sealed` waits for this lock); what filled up after the seal is held.
            while self._full and self.error is None and self._released.is_set():
                topic, partition, builder = self._full.pop(0)
                in_flight = self._in_flight
                count = builder.record_count()
                try:
                    fut = await self._send_batch(builder, topic, partition)
                except ProduceFailed as exc:
                    if not self._transactional:
                        raise
                    self.error = exc  # the transaction is lost: the checkpoint will say so
                    return
                in_flight.append((count, fut))

    async def _send_batch(self, builder: Any, topic: str, partition: int) -> Any:
        deadline = time.monotonic() + SUBMIT_DEADLINE
        while True:
            try:
                return await self._producer.send_batch(builder, topic, partition=partition)
            except KafkaTimeoutError as exc:
                if time.monotonic() > deadline:
                    raise ProduceFailed(
                        f"could not queue a batch for {topic}[{partition}] in "
                        f"{SUBMIT_DEADLINE:.0f}s"
                    ) from exc
            except (KafkaError, IllegalOperation) as exc:
                raise ProduceFailed(f"producing to {topic}[{partition}]: {exc!r}") from exc

    async def submit(self) -> None:
        """Hand every batch, full or not, to the producer (no waiting for the broker)."""
        if (not self._open and not self._full) or not self._released.is_set():
            return
        self._full.extend((t, p, b.closed()) for (t, p), b in self._open.items())
        self._open.clear()
        for topic in self._sticky:  # the next keyless batch goes to the next partition
            self._next_sticky(topic)
        await self.submit_full()

    async def flush(self) -> dict[tuple[str, int], int]:
        """Submit everything and wait until the broker acknowledged it all. Returns the offset
        of the last record written to each partition (the changelog offsets state reflects)."""
        await self.submit()
        async with self._submit_lock:  # a batch another coroutine is handing over joins it
            in_flight, self._in_flight = self._in_flight, []
        return await _delivered(in_flight, self.delivered)

    # -- exactly-once: the batches of one transaction --------------------------------------------

    def seal(self) -> Sealed:
        """Take everything appended so far (submitted or not) for the transaction being
        committed; hold what comes next until `release`. Synchronous: call it with the task
        stopped at an event boundary."""
        batches = [*self._full, *((t, p, b.closed()) for (t, p), b in self._open.items())]
        sealed = Sealed(batches, self._in_flight)
        self._full, self._in_flight = [], []
        self._open.clear()
        for topic in self._sticky:
            self._next_sticky(topic)
        self._released.clear()
        return sealed

    async def flush_sealed(self, sealed: Sealed) -> dict[tuple[str, int], int]:
        """Hand the sealed batches to the producer and wait for their delivery."""
        if self.error is not None:
            raise self.error
        async with self._submit_lock:
            await self._hand_over(sealed)
        if any(not fut.done() for _, fut in sealed.in_flight):
            # one wait for the producer to have nothing left in flight, rather than a callback
            # per batch (hundreds at hundreds of partitions); every batch it holds is ours
            await self._producer.flush()
        return await _delivered(sealed.in_flight, self.delivered)

    async def _hand_over(self, sealed: Sealed) -> None:
        """The sealed batches to the producer, their deliveries to `sealed.in_flight`."""
        for topic, partition, builder in sealed.batches:
            count = builder.record_count()
            fut = await self._send_batch(builder, topic, partition)
            sealed.in_flight.append((count, fut))
        sealed.batches = []

    def release(self) -> None:
        """The sealed transaction is over: held batches may go to the producer again."""
        self._released.set()

    def discard(self) -> None:
        """Drop what was not submitted yet (a fenced or failed task's outputs)."""
        for _, fut in self._in_flight:
            fut.add_done_callback(_retrieve)
        self._open.clear()
        self._full = []
        self._in_flight = []
        self._released.set()


class Sealed:
    """The batches of one transaction: still to hand over, and handed over (record count and
    delivery future)."""

    def __init__(
        self, batches: list[tuple[str, int, Any]], in_flight: list[tuple[int, asyncio.Future[Any]]]
    ) -> None:
        self.batches = batches
        self.in_flight = in_flight

    @property
    def empty(self) -> bool:
        return not self.batches and not self.in_flight

    @classmethod
    def joined(cls, parts: list[Sealed]) -> Sealed:
        """Several seals of one collector as one: handed over together (one produce request
        for all of them, where each seal's own hand-over could let the sender go with a
        part and leave the rest for a second round trip)."""
        return cls(
            [b for part in parts for b in part.batches],
            [f for part in parts for f in part.in_flight],
        )

    def failures(self) -> list[BaseException]:
        """Why deliveries failed (read, so that asyncio does not report them as unread)."""
        found = []
        for _, fut in self.in_flight:
            fut.add_done_callback(_retrieve)
            if fut.done() and not fut.cancelled() and fut.exception() is not None:
                found.append(fut.exception())
        return [exc for exc in found if exc is not None]


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _delivered(
    in_flight: list[tuple[int, asyncio.Future[Any]]], counts: dict[tuple[str, int], int]
) -> dict[tuple[str, int], int]:
    """Wait for every delivery; the offset of the last record written to each partition."""
    last: dict[tuple[str, int], int] = {}
    in_flight = list(in_flight)  # (what is appended to the list from now on is not ours)
    pending = [fut for _, fut in in_flight if not fut.done()]
    if pending:
        await asyncio.wait(pending)
    failures = [
        asyncio.CancelledError() if fut.cancelled() else fut.exception() for _, fut in in_flight
    ]  # (each read: none is reported as never retrieved)
    error = next((e for e in failures if e is not None), None)
    if error is not None:
        raise ProduceFailed(f"a batch was not written: {error!r}") from error
    for count, fut in in_flight:
        meta = fut.result()
        if meta is not None and meta.offset is not None:
            tp = (meta.topic, meta.partition)
            last[tp] = max(last.get(tp, -1), meta.offset + count - 1)
            counts[tp] = counts.get(tp, 0) + count
    return last
