"""JoinPartition: the state of one stream-stream join on one task's partition.

Both sides' on-time records are buffered in the join's table (an ordinary table: write-back
cache, SQLite, changelog, checkpoint, exactly-once), one row per record:

    (side, event time, seq, key bytes) → matched flag (1 byte), source offset (8), value bytes

where `seq` numbers the partition's records (restored as one past the largest stored) and
the value is encoded with its side's codec, so a buffered value reads back as the type a live
one has. A reserved row holds the watermark the rows reflect (checkpointed with them).

In memory, 16 bytes a buffered record: per side, key → its buffered (time, seq) in time order,
two packed arrays (the partners of a new record are found by bisection); and per side a heap
of keys by the watermark that makes their earliest record final (purging takes a key's
final prefix at once). Both are rebuilt from the rows on load. Every boundary decision is
`JoinSpec`'s (`streamkit/joins.py`): late, partners, final; this module only applies them.
"""

from __future__ import annotations

import bisect
import heapq
import struct
from array import array
from collections.abc import Callable
from typing import Any

from streamkit.eventtime import NO_WATERMARK
from streamkit.joins import LEFT, RIGHT, StreamJoin
from streamkit.serde import Codec
from streamkit.state.table import _DELETED, _MISSING, Table, TablePartition

_ROW = struct.Struct(">Bqq")  # side, event time, seq; then the key's bytes
_HEAD = struct.Struct(">Bq")  # matched, source offset; then the value's bytes
_WM = struct.Struct(">q")
WATERMARK_ROW: tuple[int, int, int, bytes] = (255, 0, 0, b"")

Row = tuple[int, int, int, bytes]
# (key bytes, event time, left value, right value (None: unmatched), source offset of the
# record that made it); the joiner runs where the result is pushed on, not here
Emit = Callable[[bytes, int, Any, Any, int], None]
# (side, event time, watermark) of a late record
Late = Callable[[int, int, int], None]


class JoinRowCodec:
    """(side, event time, seq, key bytes) ↔ 17 bytes + the key's bytes."""

    name = "join-row"

    def encode(self, obj: Row) -> bytes:
        side, ts, seq, key = obj
        return _ROW.pack(side, ts, seq) + key

    def decode(self, data: bytes) -> Row:
        side, ts, seq = _ROW.unpack_from(data)
        return side, ts, seq, bytes(data[_ROW.size :])

    @property
    def loads(self) -> Callable[[bytes], Row]:
        return self.decode


JOIN_ROWS = JoinRowCodec()


def join_table(table: Table[Any, Any]) -> Table[Any, Any]:
    """Make `table` (bytes values) hold a join's rows. Its keys are those of the records the
    task is processing (they belong to its partition): no per-key check."""
    table.key_codec = JOIN_ROWS
    table.checked_keys = False
    return table


def _no_emit(key: bytes, ts: int, left: Any, right: Any, offset: int) -> None:
    raise RuntimeError("a join partition emitted before its output was bound")


class Buffered:
    """One key's buffered records of one side, in (time, seq) order: two packed arrays
    (16 bytes a record), searched by bisection."""

    __slots__ = ("seqs", "times")

    def __init__(self) -> None:
        self.times = array("q")
        self.seqs = array("q")

    def add(self, ts: int, seq: int) -> bool:
        """Insert (after any equal time: seqs only grow); True if it is the new earliest."""
        at = bisect.bisect_right(self.times, ts)
        self.times.insert(at, ts)
        self.seqs.insert(at, seq)
        return at == 0


class JoinPartition:
    def __init__(
        self,
        join: StreamJoin,
        rows: TablePartition,
        codecs: tuple[Codec[Any], Codec[Any]],
        late: Late,
        emit: Emit = _no_emit,
    ) -> None:
        self.join = join
        self.spec = join.spec
        self.rows = rows
        self.codecs = codecs
        self.late = late
        self.emit = emit  # bound by the task's compiled operators
        self.index: tuple[dict[bytes, Buffered], dict[bytes, Buffered]] = ({}, {})
        # per side, (the watermark after which the key's earliest record is final, key): one
        # entry per key and earliest time (older ones are skipped when popped)
        self._final: tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]] = ([], [])
        self._seq = 0
        self.watermark = NO_WATERMARK
        self.buffered = 0

    def load(self) -> int:
        """Rebuild the indexes from the stored rows; the watermark they reflect."""
        for row in self.rows.iter_keys():
            if row == WATERMARK_ROW:
                continue
            side, ts, seq, key = row
            self._track(side, ts, seq, key)
            self._seq = max(self._seq, seq + 1)
        saved = self.rows.get(WATERMARK_ROW)
        if saved is not _MISSING and saved is not _DELETED and saved is not None:
            self.watermark = _WM.unpack(saved)[0]
        return self.watermark

    def _track(self, side: int, ts: int, seq: int, key: bytes) -> None:
        buffered = self.index[side].get(key)
        if buffered is None:
            buffered = self.index[side][key] = Buffered()
        if buffered.add(ts, seq):
            heapq.heappush(self._final[side], (self.spec.final_after(side, ts), key))
        self.buffered += 1

    def push(self, side: int, key: bytes, ts: int, value: Any, offset: int) -> None:
        """A record of `side` at event time `ts`: late, or joined with the buffered partners
        it matches (emitted now), then buffered until it is final."""
        spec, watermark, rows = self.spec, self.watermark, self.rows
        if spec.late(ts, watermark):
            self.late(side, ts, watermark)
            return
        other = 1 - side
        matched = False
        buffered = self.index[other].get(key)
        if buffered is not None:
            lo, hi = spec.partners(side, ts)
            decode = self.codecs[other].decode
            mark = spec.keeps_unmatched(other)
            emit = self.emit
            times, seqs = buffered.times, buffered.seqs
            i = bisect.bisect_left(times, lo)
            while i < len(times) and times[i] <= hi:
                other_ts, other_seq = times[i], seqs[i]
                i += 1
                row = (other, other_ts, other_seq, key)
                stored = rows.get(row)
                partner = decode(stored[_HEAD.size :])
                if mark and not stored[0]:
                    rows.set(row, b"\x01" + stored[1:])
                if side == LEFT:
                    emit(key, max(ts, other_ts), value, partner, offset)
                else:
                    emit(key, max(ts, other_ts), partner, value, offset)
                matched = True
        if watermark > spec.final_after(side, ts):  # already final (a one-sided interval)
            if not matched and spec.keeps_unmatched(side):
                self._unmatched(side, key, ts, value, offset)
            return
        seq = self._seq
        self._seq = seq + 1
        head = _HEAD.pack(matched, offset)
        rows.set((side, ts, seq, key), head + self.codecs[side].encode(value))
        self._track(side, ts, seq, key)

    def _unmatched(self, side: int, key: bytes, ts: int, value: Any, offset: int) -> None:
        if side == LEFT:
            self.emit(key, ts, value, None, offset)
        else:
            self.emit(key, ts, None, value, offset)

    def advance(self, watermark: int) -> None:
        """The watermark moved: every record it made final is purged, and emitted first if it
        is unmatched and its side keeps unmatched records (per side, key by key, oldest first)."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        self.rows.set(WATERMARK_ROW, _WM.pack(watermark))
        for side in (LEFT, RIGHT):
            heap = self._final[side]
            while heap and heap[0][0] < watermark:
                _, key = heapq.heappop(heap)
                self._purge(side, key, watermark)

    def _purge(self, side: int, key: bytes, watermark: int) -> None:
        buffered = self.index[side].get(key)
        if buffered is None:
            return  # an older entry of a key purged whole meanwhile
        spec, rows = self.spec, self.rows
        times, seqs = buffered.times, buffered.seqs
        n = 0
        while n < len(times) and spec.final_after(side, times[n]) < watermark:
            n += 1
        if n == 0:
            return  # an older entry: the key's earliest record has an entry of its own
        keeps = spec.keeps_unmatched(side)
        for ts, seq in zip(times[:n], seqs[:n], strict=True):
            row = (side, ts, seq, key)
            if keeps:
                stored = rows.get(row)
                if not stored[0]:
                    value = self.codecs[side].decode(stored[_HEAD.size :])
                    self._unmatched(side, key, ts, value, _HEAD.unpack_from(stored)[1])
            rows.delete(row)
        del times[:n]
        del seqs[:n]
        self.buffered -= n
        if times:
            heapq.heappush(self._final[side], (spec.final_after(side, times[0]), key))
        else:
            del self.index[side][key]
