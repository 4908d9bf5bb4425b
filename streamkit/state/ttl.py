"""State TTL: a table's keys expire a while after their last write, and are purged.

`app.table("seen", default=int, ttl=3600)` keeps each key one hour after its last write, in
event time (`ttl_time="event"`, the default: the time of the event that wrote it, against the
task's watermark) or in processing time (`ttl_time="processing"`: the wall clock). A write is
`t[k] = v` (so `t[k] += 1`), the `default=` stored on first read, and a read of a value that
can change in place (it is written back, as any such read is).

- Each stored value carries its write time: the table's value codec is wrapped in
  `StampedCodec` (8 bytes, big-endian ms, then the value as the table encodes it), so the
  changelog and SQLite hold the stamp too and a restore brings it back.
- An expired key reads as absent at once (`in`, `get`, `[]`, iteration), whether or not it
  was purged yet.
- `Expiry` (one per table partition) keeps a heap of (expiry, key), one entry per key, built
  from the store when the partition opens; a write queues a key not queued yet, and the purge
  queues a key again at its newer expiry when it finds it written since. Expired keys are
  deleted when the watermark moves (event time) and at each checkpoint (both kinds), before
  the checkpoint takes the dirty keys: the deletion is a tombstone in the changelog,
  committed with that checkpoint, so a restore (from SQLite or from the changelog alone) does
  not bring them back.
- After a restart, event-time expiry waits for the watermark to move again (a table alone
  stores no watermark); processing-time expiry goes on at once.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from streamkit.context import CURRENT_TASK, WALL_CLOCK
from streamkit.eventtime import NO_WATERMARK
from streamkit.serde import Codec
from streamkit.settings import ConfigError
from streamkit.windows import seconds_ms


class Rows(Protocol):
    """What expiry needs of a table partition (`state/table.py`'s Rows, which
    imports this module)."""

    name: str
    table: Any
    store: Any
    expiry: Expiry | None

    def peek(self, key: Any) -> tuple[bool, Any]: ...

    def delete(self, key: Any) -> bool: ...


_STAMP = struct.Struct(">q")
TTL_TIMES = ("event", "processing")


@dataclass(frozen=True)
class Ttl:
    ms: int
    event_time: bool

    def __str__(self) -> str:
        return f"ttl {self.ms / 1000:g}s ({'event' if self.event_time else 'processing'} time)"


def ttl_of(table: str, ttl: float | None, ttl_time: str, source: bool) -> Ttl | None:
    """The TTL declared with `app.table(..., ttl=, ttl_time=)`, or ConfigError."""
    if ttl is None:
        return None
    ms = seconds_ms(ttl, f"table {table}: ttl")
    if ttl_time not in TTL_TIMES:
        raise ConfigError(
            f"table {table}: ttl_time must be 'event' or 'processing', got {ttl_time!r}"
        )
    if source:
        raise ConfigError(
            f"table {table} reads a topic (source=): its keys live as long as the topic's; a "
            "ttl is for tables the app writes (or give the topic a retention)"
        )
    return Ttl(ms, ttl_time == "event")


class StampedCodec:
    """`[write ms, value]` ↔ 8-byte big-endian ms + the value as `inner` encodes it."""

    def __init__(self, inner: Codec[Any]) -> None:
        self.inner = inner
        self.name = f"stamped-{inner.name}"

    def encode(self, obj: list[Any]) -> bytes:
        return _STAMP.pack(obj[0]) + self.inner.encode(obj[1])

    def decode(self, data: bytes) -> list[Any]:
        (stamp,) = _STAMP.unpack_from(data)
        return [stamp, self.inner.decode(data[8:])]

    @property
    def loads(self) -> Callable[[bytes], list[Any]]:
        return self.decode


class Expiry:
    """The keys of one table partition by expiry time, and their purge."""

    def __init__(self, ttl: Ttl, part: Rows) -> None:
        self.ttl = ttl
        self.part = part
        self.heap: list[tuple[int, int, Any]] = []  # (expires at, seq, key)
        self.queued: dict[Any, int] = {}  # key → the expiry of its heap entry
        self._seq = 0
        self.watermark = NO_WATERMARK
        self._wall = WALL_CLOCK.get()  # the system clock, or the testing kit's
        self.purged = 0

    def stamp(self) -> int:
        """The write time of a write now: the event's time (event time; the watermark
        outside an event, as in a timer callback), or the wall clock."""
        if not self.ttl.event_time:
            return int(self._wall.time() * 1000)
        scope = CURRENT_TASK.get(None)
        if scope is not None:
            try:
                return scope.event_time()
            except RuntimeError:  # no event being processed
                pass
        return self.watermark

    def now(self) -> int:
        if self.ttl.event_time:
            return self.watermark
        return int(self._wall.time() * 1000)

    def expired(self, stamp: int) -> bool:
        return stamp + self.ttl.ms <= self.now()

    def track(self, key: Any, stamp: int) -> None:
        """`key` was written at `stamp`. One heap entry per key: a later write leaves the
        entry where it is (the purge finds the newer stamp and queues the key again), an
        earlier one (an out-of-order event) queues it sooner."""
        expires = stamp + self.ttl.ms
        queued = self.queued.get(key)
        if queued is None or expires < queued:
            self.queued[key] = expires
            self._seq += 1
            heapq.heappush(self.heap, (expires, self._seq, key))

    def load(self) -> int:
        """Index the stored keys (the partition just opened); no watermark of its own."""
        part = self.part
        decode_key, decode_value = part.table.key_codec.decode, part.table.value_codec.decode
        for raw_key, raw_value in part.store.scan(part.name):
            self.track(decode_key(raw_key), decode_value(raw_value)[0])
        return NO_WATERMARK

    def advance(self, watermark: int) -> None:
        """The task's watermark moved (event-time TTL): purge what it expired."""
        self.watermark = max(self.watermark, watermark)
        self.purge()

    def purge(self) -> int:
        """Delete every expired key (a tombstone at the next checkpoint); how many."""
        heap, queued, part, now, n = self.heap, self.queued, self.part, self.now(), 0
        while heap and heap[0][0] <= now:
            expires, _, key = heapq.heappop(heap)
            if queued.get(key) != expires:
                continue  # superseded by an earlier entry of the key
            del queued[key]
            found, stored = part.peek(key)
            if not found:
                continue  # deleted meanwhile
            if stored[0] + self.ttl.ms <= now:
                part.delete(key)
                n += 1
            else:  # written again since: queued at its new expiry
                self.track(key, stored[0])
        self.purged += n
        return n


def visible(part: Rows, value: Any) -> tuple[bool, Any]:
    """A stored value as a reader outside the task sees it (a query, the testing kit): the
    value itself, unstamped; `(False, None)` once expired."""
    expiry = part.expiry
    if expiry is None:
        return True, value
    if expiry.expired(value[0]):
        return False, None
    return True, value[1]
