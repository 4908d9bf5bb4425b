"""Produce v7 and v12 on aiokafka's connections, encoded and decoded by hand.

aiokafka's generic `Schema` encoder and decoder walk a request field by field in Python, a
few microseconds per partition and per field: at a few hundred partitions a request, that was
a good part of a checkpoint (docs/benchmarks.md). A Produce request is only a header and a
list of (topic, [(partition, record batch bytes)]), and its response a list of (topic,
[(partition, error, base offset, ...)]): `ProduceBatches` writes the one with `struct` and a
join, and `ProduceResult.decode` reads the other straight from the frame.

v7 is the version aiokafka 0.14's own producer sends (Kafka 4 accepts v3 to v13). v12 (the
flexible encoding: compact lengths, tagged fields) is the one a transaction of transaction
version 2 uses (KIP-890 part 2): the partition leader adds the partition to the transaction
itself, so the producer sends no AddPartitionsToTxn. From v3 on, a partition's `records` must
hold exactly one record batch.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Bytes, Int16, Int32, Int64, Schema, String

PRODUCE_VERSION = 7
FLEXIBLE_PRODUCE_VERSION = 12

_HEAD = struct.Struct(">hii")  # acks, timeout_ms, topic count
_SHORT = struct.Struct(">h")
_INT = struct.Struct(">i")
_PART = struct.Struct(">ii")  # partition, records' length
_ANSWER = struct.Struct(">ihqqq")  # partition, error, base offset, append time, log start


class ProduceResult(Response):  # type: ignore[misc]
    """Produce v7's response as (topic, partition, error code, base offset) tuples."""

    API_KEY = 0
    API_VERSION = PRODUCE_VERSION
    SCHEMA = Schema(
        (
            "responses",
            Array(
                ("topic", String("utf-8")),
                (
                    "partitions",
                    Array(
                        ("partition", Int32),
                        ("error_code", Int16),
                        ("offset", Int64),
                        ("timestamp", Int64),
                        ("log_start_offset", Int64),
                    ),
                ),
            ),
        ),
        ("throttle_time_ms", Int32),
    )

    def __init__(self, partitions: list[tuple[str, int, int, int]]) -> None:
        self.partitions = partitions

    @classmethod
    def decode(cls, data: BytesIO | bytes) -> ProduceResult:
        buf = data.getvalue() if isinstance(data, BytesIO) else data
        pos = data.tell() if isinstance(data, BytesIO) else 0
        out: list[tuple[str, int, int, int]] = []
        (topics,) = _INT.unpack_from(buf, pos)
        pos += 4
        for _ in range(topics):
            (length,) = _SHORT.unpack_from(buf, pos)
            pos += 2
            topic = buf[pos : pos + length].decode()
            pos += length
            (count,) = _INT.unpack_from(buf, pos)
            pos += 4
            for _ in range(count):
                partition, code, offset, _, _ = _ANSWER.unpack_from(buf, pos)
                pos += _ANSWER.size
                out.append((topic, partition, code, offset))
        return cls(out)

    def __repr__(self) -> str:
        return f"ProduceResult({len(self.partitions)} partitions)"


class _ProduceV7(RequestStruct):  # type: ignore[misc]
    API_KEY = 0
    API_VERSION = PRODUCE_VERSION
    RESPONSE_TYPE = ProduceResult
    SCHEMA = Schema(
        ("transactional_id", String("utf-8")),
        ("acks", Int16),
        ("timeout", Int32),
        (
            "topics",
            Array(
                ("topic", String("utf-8")),
                ("partitions", Array(("partition", Int32), ("records", Bytes))),
            ),
        ),
    )

    def __init__(
        self,
        transactional_id: str | None,
        timeout_ms: int,
        topics: dict[str, list[tuple[int, Any]]],
    ) -> None:
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.topics = topics

    def encode(self) -> bytes:
        txn = self.transactional_id
        if txn is None:
            out: list[Any] = [_SHORT.pack(-1)]
        else:
            name = txn.encode()
            out = [_SHORT.pack(len(name)), name]
        out.append(_HEAD.pack(-1, self.timeout_ms, len(self.topics)))  # acks=all
        append = out.append
        for topic, parts in self.topics.items():
            encoded = topic.encode()
            append(_SHORT.pack(len(encoded)))
            append(encoded)
            append(_INT.pack(len(parts)))
            for partition, records in parts:
                append(_PART.pack(partition, len(records)))
                append(records)
        return b"".join(out)

    def __repr__(self) -> str:
        count = sum(len(p) for p in self.topics.values())
        return f"ProduceRequest_v7({self.transactional_id!r}, {count} partitions)"


# -- v12: the flexible encoding -------------------------------------------------------------------


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def compact_string(text: str | None) -> bytes:
    """A compact nullable string (the flexible versions' encoding)."""
    if text is None:
        return b"\x00"
    encoded = text.encode()
    return uvarint(len(encoded) + 1) + encoded


def read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it)."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def skip_tags(buf: bytes, pos: int) -> int:
    """The position after a tagged-field section (none of its fields is read)."""
    count, pos = read_uvarint(buf, pos)
    for _ in range(count):
        _, pos = read_uvarint(buf, pos)
        size, pos = read_uvarint(buf, pos)
        pos += size
    return pos


def _skip_compact_string(buf: bytes, pos: int) -> int:
    length, pos = read_uvarint(buf, pos)
    return pos + max(length - 1, 0)


class FlexibleProduceResult(ProduceResult):
    """Produce v12's response, read as `ProduceResult`'s (record errors, messages, the
    new-leader hints and tagged fields skipped)."""

    API_VERSION = FLEXIBLE_PRODUCE_VERSION

    @classmethod
    def decode(cls, data: BytesIO | bytes) -> ProduceResult:
        buf = data.getvalue() if isinstance(data, BytesIO) else data
        pos = data.tell() if isinstance(data, BytesIO) else 0
        out: list[tuple[str, int, int, int]] = []
        topics, pos = read_uvarint(buf, pos)
        for _ in range(topics - 1):
            length, pos = read_uvarint(buf, pos)
            topic = buf[pos : pos + length - 1].decode()
            pos += length - 1
            count, pos = read_uvarint(buf, pos)
            for _ in range(count - 1):
                partition, code, offset, _, _ = _ANSWER.unpack_from(buf, pos)
                pos += _ANSWER.size
                errors, pos = read_uvarint(buf, pos)  # record errors
                for _ in range(errors - 1):
                    pos = skip_tags(buf, _skip_compact_string(buf, pos + 4))
                pos = skip_tags(buf, _skip_compact_string(buf, pos))  # error message, tags
                out.append((topic, partition, code, offset))
            pos = skip_tags(buf, pos)
        return cls(out)


class _ProduceV12(_ProduceV7):
    FLEXIBLE_VERSION = True
    API_VERSION = FLEXIBLE_PRODUCE_VERSION
    RESPONSE_TYPE = FlexibleProduceResult

    def encode(self) -> bytes:
        out: list[Any] = [compact_string(self.transactional_id)]
        out.append(_HEAD.pack(-1, self.timeout_ms, 0)[:6])  # acks=all, timeout
        out.append(uvarint(len(self.topics) + 1))
        append = out.append
        for topic, parts in self.topics.items():
            append(compact_string(topic))
            append(uvarint(len(parts) + 1))
            for partition, records in parts:
                append(_INT.pack(partition))
                append(uvarint(len(records) + 1))
                append(records)
                append(b"\x00")  # no tagged fields
            append(b"\x00")
        append(b"\x00")
        return b"".join(out)


class ProduceBatches(Request[_ProduceV7 | _ProduceV12]):  # type: ignore[misc]
    """One Produce request (acks=all): `topics` maps a topic to its (partition, one built record
    batch) pairs. v7, or v12 when `flexible` (transaction version 2: no AddPartitionsToTxn)."""

    API_KEY = 0

    def __init__(
        self,
        transactional_id: str | None,
        timeout_ms: int,
        topics: dict[str, list[tuple[int, Any]]],
        *,
        flexible: bool = False,
    ) -> None:
        version = _ProduceV12 if flexible else _ProduceV7
        self._struct = version(transactional_id, timeout_ms, topics)

    def build(self, request_struct_class: type[_ProduceV7]) -> _ProduceV7:
        return self._struct
