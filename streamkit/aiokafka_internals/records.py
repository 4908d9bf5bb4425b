"""Reading one partition's part of a raw Fetch response with aiokafka's C record reader
(`aiokafka.record`): the read_committed walk shared by the compacted-topic reader and the
input partitions' fetch, and the input partitions' record class.

- `committed_batches`: the record batches a read_committed consumer hands out, with the offset
  to fetch from next: control batches and the batches of aborted transactions (KIP-98, the
  response's aborted transactions list) are skipped.
- `InputRecord`: what a task reads from an input record (topic, partition, offset, timestamp,
  key, value, headers), the attributes of aiokafka's `ConsumerRecord` that streamkit uses, in
  a light class (slots, no deserializers, no sizes, no checksum).
- `input_records`: the `InputRecord`s of those batches from a position on, a few batches at a
  time.
"""

from __future__ import annotations

from typing import Any

from aiokafka.record.control_record import ABORT_MARKER, ControlRecord
from aiokafka.record.memory_records import MemoryRecords


class InputRecord:
    """One record of an input partition, as a task reads it."""

    __slots__ = (
        "headers",
        "key",
        "offset",
        "partition",
        "timestamp",
        "timestamp_type",
        "topic",
        "value",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int,
        timestamp_type: int,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[tuple[str, bytes], ...],
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.timestamp = timestamp
        self.timestamp_type = timestamp_type
        self.key = key
        self.value = value
        self.headers = headers

    def __repr__(self) -> str:
        return (
            f"InputRecord({self.topic}[{self.partition}]@{self.offset}, ts={self.timestamp}, "
            f"key={self.key!r}, {len(self.value or b'')} bytes, headers={self.headers!r})"
        )


def committed_batches(
    data: bytes | None, aborted_list: list[Any] | None, offset: int
) -> tuple[list[Any], int]:
    """The data batches of a read_committed fetch `data` (the partition's record set) that a
    consumer at `offset` reads, and the offset after the last complete batch (past skipped
    control and aborted batches too). `aborted_list`: the response's (producer id, first
    offset) of each aborted transaction."""
    aborted = sorted(aborted_list or (), key=lambda a: a[1])
    aborted_producers: set[int] = set()
    kept: list[Any] = []
    if not data:
        return kept, offset
    records = MemoryRecords(data)
    while records.has_next():
        batch = records.next_batch()
        if batch is None:  # a partial batch at the end of the response
            break
        producer = batch.producer_id
        if producer is not None and producer >= 0:
            while aborted and aborted[0][1] <= batch.base_offset:
                aborted_producers.add(aborted.pop(0)[0])
            if batch.is_control_batch:
                marker = next(iter(batch)).key
                if marker is not None and ControlRecord.parse(marker) == ABORT_MARKER:
                    aborted_producers.discard(producer)
            elif batch.is_transactional and producer in aborted_producers:
                offset = max(offset, batch.next_offset)
                continue
        if not batch.is_control_batch and batch.next_offset > offset:
            kept.append(batch)
        offset = max(offset, batch.next_offset)
    return kept, offset


def input_records(
    topic: str, partition: int, batches: list[Any], start: int, want: int
) -> list[InputRecord]:
    """The records at or after offset `start` (a batch can begin before the position asked
    for: compression makes the broker send whole batches) of the first of `batches`, taken
    off the list, until there are `want` or the list is empty (so a response is read as its
    records are handed over, not all at once)."""
    out: list[InputRecord] = []
    append = out.append
    new = object.__new__  # the fields set here, not through `__init__`'s frame: -20 % a record
    while batches and len(out) < want:
        batch = batches.pop(0)
        kind = batch.timestamp_type
        for record in batch:
            offset = record.offset
            if offset >= start:
                rec = new(InputRecord)
                rec.topic, rec.partition, rec.offset = topic, partition, offset
                rec.timestamp, rec.timestamp_type = record.timestamp, kind
                rec.key, rec.value = record.key, record.value
                headers = record.headers
                rec.headers = tuple(headers) if headers else ()
                append(rec)
    return out
