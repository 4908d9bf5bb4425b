"""Interactive queries: reading a table's keys from the worker that owns their partition.

A table partition is the partition of its stage's input topic, so the partition of a key is
the one Kafka's default partitioner gives the key's bytes under the table's key codec
(murmur2, as for the changelog records and a keyed input). Reads go through
`TablePartition.peek` (cache, flushing set, then SQLite), so they see the agent's latest
writes without disturbing its cache; a scan reads SQLite on a thread through its own read-only
connection, then overlays the changes not yet written there.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel

from streamkit.keys import partition_for_key
from streamkit.serde import RawCodec, StrCodec
from streamkit.state.ttl import visible

if TYPE_CHECKING:
    from streamkit.app import App
    from streamkit.graph import Stage
    from streamkit.state.table import Table, TablePartition

MAX_SCAN = 10_000  # rows one scan returns at most


class QueryError(Exception):
    """A bad query: unknown table, a key that does not parse. The message says which."""


def queryable(app: App) -> dict[str, Table[Any, Any]]:
    """The plain tables of the app (window tables and timer sets keep composite keys)."""
    hidden = set(app.windows) | set(app.timers) | set(app.joins)
    return {name: t for name, t in app.tables.items() if name not in hidden}


def table_stage(app: App, name: str) -> Stage:
    """The stage whose tasks hold the table (its source topic is the table's partitioning)."""
    if name not in queryable(app):
        raise QueryError(f"app {app.id} has no queryable table {name!r}: {sorted(queryable(app))}")
    for stage in app.stages:
        if any(t.name == name for t in stage.tables):
            return stage
    raise QueryError(f"table {name!r} is used by no agent, so no worker holds it")


def parse_key(table: Table[Any, Any], text: str) -> Any:
    """A key given as text (URL, command line) as the table's key type: text for `str`,
    UTF-8 bytes for `bytes`, else JSON (`42`, `"a"`, `[1, 2]`)."""
    if table.key_type is str:
        return text
    if table.key_type is bytes:
        return text.encode()
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise QueryError(f"key {text!r} is not JSON (table {table.name} keys are JSON)") from None


def key_partition(table: Table[Any, Any], key: Any, partitions: int) -> int:
    return partition_for_key(table.key_codec.encode(key), partitions)


def jsonable(value: Any) -> Any:
    """A decoded key or value as something JSON can carry (models dumped, bytes as text)."""
    return orjson.loads(orjson.dumps(value, default=_default))


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, bytes):
        return obj.decode(errors="replace")
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    return repr(obj)


@dataclass
class Row:
    key: Any
    value: Any
    partition: int


async def scan(part: TablePartition, prefix: str, limit: int) -> list[Row]:
    """Up to `limit` rows of one partition whose key (as text) starts with `prefix`, in the
    order of the encoded keys."""
    table = part.table
    codec = table.key_codec
    text_keys = isinstance(codec, (StrCodec, RawCodec))
    pending = part.pending()  # read now, on the loop: the agent may change it meanwhile
    wanted = limit + len(pending)
    path = part.store.path
    rows = await asyncio.to_thread(_read_rows, path, table.name, prefix, text_keys, wanted, codec)
    merged = dict(rows)
    for raw_key, raw_value in pending.items():
        if not _matches(codec.decode(raw_key), prefix):
            continue
        if raw_value is None:
            merged.pop(raw_key, None)
        else:
            merged[raw_key] = raw_value
    decode_value = table.value_codec.decode
    found: list[Row] = []
    for k in sorted(merged):
        live, value = visible(part, decode_value(merged[k]))  # a TTL: unstamped, live
        if live:
            found.append(Row(codec.decode(k), value, part.partition))
        if len(found) >= limit:
            break
    return found


def _matches(key: Any, prefix: str) -> bool:
    if not prefix:
        return True
    text = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
    return text.startswith(prefix)


def _read_rows(
    path: Path, table: str, prefix: str, text_keys: bool, wanted: int, codec: Any
) -> list[tuple[bytes, bytes]]:
    name = '"t:' + table.replace('"', '""') + '"'
    start = prefix.encode() if text_keys else b""
    found: list[tuple[bytes, bytes]] = []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cursor = db.execute(f"SELECT k, v FROM {name} WHERE k >= ? ORDER BY k", (start,))
        for k, v in cursor:
            if text_keys:
                if not k.startswith(start):
                    break  # ordered: no later key has the prefix
            elif not _matches(codec.decode(k), prefix):
                continue
            found.append((k, v))
            if len(found) >= wanted:
                break
    finally:
        db.close()
    return found
