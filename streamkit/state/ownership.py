"""Whose state it is: a table used only from the code of the stage that declares it, a key
written only by the task of its partition (murmur2, as `key_by` routes it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamkit.context import CURRENT_TASK, TaskScope
from streamkit.keys import partition_for_key


class TableNotBound(Exception):
    """State used from code that does not own it, or under a key of another partition: a
    mistake in the app, not in an event (the worker stops with this message)."""


class KeyNotInPartition(TableNotBound):
    """A write under a key that does not hash to the partition of the task writing it."""


def scope_for(kind: str, name: str, owner: str | None) -> TaskScope:
    """The running task's scope, or TableNotBound naming the state and what to declare."""
    scope = CURRENT_TASK.get(None)
    if scope is None:
        raise TableNotBound(
            f"{kind} {name} used outside a running task: state is used from the code of the "
            "stage that owns it (agent bodies, their helpers, map functions, timer callbacks)"
        )
    where = f"stage {scope.stage_name}"
    if owner is None:
        raise TableNotBound(
            f"{kind} {name} is used in {where} but no stage declares it: add it to "
            f"state=[...] of the agent (or .with_state(...) on the stream) of {where}"
        )
    raise TableNotBound(
        f"{kind} {name} is used in {where} but belongs to stage {owner}: state is local to "
        f"the stage that declares it; move the code there, or declare it on {where} instead"
    )


def check_key(kind: str, name: str, encoded: bytes, key: Any, scope: TaskScope) -> None:
    """A written key must hash (murmur2) to the running task's partition."""
    if encoded == scope.event_key():
        return  # the event's own key: its partition is this one (the common case, no hash)
    _check_partition(kind, name, encoded, key, scope.partition, scope.partitions, scope)


def _check_partition(
    kind: str, name: str, encoded: bytes, key: Any, partition: int, partitions: int, scope: Any
) -> None:
    belongs = partition_for_key(encoded, partitions)
    if belongs != partition:
        raise KeyNotInPartition(
            f"{kind} {name}: key {key!r} belongs to partition {belongs} of stage "
            f"{scope.stage_name} "
            f"({partitions} partitions), but partition {partition} is using it: key_by(<this "
            "key>) before the stage that uses it (or declare it with local_keys=True if its "
            "keys are the task's own)"
        )


def key_checker(
    name: str, encode: Callable[[Any], bytes], partition: int, partitions: int
) -> Callable[[Any], None]:
    """The check a table partition runs on each key that enters its cache."""

    def check(key: Any) -> None:
        scope = CURRENT_TASK.get(None)
        if scope is None:
            return  # read from outside a task (a query, the testing kit's views)
        encoded = encode(key)
        if encoded == scope.event_key():
            return
        _check_partition("table", name, encoded, key, partition, partitions, scope)

    return check
