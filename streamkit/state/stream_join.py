"""JoinPartition: the state of one stream-stream join on one task's partition.

Both sides' on-time records are buffered in the join's table (an ordinary table: write-back
cache, SQLite, changelog, checkpoint, exactly-once), one row per record:

    (side, event time, seq, key bytes) → matched flag (1 byte), source offset (8), value bytes

where `seq` numbers the partition's records (restored as one past the largest stored) and
the value is encoded with its side's codec, so a buffered value reads back as the type a live
one has. A reserved row holds the watermark the rows reflect (checkpointed with them).

In memory: per side, key → its buffered (time, seq) in time order (to find the partners of a
new record by bisection), and one heap of records by the watermark that makes them final.
Both are rebuilt from the rows on load. Every boundary decision is `JoinSpec`'s
(`streamkit/joins.py`): late, partners, final; this module only applies them.
"""

from __future__ import annotations

import bisect
import heapq
import struct
from collections.abc import Callable
from typing import Any

from streamkit.eventtime import NO_WATERMARK
from streamkit.joins import LEFT, StreamJoin
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
        self.index: tuple[dict[bytes, list[tuple[int, int]]], ...] = ({}, {})
        self._final: list[
            tuple[int, int, int, int, bytes]
        ] = []  # (final after, side, ts, seq, key)
        self._seq = 0
        self.watermark = NO_WATERMARK

    @property
    def buffered(self) -> int:
        return len(self._final)

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
        bisect.insort(self.index[side].setdefault(key, []), (ts, seq))
        heapq.heappush(self._final, (self.spec.final_after(side, ts), side, ts, seq, key))

    def push(self, side: int, key: bytes, ts: int, value: Any, offset: int) -> None:
        """A record of `side` at event time `ts`: late, or joined with the buffered partners
        it matches (emitted now), then buffered until it is final."""
        spec, watermark, rows = self.spec, self.watermark, self.rows
        if spec.late(ts, watermark):
            self.late(side, ts, watermark)
            return
        other = 1 - side
        matched = False
        entries = self.index[other].get(key)
        if entries:
            lo, hi = spec.partners(side, ts)
            decode = self.codecs[other].decode
            mark = spec.keeps_unmatched(other)
            emit = self.emit
            i = bisect.bisect_left(entries, (lo, -1))
            while i < len(entries) and entries[i][0] <= hi:
                other_ts, other_seq = entries[i]
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
        is unmatched and its side keeps unmatched records."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        rows, spec, heap = self.rows, self.spec, self._final
        rows.set(WATERMARK_ROW, _WM.pack(watermark))
        while heap and heap[0][0] < watermark:
            _, side, ts, seq, key = heapq.heappop(heap)
            entries = self.index[side][key]
            del entries[bisect.bisect_left(entries, (ts, seq))]
            if not entries:
                del self.index[side][key]
            row = (side, ts, seq, key)
            if spec.keeps_unmatched(side):
                stored = rows.get(row)
                if not stored[0]:
                    value = self.codecs[side].decode(stored[_HEAD.size :])
                    self._unmatched(side, key, ts, value, _HEAD.unpack_from(stored)[1])
            rows.delete(row)
