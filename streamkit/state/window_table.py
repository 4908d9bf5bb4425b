"""WindowTable: windowed aggregations per key over event time, stored like any table.

`app.window("clicks", sk.tumbling(60), sk.count(), emit="final", output=topic)` declares one;
agent code calls `clicks.add(key, value)` for the event being processed. Each (window, key)
accumulator is a row of an ordinary table (write-back cache, SQLite, changelog, checkpoint,
exactly-once), keyed by the window start (8 bytes, big-endian, so SQLite orders windows by
time) followed by the encoded key.

A window closes when the task's watermark reaches its end plus the allowed lateness: with
`emit="final"` its result is written to the output topic then, once; with `emit="update"` every
change is written as it happens. Either way the closed window's row goes. A tumbling, hopping
or sliding window's row is forgotten with no tombstone: every store write deletes the rows its
watermark row closed, in the same transaction (`closed_rows`), loading skips them, and the
changelog drops old records by time retention (`changelog_config`), as a stream-stream join's
does. Sessions and count windows (and a window keyed before 1970) write a tombstone.

An event whose windows are all closed is late: it goes to the late topic
(`{app_id}-{agent}-late` unless named) with the reason and its source coordinates, and is
counted; it is never dropped silently.

The watermark the windows saw is stored in the same table (a reserved row), so it is
checkpointed and restored with the windows it closed.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from streamkit.aggregations import Several
from streamkit.context import CURRENT_TASK
from streamkit.count_windows import SlidingCount, TumblingCount
from streamkit.eventtime import NO_WATERMARK
from streamkit.joins import DAY_MS
from streamkit.serde import JSON, Codec, codec_for, dumps
from streamkit.settings import ConfigError
from streamkit.state.ownership import check_key, scope_for
from streamkit.state.store import Purge
from streamkit.state.table import _DELETED, _MISSING, Table, TablePartition
from streamkit.topics import Topic
from streamkit.windows import Aggregation, Session, Sliding, WindowKind

if TYPE_CHECKING:
    from streamkit.context import TaskScope

_START = struct.Struct(">q")
WATERMARK_ROW: tuple[int, Any] = (NO_WATERMARK, None)  # the reserved row: the watermark
_WATERMARK_KEY = _START.pack(NO_WATERMARK)  # its key's bytes
_START_MAX = 2**63 - 1


# (key, window start, window end, accumulator, final, the key's bytes or None)
Emit = Callable[[Any, int, int, Any, bool, bytes | None], None]


def _no_output(
    key: Any, start: int, end: int, acc: Any, final: bool, encoded: bytes | None
) -> None:
    """A window table with no output topic emits nothing."""


def stored_watermark(rows: TablePartition) -> int:
    """The watermark a window table's (or timer set's) stored rows reflect."""
    saved = rows.get(WATERMARK_ROW)
    if saved is _MISSING or saved is _DELETED or saved is None:
        return NO_WATERMARK
    return int(saved)


def closed_rows(table: Table[Any, Any], hold_ms: int) -> Purge:
    """The store's purge rule of a tumbling, hopping or sliding window table: the changes being
    written carry the watermark row (every checkpoint that moved it, every changelog replay's
    batch that holds it) → the key range of the rows it closed (time + `hold_ms` <= watermark,
    the time a row is keyed by: `closed_hold`), deleted in the same transaction. The range is
    absolute, so it also takes rows written by an earlier write. Times >= 0 only: big-endian
    two's complement sorts a negative time after every other, and those rows get a tombstone
    instead (so do a sliding window's rows of recent events, under a reserved negative time).
    A row written after that watermark row in a replay's batch is not closed by it (the
    windows it reached were open then, and the watermark has not moved since)."""
    low = _START.pack(0)

    def ranges(rows: Mapping[bytes, bytes | None]) -> list[tuple[bytes, bytes]]:
        raw = rows.get(_WATERMARK_KEY)
        if raw is None:
            return []
        below = int(table.value_codec.decode(raw)) - hold_ms + 1  # closed: time < below
        return [(low, _START.pack(min(below, _START_MAX)))] if below > 0 else []

    return ranges


def changelog_config(kind: WindowKind, allowed_lateness_ms: int, extra_ms: int) -> dict[str, str]:
    """A tumbling, hopping or sliding window changelog's topic config: compacted (a row's newest
    accumulator, the watermark row) and deleted by time, `retention.ms` = the window +
    allowed lateness + `changelog_extra`. Its records carry the wall clock of their write: the
    broker deletes a row that long after its last update, whatever event times the input
    replays."""
    retention = kind.size_ms + allowed_lateness_ms + extra_ms
    return {"cleanup.policy": "compact,delete", "retention.ms": str(retention)}


def forgets_closed(kind: WindowKind | Any) -> bool:
    """Whether a window kind's closed rows go with no tombstone (tumbling, hopping, sliding):
    those a watermark closes in order of their row's time."""
    return not isinstance(kind, TumblingCount | SlidingCount | Session)


def closed_hold(kind: WindowKind, allowed_lateness_ms: int) -> int:
    """A row is closed once the watermark reaches its time plus this: a sliding window's row
    is keyed by its end, a tumbling or hopping one's by its start."""
    if isinstance(kind, Sliding):
        return allowed_lateness_ms
    return kind.size_ms + allowed_lateness_ms


class WindowKeyCodec:
    """(window start, key) ↔ 8-byte big-endian start + the key's bytes."""

    name = "window-key"

    def __init__(self, key_codec: Codec[Any]) -> None:
        self._key = key_codec

    def encode(self, obj: tuple[int, Any]) -> bytes:
        start, key = obj
        if key is None:
            return _START.pack(start)
        return _START.pack(start) + self._key.encode(key)

    def decode(self, data: bytes) -> tuple[int, Any]:
        (start,) = _START.unpack_from(data)
        if len(data) == 8:
            return start, None
        return start, self._key.decode(data[8:])

    @property
    def loads(self) -> Callable[[bytes], tuple[int, Any]]:
        return self.decode


class WindowTable:
    """Windowed aggregations per key. Use `add` from the agent that owns it."""

    def __init__(
        self,
        name: str,
        kind: WindowKind,
        aggregation: Aggregation,
        table: Table[Any, Any],
        *,
        emit: str,
        allowed_lateness_ms: int,
        output: Topic | None,
        late_topic: str | None,
        key_type: Any,
        changelog_extra_ms: int = DAY_MS,
    ) -> None:
        if emit not in ("final", "update"):
            raise ConfigError(f"window {name}: emit must be 'final' or 'update', got {emit!r}")
        if allowed_lateness_ms < 0:
            raise ConfigError(f"window {name}: allowed_lateness must be >= 0 seconds")
        self.name = name
        self.kind = kind
        self.aggregation = aggregation
        self.table = table
        self.emit_mode = emit
        self.allowed_lateness_ms = allowed_lateness_ms
        self.output = output
        self.late_topic = late_topic  # set when the owning agent is known, if not named
        # count windows close with their last event: nothing is ever late for them
        self.has_late = not isinstance(kind, TumblingCount | SlidingCount)
        if late_topic is not None and not self.has_late:
            raise ConfigError(
                f"window {name}: a count window has no late events (it closes with its last "
                "event): drop late_topic="
            )
        self.key_codec: Codec[Any] = codec_for(key_type)
        self._several = isinstance(aggregation, Several)
        table.checked_keys = False  # the inner key is checked per call
        table.key_codec = WindowKeyCodec(self.key_codec)
        if forgets_closed(kind):
            table.purge = closed_rows(table, closed_hold(kind, allowed_lateness_ms))
            table.changelog.config.update(
                changelog_config(kind, allowed_lateness_ms, changelog_extra_ms)
            )
        self.late_events = 0  # late events routed by this process
        self.emitted = 0

    def __repr__(self) -> str:
        return f"WindowTable({self.name!r}, {self.kind})"

    def _scoped(self) -> tuple[TaskScope, Windows]:
        """The running task and this table's partition on it."""
        scope = CURRENT_TASK.get(None)
        part = None if scope is None else scope.windows.get(self.name)
        if part is None:
            scope_for("window table", self.name, self.table.stage_name)  # raises
        return scope, part  # type: ignore[return-value]

    def _local(self) -> Windows:
        return self._scoped()[1]

    def add(self, key: Any, value: Any = None, *, timestamp_ms: int | None = None) -> None:
        """Fold `value` into `key`'s windows at the event time of the event being processed
        (or `timestamp_ms`)."""
        scope = CURRENT_TASK.get(None)  # as `_scoped`, inline (once per event)
        part = None if scope is None else scope.windows.get(self.name)
        if scope is None or part is None:
            scope, part = self._scoped()  # raises, saying what to declare
        encoded = None
        if not self.table.local_keys:
            encoded = self.key_codec.encode(key)
            if encoded != scope.event_key():  # the event's own key: this partition's
                check_key("window table", self.name, encoded, key, scope)
        part.add(key, value, timestamp_ms, encoded)

    def get(self, key: Any, start_ms: int) -> Any:
        """The accumulator of `key`'s window starting at `start_ms` (None: none or closed)."""
        return self._local().get(key, start_ms)

    def emitter(self, task: TaskScope) -> Emit:
        """`emit(key, start, end, acc, final, encoded)` for one task's partition: a window's
        result to the output topic through the task's collector (a batch that fills up here
        goes out with the task's next submit); `encoded`: the key's bytes when the caller has
        them. Bound once per partition: the output's partitions remembered, no lookups per
        result."""
        output = self.output
        if output is None:
            return _no_output
        add = task.collector.keyed(output.name)
        encode_key, encode = self.key_codec.encode, dumps(JSON)
        several, name, result_of = self._several, self.aggregation.name, self.aggregation.result

        def emit(
            key: Any, start: int, end: int, acc: Any, final: bool, encoded: bytes | None
        ) -> None:
            # models in a result (a reduce's accumulator) as their JSON; the fields as
            # `fields` makes them, without its dict for one aggregation
            if several:
                result = {"key": key, "start": start, "end": end, **result_of(acc)}
            else:
                result = {"key": key, "start": start, "end": end, name: result_of(acc)}
            result["final"] = final
            add(encode_key(key) if encoded is None else encoded, encode(result), end - 1)
            self.emitted += 1

        return emit

    def fields(self, acc: Any) -> dict[str, Any]:
        """A window's result fields: `{name: result}`, or one field per aggregation of
        `sk.aggregate(...)`."""
        result = self.aggregation.result(acc)
        if self._several:
            return result  # type: ignore[no-any-return]
        return {self.aggregation.name: result}

    def late(self, task: TaskScope, ts: int, watermark: int) -> None:
        """The event being processed is too late for this table: to the late topic."""
        self.late_events += 1
        task.route_late(
            self.late_topic or "",
            f"late for window table {self.name}: event time {ts} is in windows that closed "
            f"(watermark {watermark}, allowed lateness {self.allowed_lateness_ms} ms)",
        )


class Windows(Protocol):
    """What a task drives: one window table on its partition."""

    def load(self) -> int: ...

    def add(self, key: Any, value: Any, ts: int | None, encoded: bytes | None = None) -> None:
        """`encoded`: the key's bytes when the caller has them."""

    def advance(self, watermark: int) -> None: ...

    def get(self, key: Any, start: int) -> Any: ...


class WindowPartition:
    """One window table on one partition: its rows, the open windows by start, closing."""

    def __init__(self, wt: WindowTable, rows: TablePartition, task: TaskScope) -> None:
        self.wt = wt
        self.rows = rows
        self.task = task
        self.open: dict[int, set[Any]] = {}  # window start → keys with a row
        self._starts: list[int] = []  # heap of the starts in `open`
        self.watermark = NO_WATERMARK
        self._size = wt.kind.size_ms
        self._hold = closed_hold(wt.kind, wt.allowed_lateness_ms)  # start + hold <= wm: closed
        self._newest = NO_WATERMARK  # the latest start of a row (`newest_final`)
        self.marker = wt.table.key_codec.encode(WATERMARK_ROW)  # (`state/deferred.py`)
        self._update = wt.emit_mode == "update"
        self._emit = wt.emitter(task)

    def load(self) -> int:
        """Rebuild the index of open windows from the stored rows; returns the stored
        watermark (the one the stored state reflects). Rows of windows it closed are skipped:
        forgotten rows the store's next write deletes (`closed_rows`)."""
        self.watermark = stored_watermark(self.rows)
        cutoff = self.watermark - self._hold
        for start, key in self.rows.iter_keys():
            if start > cutoff and (start, key) != WATERMARK_ROW:
                self._index(start, key)
                self._newest = max(self._newest, start)
        return self.watermark

    @property
    def newest_final(self) -> int:
        """A row is final (closed) once the watermark is past this of its start."""
        return self._newest + self._hold - 1

    def _index(self, start: int, key: Any) -> None:
        keys = self.open.get(start)
        if keys is None:
            keys = self.open[start] = set()
            heapq.heappush(self._starts, start)
        keys.add(key)

    def get(self, key: Any, start: int) -> Any:
        if start <= self.watermark - self._hold:
            return None  # closed (a forgotten row may be in the store until its next write)
        keys = self.open.get(start)
        if keys is None or key not in keys:
            return None  # no row (`open` knows them all): nothing to read
        value = self.rows.get((start, key))
        return None if value is _MISSING else value

    def add(self, key: Any, value: Any, ts: int | None, encoded: bytes | None = None) -> None:
        task = self.task
        if ts is None:
            ts = task.event_time()
        wt, rows = self.wt, self.rows
        aggregation = wt.aggregation
        cutoff = self.watermark - self._hold  # windows starting at or before it are closed
        added = False
        open_ = self.open
        for start, end in wt.kind.windows_for(ts):
            if start <= cutoff:
                continue
            row = (start, key)
            keys = open_.get(start)
            # `open` knows every row of an open window (loaded ones too): a key not in it has
            # none, so a new row costs no lookup (after a restore, no SQLite read on the miss)
            acc = _MISSING if keys is None or key not in keys else rows.get(row)
            if acc is _MISSING:
                acc = aggregation.initial()
                if keys is None:
                    self._index(start, key)  # a new window
                else:
                    keys.add(key)
            acc = aggregation.add(acc, value, ts)
            rows.set(row, acc)
            added = True
            if start > self._newest:
                self._newest = start
            if self._update:
                self._emit(key, start, end, acc, False, encoded)
        if not added:
            wt.late(task, ts, self.watermark)

    def advance(self, watermark: int) -> None:
        """The task's watermark moved: close (emit, purge) every window it passed."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        self.rows.set(WATERMARK_ROW, watermark)
        cutoff = watermark - self._hold
        starts, rows = self._starts, self.rows
        while starts and starts[0] <= cutoff:
            start = heapq.heappop(starts)
            keys = self.open.pop(start)
            if not self._update:  # final results, in a stable order
                for key in sorted(keys, key=repr):
                    acc = rows.get((start, key))
                    if acc is not _MISSING:
                        self._emit(key, start, start + self._size, acc, True, None)
            # no tombstone where the store's purge rule deletes the row (`closed_rows`)
            if start >= 0:
                rows.forget_window(start, keys)
            else:
                for key in keys:
                    rows.remove((start, key))
