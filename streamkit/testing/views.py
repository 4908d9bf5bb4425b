"""What a test reads back from the driver: output records, tables, window tables, timers.

Views read the tasks' own state (the write-back cache over each partition's SQLite store),
across every partition of the stage that owns the table; they never change it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka.structs import ConsumerRecord

from streamkit.eventtime import NO_WATERMARK
from streamkit.runtime.dlq import describe
from streamkit.serde import Codec, DecodeError
from streamkit.state.table import TablePartition
from streamkit.state.ttl import visible
from streamkit.state.versioned_table import VersionedTable
from streamkit.state.window_table import WATERMARK_ROW, Windows
from streamkit.topics import Topic
from streamkit.versions import TOMBSTONE

_ABSENT: Any = object()
RESERVED_BELOW = NO_WATERMARK + 2  # window rows starting lower are bookkeeping, not windows


@dataclass(frozen=True, slots=True)
class Output:
    """One record of a topic, decoded with the topic's codecs (DLQ and late topics keep
    bytes, and so does a key or value that does not decode). `timestamp_ms` is the record
    timestamp; `raw_key`/`raw_value` the bytes."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...]
    raw_key: bytes | None
    raw_value: bytes | None

    @property
    def timestamp(self) -> float:
        """The record timestamp in epoch seconds."""
        return self.timestamp_ms / 1000.0

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def error(self) -> dict[str, str]:
        """A dead letter's or late event's `streamkit.*` headers as text (`streamkit.error`,
        `streamkit.error.type`, `streamkit.source.topic`...); empty for other records."""
        return describe(self.headers)

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes], topic: Topic | None) -> Output:
        key: Any = record.key
        value: Any = record.value
        if topic is not None:
            key = _decoded(topic.key_codec, key)
            value = _decoded(topic.value_codec, value)
        return cls(
            record.topic,
            record.partition,
            record.offset,
            key,
            value,
            record.timestamp,
            tuple(record.headers),
            record.key,
            record.value,
        )


def _decoded(codec: Codec[Any], raw: bytes | None) -> Any:
    """Decoded, or the bytes themselves when they do not decode (bad input sent on purpose)."""
    if raw is None:
        return None
    try:
        return codec.decode(raw)
    except (DecodeError, ValueError):
        return raw


class TableView:
    """A table across all its partitions: `view[key]` (KeyError when absent, no default),
    `get`, `in`, `keys()`, `items()`, `to_dict()`, `partition_of(key)`."""

    def __init__(self, name: str, parts: dict[int, TablePartition]) -> None:
        self.name = name
        self._parts = parts

    def __repr__(self) -> str:
        return f"TableView({self.name!r}, {self.to_dict()!r})"

    def partition_of(self, key: Any) -> int | None:
        """The partition whose task holds `key` (None: no partition has it)."""
        for partition, part in sorted(self._parts.items()):
            if part.get(key, _ABSENT) is not _ABSENT:
                return partition
        return None

    def get(self, key: Any, default: Any = None) -> Any:
        for _, part in sorted(self._parts.items()):
            value = part.get(key, _ABSENT)
            if value is not _ABSENT:
                live, value = visible(part, value)  # a table with a TTL: unstamped, live
                if live:
                    return value
        return default

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, _ABSENT) is not _ABSENT

    def keys(self) -> list[Any]:
        return [
            key
            for _, part in sorted(self._parts.items())
            for key in part.iter_keys()
            if visible(part, part.get(key))[0]
        ]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def items(self) -> list[tuple[Any, Any]]:
        found = []
        for _, part in sorted(self._parts.items()):
            for key in part.iter_keys():
                live, value = visible(part, part.get(key))
                if live:
                    found.append((key, value))
        return found

    def to_dict(self) -> dict[Any, Any]:
        return dict(self.items())


class WindowView:
    """A window table's open windows across its partitions. `get(key, start_ms)` is the
    accumulator of one open window (None once closed and purged); `rows()` every stored row
    as `{(start_ms, key): stored}` (sessions store `[end, acc]`)."""

    def __init__(
        self, name: str, windows: dict[int, Windows], rows: dict[int, TablePartition]
    ) -> None:
        self.name = name
        self._windows = windows
        self._rows = rows

    def get(self, key: Any, start_ms: int) -> Any:
        for _, part in sorted(self._windows.items()):
            value = part.get(key, start_ms)
            if value is not None:
                return value
        return None

    def rows(self) -> dict[tuple[int, Any], Any]:
        found = {}
        for _, part in sorted(self._rows.items()):
            for row in part.iter_keys():
                if row != WATERMARK_ROW and row[0] >= RESERVED_BELOW:
                    found[row] = part.get(row)
        return found


def pending_timers(parts: dict[int, TablePartition]) -> list[tuple[int, str, Any, Any]]:
    """A timer set's pending timers: `(fire ms, "event"|"processing", key, payload)`, sorted."""
    kinds = {"e": "event", "p": "processing"}
    found = []
    for _, part in sorted(parts.items()):
        for row in part.iter_keys():
            if row == WATERMARK_ROW:
                continue
            fire, (kind, key) = row
            found.append((fire, kinds.get(kind, kind), key, part.get(row)["payload"]))
    return sorted(found, key=lambda t: (t[0], t[1], repr(t[2])))


class VersionedView:
    """A versioned table across its partitions: `as_of(key, t_ms)`, `get(key)` (the latest),
    `history(key)` (every kept version, a delete as None)."""

    def __init__(self, table: VersionedTable[Any, Any], parts: dict[int, TablePartition]) -> None:
        self.name = table.name
        self._table = table
        self._parts = [table.partition(p) for _, p in sorted(parts.items())]
        self._encode = table.key_codec.encode

    def __repr__(self) -> str:
        return f"VersionedView({self.name!r})"

    def as_of(self, key: Any, t_ms: int, default: Any = None) -> Any:
        encoded = self._encode(key)
        for part in self._parts:
            if encoded in part.index:
                found, value = part.as_of(encoded, int(t_ms))
                return value if found else default
        return default

    def get(self, key: Any, default: Any = None) -> Any:
        encoded = self._encode(key)
        for part in self._parts:
            found, value = part.latest(encoded)
            if found:
                return value
        return default

    def history(self, key: Any) -> list[tuple[int, Any]]:
        encoded = self._encode(key)
        for part in self._parts:
            if encoded in part.index:
                return [(ts, None if v is TOMBSTONE else v) for ts, v in part.index[encoded]]
        return []
