"""Interactive queries of window tables and timer sets: what one key has, on its owner.

A window table's rows are keyed `(window start, key)` (tumbling, hopping, session) or
`(window end, key)` (sliding), with reserved bookkeeping rows below RESERVED_BELOW (the
watermark, a sliding key's recent events, a count window's key row). A timer set's rows are
`(fire ms, [kind, key])`. A key lives in the partition its stage's input puts it in (murmur2
of the key encoded with the input's key codec, as `key_by` wrote it), so `GET
/windows/{name}/{key}` (and `/timers/{name}/{key}`) is answered by the worker owning that
partition, like `/tables`. Finding a key's windows reads the partition's keys (a scan of the
store plus the cache): fine for a lookup, not for a hot path.

Each window is given as `start`, `end` (epoch ms; count windows: the key's event numbers), its
result fields as the output topic would carry them (`count`, `sum`, ...), and the stored
accumulator (`value`; sessions store `[end, accumulator]`) under `at` (the row's time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from streamkit.count_windows import SlidingCount, TumblingCount
from streamkit.eventtime import NO_WATERMARK
from streamkit.keys import partition_for_key
from streamkit.serde import StrCodec
from streamkit.state.count_windows import KEY_ROW, open_count_window
from streamkit.state.queries import QueryError, jsonable
from streamkit.state.window_table import WATERMARK_ROW, closed_hold, forgets_closed
from streamkit.windows import Session, Sliding

if TYPE_CHECKING:
    from streamkit.app import App
    from streamkit.graph import Stage
    from streamkit.state.table import TablePartition
    from streamkit.state.window_table import WindowTable

RESERVED_BELOW = NO_WATERMARK + 2  # rows starting lower are bookkeeping, not windows
MAX_WINDOWS = 1000
TIMER_KINDS = {"e": "event", "p": "processing"}


def window_stage(app: App, name: str) -> Stage:
    """The stage holding window table (or timer set) `name`."""
    state = app.windows.get(name) or app.timers.get(name)
    if state is None:
        known = sorted(app.windows) + sorted(app.timers)
        raise QueryError(f"app {app.id} has no window table or timer set {name!r}: {known}")
    for stage in app.stages:
        if any(w is state for w in [*stage.windows, *stage.timers]):
            return stage
    raise QueryError(f"{name!r} is used by no agent, so no worker holds it")


def parse_key(stage: Stage, text: str) -> Any:
    """Text for a stage whose input keys are text (after `key_by`), else JSON, else text."""
    if isinstance(stage.source.key_codec, StrCodec):
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def key_partition(stage: Stage, key: Any, partitions: int) -> int:
    return partition_for_key(stage.source.key_codec.encode(key), partitions)


def parse_range(query: dict[str, str]) -> tuple[int | None, int | None]:
    """`from=` and `to=` of a query (window starts, inclusive, epoch ms), QueryError if not
    whole numbers."""
    bounds = []
    for name in ("from", "to"):
        text = query.get(name, "")
        try:
            bounds.append(int(text) if text else None)
        except ValueError:
            raise QueryError(f"{name}={text!r} is not a whole number of epoch ms") from None
    return bounds[0], bounds[1]


def windows_of(
    wt: WindowTable,
    part: TablePartition,
    key: Any,
    lo: int | None = None,
    hi: int | None = None,
) -> list[dict[str, Any]]:
    """The open windows of `key` in one partition whose start is in `[lo, hi]`, oldest first."""
    kind = wt.kind
    if isinstance(kind, TumblingCount | SlidingCount):
        present, row = part.peek((KEY_ROW, key))
        if not present:
            return []
        window = open_count_window(wt, row)
        acc = window.pop("acc")
        found = [{**window, **wt.fields(acc), "at": KEY_ROW, "value": jsonable(row)}]
        return [w for w in found if _within(int(w["start"]), lo, hi)]
    found = []
    closed = NO_WATERMARK  # rows starting at or below it are closed windows, forgotten
    if forgets_closed(kind):  # (`state/window_table.py`: in the store until its next write)
        present, watermark = part.peek(WATERMARK_ROW)
        if present and watermark is not None:
            closed = int(watermark) - closed_hold(kind, wt.allowed_lateness_ms)
    for row in part.iter_keys():
        at, row_key = row
        if at < RESERVED_BELOW or row_key != key or at <= closed:
            continue
        present, value = part.peek(row)
        if not present:
            continue
        if isinstance(kind, Session):
            start, (end, acc) = at, value
        elif isinstance(kind, Sliding):
            start, end, acc = at - kind.size_ms, at, value
        else:
            start, end, acc = at, at + kind.size_ms, value
        if not _within(start, lo, hi):
            continue
        window = {"start": start, "end": end, **jsonable(wt.fields(acc))}
        found.append({**window, "at": at, "value": jsonable(value)})
        if len(found) >= MAX_WINDOWS:
            break
    return sorted(found, key=lambda w: int(w["start"]))


def _within(start: int, lo: int | None, hi: int | None) -> bool:
    return (lo is None or start >= lo) and (hi is None or start <= hi)


def timers_of(part: TablePartition, key: Any) -> list[dict[str, Any]]:
    """The pending timers of `key` in one partition, soonest first."""
    found = []
    for row in part.iter_keys():
        if row == WATERMARK_ROW:
            continue
        fire, (kind, row_key) = row
        if row_key != key:
            continue
        present, value = part.peek(row)
        if present:
            payload = value.get("payload") if isinstance(value, dict) else value
            kind_name = TIMER_KINDS.get(kind, kind)
            found.append({"fire": fire, "kind": kind_name, "payload": jsonable(payload)})
    return sorted(found, key=lambda t: (int(t["fire"]), str(t["kind"])))
