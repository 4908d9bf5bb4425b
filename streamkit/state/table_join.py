"""Joins with tables: the operator functions behind `stream.join_table` and `app.join_tables`.

Both run inline in the task of their stage (a `flat_map` of zero or one result per event), on
the tables that stage owns:

- **Stream-table** (`stream.join_table(table, how=)`): each stream value is joined with the
  table's value under the event's key (the record key bytes are the table's key: key_by the
  stream on it, co-partitioned). A versioned table answers `as_of` the event's time, so an
  out-of-order or replayed event joins with the value that held then; any other table with
  its current value. Tables read from a topic are synchronised first (`runtime/table_sync.py`).
- **Table-table** (`app.join_tables(left, right, how=)`): both topics are read by one task
  (co-partitioned), each record updates its side's table (a null value deletes), and the
  join of the key's two new values is emitted (`table_join_change`).

`how`: "inner" (both sides present), "left" (the left side present, the right may be None),
"outer" (either present; table-table only). The result is `joiner(left, right)`, by default
the tuple `(left, right)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from streamkit.context import CURRENT_TASK, current_event
from streamkit.settings import ConfigError
from streamkit.state.table import _MISSING, Table
from streamkit.state.versioned_table import VersionedTable

Joiner = Callable[[Any, Any], Any]

STREAM_TABLE_HOWS = ("inner", "left")
TABLE_TABLE_HOWS = ("inner", "left", "outer")


def pair(left: Any, right: Any) -> tuple[Any, Any]:
    """The default joiner."""
    return (left, right)


def check_how(how: str, allowed: tuple[str, ...], what: str) -> None:
    if how not in allowed:
        raise ConfigError(f"{what}: how={how!r} is not one of {', '.join(allowed)}")


def row_exists(how: str, left: bool, right: bool) -> bool:
    """Whether the join has a row for a key whose sides are present as given."""
    if how == "inner":
        return left and right
    if how == "left":
        return left
    return left or right


def table_join_change(
    how: str, old_left: bool, old_right: bool, new_left: bool, new_right: bool
) -> str | None:
    """What a table-table join emits when one side of a key changed: "row" (the new joined
    row), "delete" (a tombstone: the key's row is gone) or None (nothing: there was no row
    and there is none)."""
    if row_exists(how, new_left, new_right):
        return "row"
    if row_exists(how, old_left, old_right):
        return "delete"
    return None


def stream_table_join(
    table: Any, how: str, joiner: Joiner | None
) -> Callable[[Any], Iterable[Any]]:
    """The flat_map of `stream.join_table(table)` (`table`: a Table or a VersionedTable)."""
    if not isinstance(table, (Table, VersionedTable)):
        raise ConfigError(
            f"join_table: {table!r} is not a table (declare it with app.table(...); a window "
            "table or timer set cannot be joined)"
        )
    check_how(how, STREAM_TABLE_HOWS, f"join_table({table.name})")
    join = joiner or pair
    inner = how == "inner"
    versioned = table if isinstance(table, VersionedTable) else None
    rows: Table[Any, Any] = table.table if isinstance(table, VersionedTable) else table
    decode = rows.key_codec.decode
    name = table.name

    def join_table(value: Any) -> Iterable[Any]:
        scope = CURRENT_TASK.get()
        raw = scope.event_key()
        found, other = False, None
        if raw is not None:
            if versioned is not None:
                part = versioned.partition(scope.tables[name])
                found, other = part.as_of(raw, scope.event_time())
            else:
                got = scope.tables[name].get(decode(raw))
                if got is not _MISSING:
                    found, other = True, got
        if not found and inner:
            return ()
        return (join(value, other),)

    join_table.__name__ = name
    return join_table


def table_table_join(
    left_topic: str, left: Table[Any, Any], right: Table[Any, Any], how: str, joiner: Joiner | None
) -> Callable[[Any], Iterable[Any]]:
    """The flat_map of `app.join_tables`: a record of `left_topic` updates `left`, any other
    input's record `right`; then the key's join is emitted as `table_join_change` says."""
    join = joiner or pair
    decode = left.key_codec.decode
    names = (left.name, right.name)

    def join_tables(value: Any) -> Iterable[Any]:
        event = current_event()
        scope = CURRENT_TASK.get()
        if event.raw_key is None:
            return ()  # a table row needs a key
        key = decode(event.raw_key)
        lpart, rpart = (scope.tables[n] for n in names)
        this, other = (lpart, rpart) if event.topic == left_topic else (rpart, lpart)
        before = this.get(key)
        if value is None:
            this.remove(key)
        else:
            this.set(key, value)
        there = other.get(key)
        other_side = None if there is _MISSING else there
        if this is lpart:
            old_l, new_l = before is not _MISSING, value is not None
            old_r = new_r = there is not _MISSING
            lv, rv = value, other_side
        else:
            old_l = new_l = there is not _MISSING
            old_r, new_r = before is not _MISSING, value is not None
            lv, rv = other_side, value
        change = table_join_change(how, old_l, old_r, new_l, new_r)
        if change is None:
            return ()
        if change == "delete":
            return (None,)
        return (join(lv, rv),)

    join_tables.__name__ = f"{left.name}, {right.name}"
    return join_tables
