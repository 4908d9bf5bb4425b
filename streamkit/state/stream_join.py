"""JoinPartition: the state of one stream-stream join on one task's partition.

Both sides' on-time records are buffered in the join's table (an ordinary table: write-back
cache, SQLite, changelog, checkpoint, exactly-once), one row per record:

    side (1 byte), event time (8), seq (8), key bytes → matched flag (1 byte), source offset (8),
                                                      value bytes

where `seq` numbers the partition's records (restored as one past the largest stored) and
the value is encoded with its side's codec, so a buffered value reads back as the type a live
one has. A row's key is packed once, when the record is buffered (the table's keys are these
bytes: nothing to encode at the checkpoint). A reserved row holds the watermark the rows
reflect (checkpointed with them): the marker of what is purged. A purge writes no tombstone:
the row is forgotten (index, cache, dirty keys), and every store write of the table (the
checkpoint's, a changelog replay's) deletes the key ranges its watermark row made final in
the same transaction (`final_rows`); the changelog drops old records by time retention
(`changelog_config`). Loading skips rows the stored watermark made final.

In memory, 16 bytes a buffered record: which records are buffered, per side and key in time
order, and when each key's earliest one is final (`join_index.py`, in C when built: the
partners of a new record are found by bisection, a purge takes a key's final prefix at
once), rebuilt from the rows on load. Every boundary decision is
`JoinSpec`'s (`streamkit/joins.py`): late, partners, final; this module only applies them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from streamkit.eventtime import NO_WATERMARK
from streamkit.joins import LEFT, RIGHT, JoinSpec, StreamJoin
from streamkit.serde import Codec
from streamkit.state.join_index import PushRecord, native_push, new_index
from streamkit.state.store import Purge
from streamkit.state.table import _DELETED, _MISSING, Table, TablePartition

_ROW = struct.Struct(">Bqq")  # side, event time, seq; then the key's bytes
_HEAD = struct.Struct(">Bq")  # matched, source offset; then the value's bytes
_WM = struct.Struct(">q")
_TIME = struct.Struct(">Bq")  # side, event time: the prefix of a row's key
_TIME_MIN, _TIME_MAX = -(2**63), 2**63 - 1
WATERMARK_ROW = _ROW.pack(255, 0, 0)  # the reserved row's key

# (key bytes, event time, left value, right value (None: unmatched), source offset of the
# record that made it); the joiner runs where the result is pushed on, not here
Emit = Callable[[bytes, int, Any, Any, int], None]
# (side, event time, watermark) of a late record
Late = Callable[[int, int, int], None]


def join_table(table: Table[Any, Any], join: StreamJoin) -> Table[Any, Any]:
    """Make `table` (bytes keys and values) hold `join`'s rows. Its keys are those of the
    records the task is processing (they belong to its partition): no per-key check. Its
    rows made final by the watermark row written with them are deleted with each store write
    (`final_rows`), and its changelog keeps a record for a time retention instead of
    getting a tombstone (`changelog_config`)."""
    table.checked_keys = False
    table.exact_bytes = True  # rows are packed and joined once: no copy at the checkpoint
    table.purge = final_rows(join.spec)
    table.changelog.config.update(changelog_config(join))
    return table


def changelog_config(join: StreamJoin) -> dict[str, str]:
    """The join changelog's topic config: compacted (the watermark row, a left/outer join's
    matched flags) and deleted by time, `retention.ms` = the window + grace + the join's
    `changelog_extra`. Its records carry the wall clock of their write (the producer's
    timestamp), not an event time: the broker deletes a row that long after it was written,
    whatever event times the input replays."""
    spec = join.spec
    retention = spec.upper_ms - spec.lower_ms + spec.grace_ms + join.changelog_extra_ms
    return {"cleanup.policy": "compact,delete", "retention.ms": str(retention)}


def final_ranges(spec: JoinSpec, watermark: int) -> list[tuple[bytes, bytes]]:
    """The key ranges `[lo, hi)` of the rows `watermark` has made final (rule 2 of
    `streamkit/joins.py`: a record of side s at t once the watermark passed
    `JoinSpec.final_after(s, t)`), i.e. per side the times `t < watermark - final_after(s, 0)`."""
    ranges = []
    for side in (LEFT, RIGHT):
        cut = watermark - spec.final_after(side, 0)
        if cut <= _TIME_MIN:
            continue
        lowest, highest = _TIME.pack(side, _TIME_MIN), bytes([side + 1])
        cut = min(cut, _TIME_MAX)
        if cut > 0:  # big-endian two's complement: times >= 0 sort before negative ones
            ranges += [(lowest, highest), (bytes([side]), _TIME.pack(side, cut))]
        elif cut == 0:
            ranges.append((lowest, highest))
        else:
            ranges.append((lowest, _TIME.pack(side, cut)))
    return ranges


def final_rows(spec: JoinSpec) -> Purge:
    """The store's purge rule of a join's table: the changes being written carry the
    watermark row (the marker of a checkpoint, or of a changelog replay's batch) → the rows
    it made final, deleted in the same transaction. Rows written after that watermark row
    are not final by it (they were buffered at a watermark at least as new, and only while
    not final), so a replay's batch may hold both."""

    def ranges(rows: Mapping[bytes, bytes | None]) -> list[tuple[bytes, bytes]]:
        raw = rows.get(WATERMARK_ROW)
        return [] if raw is None else final_ranges(spec, _WM.unpack(raw)[0])

    return ranges


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
        self.spec = spec = join.spec
        self.rows = rows
        self.codecs = codecs
        self.late = late
        self.emit = emit  # bound by the task's compiled operators
        self._seq = 0
        self.watermark = NO_WATERMARK
        self.newest_final = NO_WATERMARK  # the latest final time of a row buffered so far
        self.marker = WATERMARK_ROW  # (`state/deferred.py`)
        self.buffered = 0
        # the spec's bounds per side, asked once (they only shift with the time): a record of
        # side s at t has its partners in [t + _lo[s], t + _hi[s]] and is final once the
        # watermark passed t + _final_after[s]
        (lo_l, hi_l), (lo_r, hi_r) = spec.partners(LEFT, 0), spec.partners(RIGHT, 0)
        self._lo, self._hi = (lo_l, lo_r), (hi_l, hi_r)
        self._final_after = (spec.final_after(LEFT, 0), spec.final_after(RIGHT, 0))
        self.index = new_index(*self._final_after)  # what is buffered (`join_index.py`)
        self._keeps = (spec.keeps_unmatched(LEFT), spec.keeps_unmatched(RIGHT))
        self._grace = spec.grace_ms  # rule 1: late once the watermark passed t + grace
        # a record enters the join: `_push`, or the same in C with the C index (`_joinpush.c`)
        self.push: PushRecord = native_push(self) or self._push

    def load(self) -> int:
        """Rebuild the indexes from the stored rows of a partition just opened; the watermark
        they reflect. Each live row is cached too, as its store read brought it (the cache's
        bound evicting the oldest): a partition restored from its changelog would otherwise
        read its rows back one SQLite query at a time as its first records match them."""
        rows = self.rows
        saved = rows.get(WATERMARK_ROW)
        if saved is not _MISSING and saved is not _DELETED and saved is not None:
            self.watermark = _WM.unpack(saved)[0]
        unpack, size, watermark, after = (
            _ROW.unpack_from,
            _ROW.size,
            self.watermark,
            self._final_after,
        )
        assert not rows.dirty and not rows.flushing, "load() reads a partition just opened"
        for row, stored in rows.stored_items():
            if row == WATERMARK_ROW:
                continue
            side, ts, seq = unpack(row)
            self._seq = max(self._seq, seq + 1)
            if watermark > ts + after[side]:
                continue  # final by the watermark row: purged (and emitted) before it was written
            self._track(side, ts, seq, bytes(row[size:]))
            rows.keep(row, stored)
        return self.watermark

    def _track(self, side: int, ts: int, seq: int, key: bytes) -> None:
        self.index.add(side, key, ts, seq)
        final_after = ts + self._final_after[side]
        if final_after > self.newest_final:
            self.newest_final = final_after
        self.buffered += 1

    def _push(
        self, side: int, key: bytes, ts: int, value: Any, offset: int, raw: bytes | None = None
    ) -> None:
        """A record of `side` at event time `ts`: late, or joined with the buffered partners
        it matches (emitted now), then buffered until it is final. `raw`: the value's bytes
        in its side's codec when the caller has them (the input record's, passed unchanged),
        else the value is encoded."""
        watermark, rows = self.watermark, self.rows
        if watermark > ts + self._grace:  # rule 1 (`JoinSpec.late`), inline
            self.late(side, ts, watermark)
            return
        other = 1 - side
        matched = False
        found = self.index.between(other, key, ts + self._lo[side], ts + self._hi[side])
        if found is not None:
            get, cached = rows.get, rows.cache.get
            decode = self.codecs[other].decode
            mark, emit = self._keeps[other], self.emit
            for other_ts, row in found:
                stored = cached(row) or get(row)  # a buffered row: bytes, never deleted
                partner = decode(stored[_HEAD.size :])
                if mark and not stored[0]:
                    rows.set(row, b"\x01" + stored[1:])
                if side == LEFT:
                    emit(key, ts if ts > other_ts else other_ts, value, partner, offset)
                else:
                    emit(key, ts if ts > other_ts else other_ts, partner, value, offset)
            matched = True
        final_after = ts + self._final_after[side]
        if watermark > final_after:  # already final (a one-sided interval)
            if not matched and self._keeps[side]:
                self._unmatched(side, key, ts, value, offset)
            return
        seq = self._seq
        self._seq = seq + 1
        rows.set(
            _ROW.pack(side, ts, seq) + key,
            _HEAD.pack(matched, offset) + (self.codecs[side].encode(value) if raw is None else raw),
        )
        self.index.add(side, key, ts, seq)  # (`_track`, inline: once per record)
        if final_after > self.newest_final:
            self.newest_final = final_after
        self.buffered += 1

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
        rows = self.rows  # the marker (`final_rows`): set as `TablePartition.set` would
        if WATERMARK_ROW in rows.cache:
            rows.cache[WATERMARK_ROW] = rows.dirty[WATERMARK_ROW] = _WM.pack(watermark)
        else:
            rows.set(WATERMARK_ROW, _WM.pack(watermark))
        for side in (LEFT, RIGHT):
            # forgotten, not deleted: no tombstone; the store deletes a final row with the
            # watermark row that made it final (`final_rows`), the changelog by its time
            # retention; a row the store was not written yet is never written
            # (`TaskTables.write`)
            forget = (rows.cache, rows.dirty, rows.flushing)
            if self._keeps[side]:  # an unmatched record is emitted first
                final = self.index.purge(side, watermark, ())
                self._unmatched_final(side, final)
                for row in final:
                    for rows_of in forget:
                        rows_of.pop(row, None)
            else:
                final = self.index.purge(side, watermark, forget)
            self.buffered -= len(final)

    def _unmatched_final(self, side: int, final: list[bytes]) -> None:
        """Emit the unmatched records among the final rows of a side that keeps them."""
        rows, decode, size = self.rows, self.codecs[side].decode, _ROW.size
        for row in final:
            stored = rows.get(row)
            if not stored[0]:
                _, ts, _ = _ROW.unpack_from(row)
                offset = _HEAD.unpack_from(stored)[1]
                self._unmatched(side, row[size:], ts, decode(stored[_HEAD.size :]), offset)
