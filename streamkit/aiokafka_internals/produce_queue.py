"""The batches `txn_producer.TransactionalProducer` queues, what their delivery resolves to,
and the limits and error codes its sender works with."""

from __future__ import annotations

import asyncio
from typing import Any, NamedTuple

from streamkit.aiokafka_internals.groups import CONCURRENT_TRANSACTIONS

SEQUENCE_LIMIT = 1 << 31  # sequence numbers wrap to 0 past Int32's maximum
# retried though aiokafka's classes say otherwise: NETWORK_EXCEPTION, and the previous
# transaction's markers not all written yet (Produce v12 gets the code itself, CONCURRENT_
# TRANSACTIONS; older versions get NOT_ENOUGH_REPLICAS, which is retriable)
RETRY_PRODUCE = {13, CONCURRENT_TRANSACTIONS}
# a transaction coordinator busy with another change of the same transaction (the partitions
# other leaders add at the same moment, version 2) or the previous transaction's markers: these
# pass within milliseconds, so the first retries come sooner than the backoff
NOT_ENOUGH_REPLICAS = 19
TRANSIENT = {CONCURRENT_TRANSACTIONS, NOT_ENOUGH_REPLICAS}


# A request carries a batch of each ready partition until it holds this many bytes, and up to
# MAX_IN_FLIGHT requests go to a broker at once (Java's max.request.size and
# max.in.flight.requests.per.connection): at hundreds of partitions one request of every
# partition's batch could hold tens of megabytes, answered after the broker appended all of it.
MAX_REQUEST_BYTES = 1024 * 1024
MAX_IN_FLIGHT = 5
# Batches handed over and not yet delivered, in bytes, beyond which a hand-over waits (Java's
# buffer.memory): under a backlog the tasks then go at the broker's pace, and a checkpoint
# waits for at most this much, not for every batch the tasks filled since the last one.
BUFFER_BYTES = 32 * 1024 * 1024


class Delivered(NamedTuple):
    """A batch's place in its partition (what the collector reads of aiokafka's metadata);
    offset None when the broker had it already (a retried request's repeat)."""

    topic: str
    partition: int
    offset: int | None


class QueuedBatch:
    __slots__ = ("builder", "count", "data", "future", "size")

    def __init__(self, builder: Any, future: asyncio.Future[Delivered], size: int) -> None:
        self.builder = builder
        self.future = future
        self.size = size  # counted in the producer's buffer until delivered or failed
        self.data: Any = None  # built (with its sequence) when first sent
        self.count = 0
