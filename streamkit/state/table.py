"""Table: per-key state, used inside an agent as a mapping of the current partition's keys.

`table[k]` resolves the partition from the task running the calling agent code, then hits
that partition's write-back cache (`TablePartition`); a miss reads one row from SQLite. Writes
only touch the cache and mark the key dirty; the checkpoint turns dirty keys into changelog
records and one SQLite transaction. The cache is bounded: clean entries are evicted oldest
first, and too many dirty ones ask for an early checkpoint. `t[k]` and `t[k] = v` of a cached
key run in C when built (`table_access.py`); `Table._getitem` & co. are the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from typing import Any, Generic, TypeVar

from streamkit.context import CURRENT_TASK
from streamkit.serde import RAW, Codec, codec_for
from streamkit.state.ownership import key_checker, scope_for
from streamkit.state.store import PartitionStore, Purge
from streamkit.state.table_access import NATIVE as NATIVE_ACCESS
from streamkit.state.table_access import TableAccess, configure, forget_rows
from streamkit.state.ttl import Expiry, StampedCodec, Ttl
from streamkit.topics import Topic

K = TypeVar("K")
V = TypeVar("V")

# Values of these types cannot change in place: reading one does not make its key dirty.
_IMMUTABLE: frozenset[type] = frozenset(
    {int, float, str, bytes, bool, type(None), tuple, frozenset}
)


_MISSING: Any = object()
_DELETED: Any = object()
configure(CURRENT_TASK, _MISSING, _DELETED, _IMMUTABLE)  # (the C type's view of them)


class FollowStatus:
    """How far a table read from a topic has been followed (`source_tables.py` writes it,
    `runtime/table_sync.py` reads it to hold stream records back until the table caught up).
    Times are the wall clock's `monotonic()`."""

    def __init__(self) -> None:
        self.table_time: int | None = None  # the newest record timestamp (ms) read
        self.caught_up_at: float | None = None  # start of the last fetch that reached the end
        self.progressed_at: float | None = None  # when the last new rows were applied
        self.poke: Any = None  # an asyncio.Event: set, the follower fetches at once


class TablePartition:
    """One table's keys on one partition: cache over the task's SQLite store."""

    def __init__(
        self,
        table: Table[Any, Any],
        partition: int,
        store: PartitionStore,
        max_entries: int,
        on_full: Callable[[], None],
        partitions: int | None = None,
    ) -> None:
        self.table = table
        self.name = table.name
        self.partition = partition
        self.store = store
        self.max_entries = max_entries
        self._limit = max_entries  # the size at which the next eviction scan runs
        self._on_full = on_full
        self._key_codec = table.key_codec
        self._value_codec = table.value_codec
        self.cache: dict[Any, Any] = {}
        # changed since the last snapshot → its value (the snapshot reads no cache), in first-
        # change order (a join's rows reach SQLite in key order; a hash order tripled the cost)
        self.dirty: dict[Any, Any] = {}
        # A key is checked to belong to this partition when it enters the cache (a read that
        # misses, a write of a new key): once per key while it stays cached, not per access.
        self._check: Callable[[Any], None] | None = None
        if partitions is not None and table.checked_keys and not table.source:
            self._check = key_checker(table.name, table.key_codec.encode, partition, partitions)
        # Changes taken by a checkpoint, not yet in SQLite (an evicted key is not read stale)
        self.flushing: dict[bytes, bytes | None] = {}
        self.hits = self.misses = 0
        # True while the cache holds every row of this partition: the store had none when the
        # task first missed (nothing restored) and nothing was evicted since. A miss then means
        # "absent" without a SQLite read: a fresh partition's new keys cost no round trip.
        # None: not known yet. Never for tables read from a topic (their rows bypass the cache).
        self._complete: bool | None = False if table.source else None
        # A table read from a source topic: the last source offset applied to this partition
        # (restored or followed), and the rows applied since the last store write.
        self.source_offset = -1
        # A table with a TTL: its keys by expiry (`state/ttl.py`); values are [stamp, value]
        self.expiry: Expiry | None = None if table.ttl is None else Expiry(table.ttl, self)
        followed = table.source or (
            table.versioned is not None and table.versioned.source is not None
        )
        self.follow: FollowStatus | None = FollowStatus() if followed else None

    def apply_source(self, rows: list[tuple[bytes, bytes | None]], last_offset: int) -> None:
        """Records of the source topic (read-only tables): visible at once, written to SQLite
        with the offset at the next checkpoint (`flushing` is what reads see meanwhile)."""
        decode = self._key_codec.decode
        for key, value in rows:
            self.flushing[key] = value
            self.cache.pop(decode(key), None)
        self.source_offset = last_offset

    def get(self, key: Any, default: Any = _MISSING) -> Any:
        value = self.cache.get(key, _MISSING)
        if value is _MISSING:
            if self._check is not None:
                self._check(key)
            self.misses += 1
            if self._complete:  # every row is cached (unwritten ones too): absent, no encoding
                raw = None
            else:
                encoded = self._key_codec.encode(key)
                raw = self.flushing.get(encoded, _MISSING)
                if raw is _MISSING:
                    if self._complete is None:
                        self._complete = self.store.is_empty(self.name)
                    raw = None if self._complete else self.store.get(self.name, encoded)
            value = _DELETED if raw is None else self._value_codec.decode(raw)
            self.cache[key] = value
            self._bound()
        else:
            self.hits += 1
        if value is _DELETED:
            return default
        return value

    def set(self, key: Any, value: Any) -> None:
        cache = self.cache
        if key not in cache:
            if self._check is not None:
                self._check(key)
            self.dirty[key] = value  # before any eviction: a dirty key is never evicted
            cache[key] = value
            self._bound()
        else:
            self.dirty[key] = value
            cache[key] = value

    def delete(self, key: Any) -> bool:
        existed = self.get(key) is not _MISSING
        self.remove(key)
        return existed

    def remove(self, key: Any) -> None:
        """Delete `key` without looking whether it exists (no read)."""
        new = key not in self.cache
        self.dirty[key] = _DELETED
        self.cache[key] = _DELETED
        if new:
            self._bound()

    def forget(self, key: Any) -> None:
        """Drop `key` from memory, no tombstone (a change not in the store yet never gets
        there); `Table.purge` deletes its stored row at the next write. The owner reads none."""
        self.forget_all([key])

    def forget_all(self, keys: list[Any]) -> None:
        """`forget` each of `keys` in one call."""
        cache, dirty, flushing = self.cache, self.dirty, self.flushing
        encode = self._key_codec.encode
        for key in keys:
            cache.pop(key, None)
            dirty.pop(key, None)
            if flushing:
                flushing.pop(encode(key), None)

    def forget_window(self, start: int, keys: Collection[Any]) -> None:
        """`forget` a closed window's rows, `(start, key)` for each of `keys` (from the cache
        and the dirty keys in C when built: `table_access.forget_rows`)."""
        forget_rows(self.cache, self.dirty, start, keys)
        if self.flushing:
            encode, flushing = self._key_codec.encode, self.flushing
            for key in keys:
                flushing.pop(encode((start, key)), None)

    def _bound(self) -> None:
        cache = self.cache
        if len(cache) <= self._limit:
            return
        dirty = self.dirty
        target = int(self.max_entries * 0.9)
        if len(dirty) < target:
            for key in list(cache):  # oldest first (dict order is insertion order)
                if len(cache) <= target:
                    break
                if key not in dirty:
                    del cache[key]
                    self._complete = False  # the store now holds rows the cache does not
        if len(cache) > self.max_entries:
            self._on_full()  # mostly dirty: ask for an early checkpoint
        # scan again only after another tenth of the bound: amortized O(1) per insert
        self._limit = max(self.max_entries, len(cache) + self.max_entries // 10)

    def take_dirty(self) -> dict[bytes, bytes | None]:
        """Encoded changes since the last call (the checkpoint's snapshot); keys turn clean,
        their values stay in `flushing` until the store is written. The dict returned may be
        `flushing` itself: read it before the next snapshot."""
        encode_key, encode_value = self._key_codec.encode, self._value_codec.encode
        changes: dict[bytes, bytes | None] = {}
        if self.table.exact_bytes:
            for key, value in self.dirty.items():
                changes[key] = None if value is _DELETED else value
        else:
            for key, value in self.dirty.items():
                if value is _DELETED:
                    changes[encode_key(key)] = None
                else:
                    # orjson's bytes keep a ~4 KiB buffer each: copy to the exact size, since
                    # these live until the checkpoint's SQLite write (400 MB per 100k otherwise)
                    changes[encode_key(key)] = memoryview(encode_value(value)).tobytes()
        self.dirty = {}
        # what the store has not been written yet: every snapshot's changes since the task's
        # last store write (`TaskTables.write`), the newest value of a key winning
        if self.flushing:
            self.flushing.update(changes)
        else:
            self.flushing = changes
        self._limit = self.max_entries  # now evictable: scan at the bound again
        return changes

    def peek(self, key: Any) -> tuple[bool, Any]:
        """(found, value) of `key` for an interactive query: the cache (unflushed writes
        included), then the changes being flushed, then SQLite. Touches neither the cache nor
        the hit counters, so a query never evicts the agent's working set."""
        value = self.cache.get(key, _MISSING)
        if value is _MISSING:
            encoded = self._key_codec.encode(key)
            raw = self.flushing.get(encoded, _MISSING)
            if raw is _MISSING:
                raw = self.store.get(self.name, encoded)
            value = _DELETED if raw is None else self._value_codec.decode(raw)
        if value is _DELETED:
            return False, None
        return True, value

    def pending(self) -> dict[bytes, bytes | None]:
        """Encoded changes not yet in SQLite (None: deleted): what a scan of the store must
        overlay to see the partition as the agent does."""
        encode_key, encode_value = self._key_codec.encode, self._value_codec.encode
        changes = dict(self.flushing)
        for key, value in self.dirty.items():
            changes[encode_key(key)] = None if value is _DELETED else encode_value(value)
        return changes

    def stored_items(self) -> Iterator[tuple[Any, Any]]:
        """(key, value) of every row of the store, decoded: the whole partition while it has
        no change of its own yet (just opened)."""
        decode_key, decode_value = self._key_codec.decode, self._value_codec.decode
        for raw, value in self.store.scan(self.name):
            yield decode_key(raw), decode_value(value)

    def keep(self, key: Any, value: Any) -> None:
        """Cache a row just read from the store (`stored_items`), as a read would: its next
        read costs no SQLite query. The cache's bound holds as for any miss."""
        if key not in self.cache:
            self.cache[key] = value
            self._bound()

    def iter_keys(self) -> Iterator[Any]:
        """Keys of this partition: the store's, overlaid with the changes not written to it
        yet (`flushing`), then with the cache's."""
        decode = self._key_codec.decode
        flushing = dict(self.flushing)
        seen = set()
        for raw, _ in self.store.scan(self.name):
            key = decode(raw)
            seen.add(key)
            cached = self.cache.get(key, _MISSING)
            if cached is _MISSING:
                if flushing.get(raw, raw) is not None:  # (None: deleted, not written yet)
                    yield key
            elif cached is not _DELETED:
                yield key
        for raw, value in flushing.items():
            key = decode(raw)
            if key not in seen and key not in self.cache and value is not None:
                seen.add(key)
                yield key
        for key, value in list(self.cache.items()):
            if key not in seen and value is not _DELETED:
                yield key


class Table(TableAccess, Generic[K, V]):
    """`app.table("spent", default=float)`: a mapping per partition, backed by SQLite and the
    compacted changelog topic `{app_id}-{name}-changelog`."""

    def __init__(
        self,
        name: str,
        changelog: Topic,
        *,
        default: Callable[[], V] | None = None,
        key_type: Any = str,
        value_type: Any = None,
        source: bool = False,
        local_keys: bool = False,
        ttl: Ttl | None = None,
    ) -> None:
        self.name = name
        self.changelog = changelog
        # True: the table reads `changelog`, a topic written by someone else (read-only)
        self.source = source
        self.default = default
        self.key_type = key_type
        self.value_type = value_type
        self.key_codec: Codec[Any] = RAW if key_type is bytes else codec_for(key_type)
        self.value_codec: Codec[Any] = codec_for(value_type)
        self.ttl = ttl  # keys expire after their last write (`state/ttl.py`)
        if ttl is not None:
            self.value_codec = StampedCodec(self.value_codec)
        self.local_keys = local_keys  # keys are the task's own: no partition check
        # checked per key as it enters a partition's cache; window tables and timers check
        # their own (inner) keys per call instead
        self.checked_keys = not local_keys
        self.stage_name: str | None = None  # the stage that owns it (set when built)
        # the versioned table stored in this one (`state/versioned_table.py`), if any
        self.versioned: Any = None
        # the key ranges its rows' own rules make final, deleted with each store write
        # (`PartitionStore.purges`; a stream-stream join's, `state/stream_join.py`)
        self.purge: Purge | None = None
        # keys and values are bytes of their exact size (a join's rows): the checkpoint takes
        # them as they are, no encode and no copy (`TablePartition.take_dirty`)
        self.exact_bytes = False

    def __repr__(self) -> str:
        return f"Table({self.name!r})"

    def _local(self) -> TablePartition:
        scope = CURRENT_TASK.get(None)
        part = None if scope is None else scope.tables.get(self.name)
        if part is None:
            scope_for("table", self.name, self.stage_name)  # raises, saying what to declare
        return part  # type: ignore[return-value]

    def _read(self, part: TablePartition, key: Any, value: Any) -> Any:
        """A value handed to user code: if it can change in place, its key is written back
        at the next checkpoint (so `t[k].append(x)` persists)."""
        if type(value) not in _IMMUTABLE and not self.source:
            part.dirty[key] = value
        return value

    # -- a table with a TTL stores [write stamp, value]: these read and write through it ----

    def _expiring(self, part: TablePartition, key: Any, touch: bool) -> Any:
        """The live value of `key` (or _MISSING: absent or expired); with `touch`, a value
        that can change in place is restamped (it is written back, as any such read)."""
        expiry = part.expiry
        assert expiry is not None
        stored = part.get(key)
        if stored is _MISSING or expiry.expired(stored[0]):
            return _MISSING
        value = stored[1]
        if touch and type(value) not in _IMMUTABLE:
            stamp = expiry.stamp()
            if stamp != stored[0]:
                part.set(key, [stamp, value])
                expiry.track(key, stamp)
        return value

    def _stamped(self, part: TablePartition, key: Any, value: Any) -> None:
        expiry = part.expiry
        assert expiry is not None
        stamp = expiry.stamp()
        part.set(key, [stamp, value])
        expiry.track(key, stamp)

    def _get(self, part: TablePartition, key: Any, touch: bool = True) -> Any:
        if self.ttl is not None:
            return self._expiring(part, key, touch)
        return part.get(key)

    def _getitem(self, key: K) -> V:
        scope = CURRENT_TASK.get(None)
        part = None if scope is None else scope.tables.get(self.name)
        if part is None:
            part = self._local()  # raises, saying what to declare
        if self.ttl is None:  # the hot path: a cached live value, as `part.get` finds it
            value = part.cache.get(key, _MISSING)
            if value is not _MISSING and value is not _DELETED:
                part.hits += 1
                if type(value) not in _IMMUTABLE and not self.source:  # as `_read`, inline
                    part.dirty[key] = value
                return value  # type: ignore[no-any-return]
        else:
            value = self._expiring(part, key, True)
            if value is not _MISSING:
                return value  # type: ignore[no-any-return]
            if self.default is None:
                raise KeyError(key)
            value = self.default()
            self._stamped(part, key, value)
            return value
        value = part.get(key)  # not cached (or deleted): the store, the default
        if value is _MISSING:
            if self.default is None:
                raise KeyError(key)
            value = self.default()
            if not self.source:  # stored, as a defaultdict does: `t[k].append(x)` persists
                part.set(key, value)
            return value
        if type(value) not in _IMMUTABLE and not self.source:  # as `_read`, inline
            part.dirty[key] = value
        return value  # type: ignore[no-any-return]

    def _writable(self, key: Any) -> TablePartition:
        if self.source:
            raise TypeError(
                f"table {self.name} reads topic {self.changelog.name}: it is read-only "
                "(produce to that topic to change it)"
            )
        return self._local()

    def _setitem(self, key: K, value: V) -> None:
        scope = CURRENT_TASK.get(None)
        part = None if scope is None or self.source else scope.tables.get(self.name)
        if part is None:
            part = self._writable(key)  # raises: read-only, or not this task's
        if self.ttl is not None:
            self._stamped(part, key, value)
        elif key in part.cache:  # the hot path: a cached key, as `part.set` writes it
            part.dirty[key] = value
            part.cache[key] = value
        else:
            part.set(key, value)

    def _delitem(self, key: K) -> None:
        part = self._writable(key)
        live = self.ttl is None or self._expiring(part, key, False) is not _MISSING
        if not part.delete(key) or not live:
            raise KeyError(key)

    if not NATIVE_ACCESS:  # `t[k]` & co. in Python; compiled, TableAccess's slots call these
        __getitem__, __setitem__, __delitem__ = _getitem, _setitem, _delitem

    def __contains__(self, key: object) -> bool:
        part = self._local()
        if self.ttl is None:
            return part.get(key) is not _MISSING
        return self._expiring(part, key, False) is not _MISSING

    def get(self, key: K, default: V | None = None) -> V | None:
        part = self._local()
        value = part.get(key) if self.ttl is None else self._expiring(part, key, True)
        return default if value is _MISSING else self._read(part, key, value)

    def __iter__(self) -> Iterator[K]:
        part = self._local()
        if self.ttl is None:
            return part.iter_keys()
        return (k for k in list(part.iter_keys()) if self._get(part, k, False) is not _MISSING)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def items(self) -> Iterator[tuple[K, V]]:
        local = self._local()
        for key in list(local.iter_keys()):
            value = self._get(local, key)
            if value is not _MISSING:
                yield key, self._read(local, key, value)
