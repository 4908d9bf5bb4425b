"""Incremental fetch sessions (KIP-227) for the input partitions' raw fetch, on aiokafka's
Fetch v11 request struct (aiokafka itself always sends sessionless full fetches).

With a session, the broker keeps what it was asked for (each partition's fetch offset): a
request lists only the partitions that are new or whose fetch offset moved, and those to drop
(`forgotten_topics_data`); a response lists only the partitions that have records, an error,
or a new high watermark or last stable offset. At 256 partitions with a handful of records
each per second, a response no longer decodes 256 partitions to hand out a few records.

`FetchSession` is one broker's session: `request(positions, ...)` builds the Fetch for the
partitions wanted now (full on a new session, incremental after), and `answered(response)`
takes the session id and moves the epoch; a refused session (FETCH_SESSION_ID_NOT_FOUND,
INVALID_FETCH_SESSION_EPOCH) or a request without answer starts a new one (`reset`).
One request per session is in flight at a time: the epochs follow each other.

The request and its response are encoded and decoded by hand (`_SessionFetch.encode`,
`SessionFetchResponse.decode`: the same fields and values as aiokafka's Fetch v11 schema,
tested against it): at a few hundred partitions a second, aiokafka's generic schema walk,
field by field, was a tenth of the worker's CPU.
"""

from __future__ import annotations

import struct
from io import BytesIO
from typing import Any

from aiokafka.protocol.api import Request
from aiokafka.protocol.fetch import FetchRequest_v11, FetchResponse_v11
from aiokafka.structs import TopicPartition

READ_COMMITTED = 1
SESSION_ERRORS = (70, 71)  # FETCH_SESSION_ID_NOT_FOUND, INVALID_FETCH_SESSION_EPOCH
MAX_EPOCH = 2**31 - 1


_HEAD = struct.Struct(">iiiibii")  # replica, max wait, min bytes, max bytes, isolation, session
_SHORT = struct.Struct(">h")
_INT = struct.Struct(">i")
_WANT = struct.Struct(">iiqqi")  # partition, leader epoch, fetch offset, log start, max bytes
_TOP = struct.Struct(">ihi")  # throttle time, error code, session id
_PART = struct.Struct(">ihqqq")  # partition, error, high watermark, last stable, log start
_ABORTED = struct.Struct(">qq")  # producer id, first offset


def _string(value: str) -> list[bytes]:
    encoded = value.encode()
    return [_SHORT.pack(len(encoded)), encoded]


class SessionFetchResponse(FetchResponse_v11):  # type: ignore[misc]
    """Fetch v11's response as aiokafka's schema reads it (`topics`: (topic, [(partition,
    error, high watermark, last stable offset, log start, aborted transactions or None,
    preferred read replica, records or None)])), read straight from the frame."""

    @classmethod
    def decode(cls, data: BytesIO | bytes) -> SessionFetchResponse:
        buf = data.getvalue() if isinstance(data, BytesIO) else data
        pos = data.tell() if isinstance(data, BytesIO) else 0
        throttle, code, session = _TOP.unpack_from(buf, pos)
        pos += _TOP.size
        (count,) = _INT.unpack_from(buf, pos)
        pos += 4
        topics = []
        for _ in range(max(count, 0)):
            (length,) = _SHORT.unpack_from(buf, pos)
            pos += 2
            topic = buf[pos : pos + length].decode()
            pos += length
            (parts,) = _INT.unpack_from(buf, pos)
            pos += 4
            partitions = []
            for _ in range(max(parts, 0)):
                partition, error, high, stable, start = _PART.unpack_from(buf, pos)
                pos += _PART.size
                (n,) = _INT.unpack_from(buf, pos)
                pos += 4
                aborted: list[tuple[int, int]] | None = None
                if n >= 0:
                    aborted = []
                    for _ in range(n):
                        aborted.append(_ABORTED.unpack_from(buf, pos))
                        pos += _ABORTED.size
                replica, size = _PART_TAIL.unpack_from(buf, pos)
                pos += _PART_TAIL.size
                records = None
                if size >= 0:
                    records = buf[pos : pos + size]
                    pos += size
                partitions.append(
                    (partition, error, high, stable, start, aborted, replica, records)
                )
            topics.append((topic, partitions))
        if isinstance(data, BytesIO):
            data.seek(pos)
        return cls(throttle, code, session, topics)


_PART_TAIL = struct.Struct(">ii")  # preferred read replica, records' length


class _SessionFetch(FetchRequest_v11):  # type: ignore[misc]
    RESPONSE_TYPE = SessionFetchResponse

    def encode(self) -> bytes:
        d = self.__dict__
        out = [
            _HEAD.pack(
                d["replica_id"],
                d["max_wait_time"],
                d["min_bytes"],
                d["max_bytes"],
                d["isolation_level"],
                d["session_id"],
                d["session_epoch"],
            ),
            _INT.pack(len(d["topics"])),
        ]
        for topic, partitions in d["topics"]:
            out += _string(topic)
            out.append(_INT.pack(len(partitions)))
            out += [_WANT.pack(*p) for p in partitions]
        out.append(_INT.pack(len(d["forgotten_topics_data"])))
        for topic, partitions in d["forgotten_topics_data"]:
            out += _string(topic)
            out.append(_INT.pack(len(partitions)))
            out += [_INT.pack(p) for p in partitions]
        out += _string(d["rack_id"])
        return b"".join(out)


class _SessionFetchRequest(Request[FetchRequest_v11]):  # type: ignore[misc]
    API_KEY = 1

    def __init__(self, fields: list[Any]) -> None:
        self._fields = fields

    def build(self, request_struct_class: type[FetchRequest_v11]) -> FetchRequest_v11:
        return _SessionFetch(*self._fields)


class FetchSession:
    """One broker's incremental fetch session (module docstring)."""

    def __init__(self) -> None:
        self.id = 0  # 0: none yet (the next request is full and asks for one)
        self.epoch = 0
        self.cached: dict[TopicPartition, int] = {}  # the fetch offsets the broker holds

    def reset(self) -> None:
        self.id, self.epoch, self.cached = 0, 0, {}

    def request(
        self,
        positions: dict[TopicPartition, int],
        max_wait_ms: int,
        min_bytes: int,
        partition_bytes: int,
        response_bytes: int,
    ) -> Any:
        """The Fetch for `positions` (every partition wanted from this broker now): on a new
        session all of them, else the new and moved ones, and the dropped ones forgotten."""
        cached = self.cached
        full = self.id == 0
        topics: dict[str, list[tuple[int, int, int, int, int]]] = {}
        for tp, offset in positions.items():
            if full or cached.get(tp) != offset:
                partition = (tp.partition, -1, offset, -1, partition_bytes)  # epoch, start: unknown
                topics.setdefault(tp.topic, []).append(partition)
        forgotten: dict[str, list[int]] = {}
        if not full:
            for tp in cached:
                if tp not in positions:
                    forgotten.setdefault(tp.topic, []).append(tp.partition)
        self.cached = dict(positions)
        return _SessionFetchRequest(
            [
                -1,  # replica_id: a consumer
                max_wait_ms,
                min_bytes,
                response_bytes,
                READ_COMMITTED,
                self.id,
                self.epoch,
                list(topics.items()),
                list(forgotten.items()),
                "",  # rack_id
            ]
        )

    def answered(self, response: Any) -> bool:
        """Take a response's session id and move to the next epoch; False (and a new session
        next) when the broker refused the session."""
        if response.error_code:  # SESSION_ERRORS (or another error of the whole request)
            self.reset()
            return False
        if self.id == 0:
            self.id = response.session_id
            self.epoch = 1 if self.id else 0
            if not self.id:  # the broker keeps no session: full fetches again
                self.cached = {}
        else:
            self.epoch = 1 if self.epoch >= MAX_EPOCH else self.epoch + 1
        return True
