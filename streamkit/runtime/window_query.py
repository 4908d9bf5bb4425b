"""Interactive queries of window tables: the windows one key has open, on its owner.

A window table's rows are keyed `(window start, key)` (tumbling, hopping, session) or
`(window end, key)` (sliding), with reserved bookkeeping rows below RESERVED_BELOW (the
watermark, a sliding key's recent events). A key lives in the partition its stage's input
puts it in (murmur2 of the key encoded with the input's key codec, as `key_by` wrote it), so
`GET /windows/{name}/{key}` is answered by the worker owning that partition, like `/tables`.
Finding a key's windows reads the partition's keys (a scan of the store plus the cache): fine
for a lookup box, not for a hot path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from streamkit.eventtime import NO_WATERMARK
from streamkit.keys import partition_for_key
from streamkit.serde import StrCodec
from streamkit.state.queries import QueryError, jsonable

if TYPE_CHECKING:
    from streamkit.app import App
    from streamkit.graph import Stage
    from streamkit.state.table import TablePartition

RESERVED_BELOW = NO_WATERMARK + 2  # rows starting lower are bookkeeping, not windows
MAX_WINDOWS = 1000


def window_stage(app: App, name: str) -> Stage:
    wt = app.windows.get(name)
    if wt is None:
        raise QueryError(f"app {app.id} has no window table {name!r}: {sorted(app.windows)}")
    for stage in app.stages:
        if any(w is wt for w in stage.windows):
            return stage
    raise QueryError(f"window table {name!r} is used by no agent, so no worker holds it")


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


def windows_of(part: TablePartition, key: Any) -> list[dict[str, Any]]:
    """The stored windows of `key` in one partition, oldest first: `at` (the start, or the
    end for sliding windows) and the stored accumulator (sessions: `[end, accumulator]`)."""
    found = []
    for row in part.iter_keys():
        at, row_key = row
        if at < RESERVED_BELOW or row_key != key:
            continue
        present, value = part.peek(row)
        if present:
            found.append({"at": at, "value": jsonable(value)})
        if len(found) >= MAX_WINDOWS:
            break
    return sorted(found, key=lambda w: int(w["at"]))
