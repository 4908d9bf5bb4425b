"""Produce v7 on aiokafka's connections, encoded and decoded by hand.

aiokafka's generic `Schema` encoder and decoder walk a request field by field in Python, a
few microseconds per partition and per field: at a few hundred partitions a request, that was
a good part of a checkpoint (docs/benchmarks.md). A Produce request is only a header and a
list of (topic, [(partition, record batch bytes)]), and its response a list of (topic,
[(partition, error, base offset, ...)]): `ProduceBatches` writes the one with `struct` and a
join, and `ProduceResult.decode` reads the other straight from the frame.

v7 is the version aiokafka 0.14's own producer sends (Kafka 4 accepts v3 to v12). From v3 on,
a partition's `records` must hold exactly one record batch.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Bytes, Int16, Int32, Int64, Schema, String

PRODUCE_VERSION = 7

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


class ProduceBatches(Request[_ProduceV7]):  # type: ignore[misc]
    """One Produce request (acks=all): `topics` maps a topic to its (partition, one built record
    batch) pairs."""

    API_KEY = 0

    def __init__(
        self,
        transactional_id: str | None,
        timeout_ms: int,
        topics: dict[str, list[tuple[int, Any]]],
    ) -> None:
        self._struct = _ProduceV7(transactional_id, timeout_ms, topics)

    def build(self, request_struct_class: type[_ProduceV7]) -> _ProduceV7:
        return self._struct
