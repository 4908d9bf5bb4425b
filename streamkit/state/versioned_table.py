"""VersionedTable: a table that keeps each key's history for a retention period.

`app.table("prices", versioned=sk.Versioned(retention=3600))` declares one; `prices.as_of(key,
t)` is the value that held at event time t (epoch ms). The semantics (out-of-order puts,
deletes, the retention's cutoff, what is purged) are those of `streamkit/versions.py`.

Storage: each version is its own row of an ordinary table (write-back cache, SQLite, the
compacted changelog `{app}-{name}-changelog`, checkpoint, exactly-once unchanged), keyed by the
encoded key followed by the version's time (8 bytes, big-endian: `versions.row_key`), so
compaction keeps every version until it is purged; a purged version gets a tombstone of its
row. The row's value is `b"\\x01" + the encoded value`, or `b"\\x00"` for a delete version.
A reserved row (key `b""`) holds the observed stream time and, for a table fed from a topic,
the last offset of that topic applied: both reach the changelog and SQLite in the same
checkpoint as the versions they reflect.

A partition's versions are held in memory (loaded when the task first uses it, purged as
stream time passes): the retention bounds them.

Filled two ways: by the code of the stage that owns it (`prices[k] = v` at the event's time,
`put(k, v, timestamp_ms=)`, `del prices[k]`), or, with `source=topic`, from that topic: each
record is a version at its record timestamp (a null value: a delete), read by the worker's
`sources` background task (`source_tables.py`) and written like the rest.
"""

from __future__ import annotations

import logging
import struct
import weakref
from typing import Any, Generic, TypeVar

from streamkit.context import CURRENT_TASK
from streamkit.serde import RAW, Codec, codec_for
from streamkit.state.ownership import check_key, scope_for
from streamkit.state.table import Table, TablePartition
from streamkit.topics import Topic
from streamkit.versions import (
    TOMBSTONE,
    Versioned,
    Versions,
    as_of,
    cutoff,
    purge,
    put,
    row_key,
    split_row_key,
)

K = TypeVar("K")
V = TypeVar("V")

META = b""  # the reserved row: observed stream time, source offset
_META = struct.Struct(">qq")
_NONE = -(1 << 63)
_DELETE_ROW = b"\x00"

log = logging.getLogger(__name__)


class VersionedPartition:
    """One partition of a versioned table: every key's versions in memory, over the rows."""

    def __init__(self, table: VersionedTable[Any, Any], rows: TablePartition) -> None:
        self.table = table
        self.rows = rows
        self.retention_ms = table.retention_ms
        self.index: dict[bytes, Versions] = {}
        self.observed: int | None = None
        self.source_offset = -1
        self._swept: int | None = None  # the observed time of the last full purge
        self._decode = table.value_codec.decode
        self._load()

    def _load(self) -> None:
        stored: dict[bytes, bytes | None] = dict(self.rows.store.scan(self.rows.name))
        stored.update(self.rows.pending())
        observed = None
        for row, raw in stored.items():
            if raw is None:
                continue
            if row == META:
                seen, offset = _META.unpack(raw)
                if seen != _NONE:
                    observed = seen if observed is None else max(observed, seen)
                self.source_offset = offset
                continue
            key, ts = split_row_key(row)
            value = TOMBSTONE if raw == _DELETE_ROW else self._decode(raw[1:])
            self.index.setdefault(key, []).append((ts, value))
            observed = ts if observed is None else max(observed, ts)
        for versions in self.index.values():
            versions.sort(key=lambda v: v[0])
        self.observed = observed

    @property
    def oldest(self) -> int | None:
        return cutoff(self.observed, self.retention_ms)

    def put(self, key: bytes, ts: int, value: Any, raw: bytes | None) -> bool:
        """Add the version (ts, value) of encoded `key` (`raw`: its encoded value, None for
        a delete); False when ts is before the retention's cutoff (nothing written)."""
        versions = self.index.get(key)
        fresh = versions is None
        if versions is None:
            versions = []
        if not put(versions, ts, value, self.oldest):
            return False
        if fresh:
            self.index[key] = versions
        self.rows.set(row_key(key, ts), _DELETE_ROW if raw is None else b"\x01" + raw)
        if self.observed is None or ts > self.observed:
            self.observed = ts
            self._write_meta()
        self._purge(key, versions)
        if self._swept is None or self.observed - self._swept >= self.retention_ms // 2:
            self.sweep()
        return True

    def _purge(self, key: bytes, versions: Versions) -> None:
        for ts in purge(versions, self.oldest):
            self.rows.remove(row_key(key, ts))
        if not versions:
            del self.index[key]

    def sweep(self) -> None:
        """Purge every key's expired versions (run as stream time passes half a retention)."""
        self._swept = self.observed
        for key, versions in list(self.index.items()):
            self._purge(key, versions)

    def _write_meta(self) -> None:
        seen = _NONE if self.observed is None else self.observed
        self.rows.set(META, _META.pack(seen, self.source_offset))

    def as_of(self, key: bytes, ts: int) -> tuple[bool, Any]:
        versions = self.index.get(key)
        if versions is None:
            return False, None
        return as_of(versions, ts, self.oldest)

    def latest(self, key: bytes) -> tuple[bool, Any]:
        versions = self.index.get(key)
        if not versions or versions[-1][1] is TOMBSTONE:
            return False, None
        return True, versions[-1][1]

    def apply_source(
        self, rows: list[tuple[bytes, bytes | None]], times: list[int], last_offset: int
    ) -> int:
        """Records of the source topic, each a version at its timestamp; the number taken
        (those before the retention's cutoff, or whose key is null, are not)."""
        taken = 0
        decode = self._decode
        for (key, raw), ts in zip(rows, times, strict=True):
            if key is None:
                continue
            if raw is None:
                value = TOMBSTONE
            else:
                try:
                    value = decode(raw)
                except Exception as exc:  # written by someone else: skip, say so
                    log.warning(
                        "versioned table %s: a record of %s does not decode (%s): skipped",
                        self.table.name,
                        self.table.source.name if self.table.source else "?",
                        exc,
                    )
                    continue
            taken += self.put(key, ts, value, raw)
        self.source_offset = last_offset
        self._write_meta()
        return taken


class VersionedTable(Generic[K, V]):
    """A table of versions per key; see the module docstring. Use it from the stage that
    declares it (`state=[...]`, `with_state`, or a `join_table`)."""

    def __init__(
        self,
        name: str,
        table: Table[Any, Any],
        versioned: Versioned,
        *,
        key_type: Any = str,
        value_type: Any = None,
        source: Topic | None = None,
    ) -> None:
        self.name = name
        self.table = table
        self.versioned = versioned
        self.retention_ms = versioned.retention_ms
        self.source = source
        self.key_type = key_type
        self.value_type = value_type
        self.key_codec: Codec[Any] = RAW if key_type is bytes else codec_for(key_type)
        self.value_codec: Codec[Any] = codec_for(value_type)
        self._parts: weakref.WeakKeyDictionary[TablePartition, VersionedPartition] = (
            weakref.WeakKeyDictionary()
        )
        table.versioned = self

    def __repr__(self) -> str:
        return f"VersionedTable({self.name!r})"

    def partition(self, rows: TablePartition) -> VersionedPartition:
        """The versions over one partition's rows (loaded on first use)."""
        part = self._parts.get(rows)
        if part is None:
            part = self._parts[rows] = VersionedPartition(self, rows)
        return part

    def _local(self) -> VersionedPartition:
        scope = CURRENT_TASK.get(None)
        rows = None if scope is None else scope.tables.get(self.name)
        if rows is None:
            scope_for("versioned table", self.name, self.table.stage_name)  # raises
        return self.partition(rows)  # type: ignore[arg-type]

    # -- reads -------------------------------------------------------------------------------

    def as_of(self, key: K, timestamp_ms: int, default: V | None = None) -> V | None:
        """The value that held for `key` at event time `timestamp_ms` (epoch ms): the version
        with the latest time at or before it; `default` when there is none, when it is a
        delete, or when `timestamp_ms` is older than the retention keeps."""
        found, value = self._local().as_of(self.key_codec.encode(key), int(timestamp_ms))
        return value if found else default

    def get(self, key: K, default: V | None = None) -> V | None:
        """The latest value of `key` (whatever its time)."""
        found, value = self._local().latest(self.key_codec.encode(key))
        return value if found else default

    def __getitem__(self, key: K) -> V:
        found, value = self._local().latest(self.key_codec.encode(key))
        if not found:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        return self._local().latest(self.key_codec.encode(key))[0]

    def history(self, key: K) -> list[tuple[int, V | None]]:
        """Every version of `key` still kept: (time ms, value), a delete as None."""
        versions = self._local().index.get(self.key_codec.encode(key), [])
        return [(ts, None if v is TOMBSTONE else v) for ts, v in versions]

    # -- writes (from the code of the owning stage; not for a table fed from a topic) --------

    def put(self, key: K, value: V | None, *, timestamp_ms: int | None = None) -> bool:
        """Add a version of `key` at `timestamp_ms` (default: the event's time); a None value
        is a delete. False when that time is older than the retention keeps (not written)."""
        if self.source is not None:
            raise TypeError(
                f"versioned table {self.name} reads topic {self.source.name}: it is read-only "
                "(produce to that topic to change it)"
            )
        part = self._local()
        scope = CURRENT_TASK.get(None)
        encoded = self.key_codec.encode(key)
        if scope is not None and not self.table.local_keys:
            check_key("versioned table", self.name, encoded, key, scope)
        if timestamp_ms is None:
            if scope is None:
                raise RuntimeError(f"versioned table {self.name}: put outside a running task")
            timestamp_ms = scope.event_time()
        if value is None:
            return part.put(encoded, int(timestamp_ms), TOMBSTONE, None)
        return part.put(encoded, int(timestamp_ms), value, self.value_codec.encode(value))

    def __setitem__(self, key: K, value: V) -> None:
        self.put(key, value)

    def __delitem__(self, key: K) -> None:
        """A delete version at the event's time: `as_of` finds nothing from then on."""
        self.put(key, None)


def versioned_answer(part: VersionedPartition, key: bytes, as_of_ms: str | None) -> dict[str, Any]:
    """An interactive query's answer (`GET /tables/{name}/{key}[?as_of=ms]`): the latest
    value (or the one that held at `as_of_ms`) and every kept version."""
    table = part.table
    if as_of_ms is None:
        found, value = part.latest(key)
    else:
        found, value = part.as_of(key, int(as_of_ms))
    versions = part.index.get(key, [])
    return {
        "table": table.name,
        "key": table.key_codec.decode(key),
        "found": found,
        "value": value,
        "as_of": None if as_of_ms is None else int(as_of_ms),
        "versions": [[ts, None if v is TOMBSTONE else v] for ts, v in versions],
    }
