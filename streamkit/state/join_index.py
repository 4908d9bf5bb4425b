"""JoinIndex: which records a stream-stream join buffers, in memory, per side and key.

Per side (0 left, 1 right): key bytes → that key's buffered (event time, seq) pairs in time
order (two packed arrays, 16 bytes a record, searched by bisection), and a heap of keys by
the watermark after which their earliest record is final (`final_after[side]` after its
time), one entry per key and earliest time (an older one is skipped when popped). A purge
takes each key's final prefix at once. The records' rows (their values, the matched flags)
are the join table's (`stream_join.py`); this index names them by their row keys:

    side (1 byte), event time (8), seq (8) (big-endian, signed), then the key's bytes

This class is the reference; `_joinindex.c` is the same index in C, used when built and not
turned off (STREAMKIT_PURE_PYTHON=1): same methods, same answers, same order
(`tests/test_join_index.py`).
"""

from __future__ import annotations

import bisect
import heapq
import os
import struct
from array import array
from typing import Any, Protocol

_ROW = struct.Struct(">Bqq")  # side, event time, seq; then the key's bytes


class Buffered:
    """One key's buffered records of one side, in (time, seq) order."""

    __slots__ = ("seqs", "times")

    def __init__(self) -> None:
        self.times = array("q")
        self.seqs = array("q")


class JoinIndex:
    def __init__(self, final_after_left: int, final_after_right: int) -> None:
        self._after = (final_after_left, final_after_right)
        self._keys: tuple[dict[bytes, Buffered], dict[bytes, Buffered]] = ({}, {})
        self._heap: tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]] = ([], [])

    def add(self, side: int, key: bytes, ts: int, seq: int) -> None:
        """Buffer a record (after any of an equal time: seqs only grow)."""
        keys = self._keys[side]
        buffered = keys.get(key)
        if buffered is None:
            buffered = keys[key] = Buffered()
        at = bisect.bisect_right(buffered.times, ts)
        buffered.times.insert(at, ts)
        buffered.seqs.insert(at, seq)
        if at == 0:  # the key's new earliest record
            heapq.heappush(self._heap[side], (ts + self._after[side], key))

    def between(self, side: int, key: bytes, lo: int, hi: int) -> list[tuple[int, bytes]] | None:
        """(time, row key) of the side's records of `key` with lo <= time <= hi, in order;
        None if there are none."""
        buffered = self._keys[side].get(key)
        if buffered is None:
            return None
        times = buffered.times
        i = bisect.bisect_left(times, lo)
        end = bisect.bisect_right(times, hi, i)
        if end <= i:
            return None
        pack, seqs = _ROW.pack, buffered.seqs
        return [(times[j], pack(side, times[j], seqs[j]) + key) for j in range(i, end)]

    def purge(self, side: int, watermark: int, forget: tuple[dict[bytes, Any], ...]) -> list[bytes]:
        """The row keys of every record of the side `watermark` made final (time +
        final_after < watermark), removed from the index, key by key in heap order, oldest
        first; each also popped from the dicts of `forget`."""
        heap, keys, after = self._heap[side], self._keys[side], self._after[side]
        pack = _ROW.pack
        rows: list[bytes] = []
        while heap and heap[0][0] < watermark:
            _, key = heapq.heappop(heap)
            buffered = keys.get(key)
            if buffered is None:
                continue  # an older entry of a key purged whole meanwhile
            times, seqs = buffered.times, buffered.seqs
            n = bisect.bisect_left(times, watermark - after)
            if n == 0:
                continue  # an older entry: the key's earliest record has an entry of its own
            for ts, seq in zip(times[:n], seqs[:n], strict=True):
                row = pack(side, ts, seq) + key
                rows.append(row)
                for rows_of in forget:
                    rows_of.pop(row, None)
            del times[:n]
            del seqs[:n]
            if times:
                heapq.heappush(heap, (times[0] + after, key))
            else:
                del keys[key]
        return rows


class Index(Protocol):
    """What `JoinIndex` and its C twin both are."""

    def add(self, side: int, key: bytes, ts: int, seq: int) -> None: ...
    def between(
        self, side: int, key: bytes, lo: int, hi: int
    ) -> list[tuple[int, bytes]] | None: ...
    def purge(
        self, side: int, watermark: int, forget: tuple[dict[bytes, Any], ...]
    ) -> list[bytes]: ...


class PushRecord(Protocol):
    """`JoinPartition.push`: a record of a side enters the join."""

    def __call__(
        self, side: int, key: bytes, ts: int, value: Any, offset: int, raw: bytes | None = None, /
    ) -> None: ...


try:
    from streamkit.state._joinindex import JoinIndex as _NativeJoinIndex
    from streamkit.state._joinindex import JoinPush as _NativeJoinPush

    # built, and not turned off
    NATIVE = os.environ.get("STREAMKIT_PURE_PYTHON", "") in ("", "0")
except ImportError:  # pragma: no cover (no C compiler where it was installed)
    NATIVE = False


def new_index(final_after_left: int, final_after_right: int) -> Index:
    """The join index: the C one when built and not turned off, else the reference."""
    if NATIVE:
        return _NativeJoinIndex(final_after_left, final_after_right)
    return JoinIndex(final_after_left, final_after_right)


def native_push(part: Any) -> PushRecord | None:
    """`part.push` in C (`_joinpush.c`) when its index is the C one, else None (its Python
    method, the reference, runs)."""
    if NATIVE and isinstance(part.index, _NativeJoinIndex):
        return _NativeJoinPush(part)
    return None
