"""The bookkeeping of key-ordered async calls, as plain data structures (no I/O, no asyncio).

- `Frontier`: per input partition, which offset may be committed while some events are still
  waiting for their calls: the offset of the first unfinished event, or the offset after the
  last event taken when none is unfinished. An offset so never passes an event that has not
  finished, whatever order the calls finish in.
- `KeyGate`: at most one call in flight per key, the others of that key waiting in offset
  order; events without a key (None) are not ordered among themselves.

`runtime/async_map.py` drives both; tests/test_async_map.py checks them against brute force.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

J = TypeVar("J")


class Slot:
    """One taken event that still has `pending` calls (or downstream work) to finish."""

    __slots__ = ("offset", "pending", "topic")

    def __init__(self, topic: str, offset: int, pending: int) -> None:
        self.topic = topic
        self.offset = offset
        self.pending = pending


class Frontier:
    """Committable offsets of the input partitions of one task."""

    def __init__(self) -> None:
        self._open: dict[str, deque[Slot]] = {}
        self._next: dict[str, int] = {}  # offset after the last event taken, per topic

    def taken(self, topic: str, offset: int, pending: int) -> Slot | None:
        """An event has been through its synchronous pass, leaving `pending` calls to finish
        (0: it is done). Events of a topic are taken in offset order."""
        self._next[topic] = offset + 1
        if not pending:
            return None
        slot = Slot(topic, offset, pending)
        self._open.setdefault(topic, deque()).append(slot)
        return slot

    def committable(self, topic: str) -> int | None:
        """The offset to commit for `topic`: the first unfinished event's, else the one after
        the last event taken (None before any is taken)."""
        slots = self._open.get(topic)
        while slots and not slots[0].pending:
            slots.popleft()
        if slots:
            return slots[0].offset
        return self._next.get(topic)

    @property
    def unfinished(self) -> int:
        return sum(1 for slots in self._open.values() for s in slots if s.pending)


class KeyGate(Generic[J]):
    """One call in flight per key; later calls of the key wait for it, in order."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, deque[J] | None] = {}  # key in flight → calls behind it

    def admit(self, key: Hashable, job: J) -> bool:
        """True: `job` may start now. False: it waits behind an earlier call of its key."""
        if key is None:
            return True
        if key not in self._waiting:
            self._waiting[key] = None
            return True
        queue = self._waiting[key]
        if queue is None:
            queue = self._waiting[key] = deque()
        queue.append(job)
        return False

    def release(self, key: Hashable) -> J | None:
        """The call of `key` in flight has finished: the next of that key to start, if any."""
        if key is None:
            return None
        queue = self._waiting.get(key)
        if queue:
            return queue.popleft()
        del self._waiting[key]
        return None

    @property
    def keys_in_flight(self) -> int:
        return len(self._waiting)
