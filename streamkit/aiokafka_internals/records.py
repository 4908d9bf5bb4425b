"""Reading one partition's part of a raw Fetch response: the read_committed walk shared by the
compacted-topic reader and the input partitions' fetch, and the input partitions' records.

- `committed_batches`: the record batches a read_committed consumer hands out (`Batch`: a
  view of the response's bytes), with the offset to fetch from next: control batches and the
  batches of aborted transactions (KIP-98, the response's aborted transactions list) are
  skipped. It reads each batch's header only.
- `InputRecord`: what a task reads from an input record (topic, partition, offset, timestamp,
  key, value, headers), the attributes of aiokafka's `ConsumerRecord` that streamkit uses, in
  a light class (slots, no deserializers, no sizes, no checksum).
- `input_records`: the `InputRecord`s of those batches from a position on, a few batches at a
  time; `batch_rows`: a batch's (key, value) pairs and timestamps, for the restore.

The records of an uncompressed batch are read by `_records.c` (one pass in C, each record's
object built there); a compressed one, one in an older format, and every batch when
STREAMKIT_PURE_PYTHON=1 (or the extension could not be built), by aiokafka's reader: the
reference, which the tests compare the native reader with.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from aiokafka.record.control_record import ABORT_MARKER, ControlRecord
from aiokafka.record.memory_records import MemoryRecords

try:
    import streamkit.aiokafka_internals._records as _records

    BUILT = True  # the extension is there
except ImportError:  # pragma: no cover (no C compiler where it was installed)
    BUILT = False
NATIVE = BUILT and os.environ.get("STREAMKIT_PURE_PYTHON", "") in ("", "0")  # and used

# a v2 batch's header up to its record count: base offset, length, leader epoch, magic, CRC,
# attributes, last offset delta, base and max timestamp, producer id and epoch, base sequence
_HEADER = struct.Struct(">qiibIhiqqqhii")
_LOG_OVERHEAD = 12  # base offset and length: what every format's batch begins with
_COMPRESSION, _TRANSACTIONAL, _CONTROL = 0x07, 0x10, 0x20


class Batch:
    """One record batch of a response: its bytes (a view) and what its header says."""

    __slots__ = ("base_offset", "data", "max_timestamp", "native", "next_offset", "timestamp_type")

    def __init__(
        self,
        data: memoryview,
        base_offset: int,
        next_offset: int,
        max_timestamp: int,
        kind: int,
        native: bool,
    ) -> None:
        self.data = data
        self.base_offset = base_offset
        self.next_offset = next_offset
        self.max_timestamp = max_timestamp
        self.timestamp_type = kind
        self.native = native  # read by `_records.c` (uncompressed, magic 2)

    def reference(self) -> Any:
        """The batch as aiokafka's reader has it (the reference path)."""
        return MemoryRecords(bytes(self.data)).next_batch()


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
) -> tuple[list[Batch], int]:
    """The data batches of a read_committed fetch `data` (the partition's record set) that a
    consumer at `offset` reads, and the offset after the last complete batch (past skipped
    control and aborted batches too). `aborted_list`: the response's (producer id, first
    offset) of each aborted transaction."""
    aborted = sorted(aborted_list or (), key=lambda a: a[1])
    aborted_producers: set[int] = set()
    kept: list[Batch] = []
    if not data:
        return kept, offset
    view, size, pos = memoryview(data), len(data), 0
    unpack, header = _HEADER.unpack_from, _HEADER.size
    while pos + _LOG_OVERHEAD <= size:
        length = int.from_bytes(view[pos + 8 : pos + 12], "big", signed=True)
        end = pos + _LOG_OVERHEAD + length
        if end > size:  # a partial batch at the end of the response
            break
        span = view[pos:end]
        pos = end
        if length < header - _LOG_OVERHEAD and (length < 5 or span[16] == 2):
            raise ValueError(f"malformed record batch: {length} bytes after its length")
        if span[16] != 2:  # an older format (no transactions, no max timestamp): aiokafka's
            legacy = MemoryRecords(bytes(span)).next_batch()
            base = int.from_bytes(span[:8], "big", signed=True)
            batch = Batch(span, base, legacy.next_offset, -1, 0, False)
            producer, attributes = -1, 0
        else:
            base, _, _, _, _, attributes, last_delta, _, max_ts, producer, *_ = unpack(span)
            batch = Batch(
                span,
                base,
                base + last_delta + 1,
                max_ts,
                (attributes >> 3) & 1,
                NATIVE and not attributes & _COMPRESSION,
            )
        if producer >= 0:
            while aborted and aborted[0][1] <= base:
                aborted_producers.add(aborted.pop(0)[0])
            if attributes & _CONTROL:
                marker = next(iter(batch.reference())).key
                if marker is not None and ControlRecord.parse(marker) == ABORT_MARKER:
                    aborted_producers.discard(producer)
            elif attributes & _TRANSACTIONAL and producer in aborted_producers:
                offset = max(offset, batch.next_offset)
                continue
        if not attributes & _CONTROL and batch.next_offset > offset:
            kept.append(batch)
        offset = max(offset, batch.next_offset)
    return kept, offset


_FIELDS = ("topic", "partition", "offset", "timestamp", "timestamp_type", "key", "value", "headers")
_SLOTS = _records.slot_offsets(InputRecord, _FIELDS) if BUILT else ()


def input_records(
    topic: str, partition: int, batches: list[Batch], start: int, want: int
) -> list[InputRecord]:
    """The records at or after offset `start` (a batch can begin before the position asked
    for: compression makes the broker send whole batches) of the first of `batches`, taken
    off the list, until there are `want` or the list is empty (so a response is read as its
    records are handed over, not all at once)."""
    out: list[InputRecord] = []
    while batches and len(out) < want:
        batch = batches.pop(0)
        if batch.native:
            _records.input_records(batch.data, start, out, InputRecord, topic, partition, _SLOTS)
        else:
            _reference_records(topic, partition, batch, start, out)
    return out


def _reference_records(
    topic: str, partition: int, batch: Batch, start: int, out: list[InputRecord]
) -> None:
    append, kind = out.append, batch.timestamp_type
    new = object.__new__  # the fields set here, not through `__init__`'s frame: -20 % a record
    for record in batch.reference():
        offset = record.offset
        if offset >= start:
            rec = new(InputRecord)
            rec.topic, rec.partition, rec.offset = topic, partition, offset
            rec.timestamp, rec.timestamp_type = record.timestamp, kind
            rec.key, rec.value = record.key, record.value
            headers = record.headers
            rec.headers = tuple(headers) if headers else ()
            append(rec)


def batch_rows(
    batch: Batch, start: int, rows: list[tuple[bytes, bytes | None]], times: list[int] | None
) -> None:
    """Append the (key, value) of each record of `batch` at or after offset `start` to
    `rows`, and its timestamp to `times` (unless None)."""
    if batch.native:
        _records.rows(batch.data, start, rows, times)
        return
    for record in batch.reference():
        if record.offset >= start:
            rows.append((record.key, record.value))
            if times is not None:
                times.append(record.timestamp)
