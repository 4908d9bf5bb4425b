"""TaskTables: the tables of one task (stage, partition): its store, caches and restore.

The checkpoint's changes go to the changelog every time, and to the store (SQLite) at most
every `write_interval` seconds (`state_write_interval`): between two writes they wait,
merged, in the tables' `flushing` overlay (reads see them), and so do the changelog offsets
they reflect. The store is a cache of the changelog that may lag it, never lead it; a crash
replays the changelog from the offsets the store holds. A task's last checkpoint (revoke,
stop) always writes, and so does one whose unwritten rows reach the cache's bound. A join's
buffered rows and a time window's wait longer: until the bound, or their changelog's
retention (`deferred.py`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from streamkit.state.changelog import Restorer, describe_sources
from streamkit.state.deferred import Deferred, Finality
from streamkit.state.store import PartitionStore, open_store
from streamkit.state.table import TablePartition

log = logging.getLogger(__name__)
_GONE = object()

if TYPE_CHECKING:
    from streamkit.graph import Stage


class RecordCollector(Protocol):
    """Where a snapshot's changelog records go (the task's `runtime.collector.RecordCollector`;
    state/ imports nothing from runtime/)."""

    def add(
        self,
        tp: tuple[str, int],
        key: bytes | None,
        value: bytes | None,
        headers: None,
        timestamp_ms: None,
    ) -> object: ...


def store_path(workdir: Path, app_id: str, stage: Stage, partition: int) -> Path:
    return workdir / app_id / stage.name / f"{partition}.sqlite"


class TaskTables:
    def __init__(
        self,
        app_id: str,
        workdir: Path,
        stage: Stage,
        partition: int,
        cache_entries: int,
        on_full: Callable[[], None],
        write_interval: float = 0.0,
    ) -> None:
        self.stage = stage
        self.partition = partition
        self.tables = list(stage.tables)
        self.path = store_path(workdir, app_id, stage, partition)
        self._identity = {
            "app": app_id,
            "stage": stage.name,
            "source": stage.source.name,
            "partition": str(partition),
        }
        self._cache_entries = cache_entries
        self._on_full = on_full
        self.store: PartitionStore | None = None
        self.partitions: dict[str, TablePartition] = {}
        self.replayed = 0
        self.write_interval = write_interval
        # the first write comes at a random point of the interval's second half: a worker's
        # tasks, opened together, spread their writes over the checkpoints instead of all in one
        self._next_write = time.monotonic() + write_interval * (0.5 + 0.5 * random.random())
        self._offsets: dict[tuple[str, int], int] = {}  # reflected by the unwritten changes
        # the last offset of each changelog partition in a committed transaction of this task
        self.changelog_committed: dict[tuple[str, int], int] = {}
        self.writes = 0  # SQLite transactions of checkpoints (tests read it)
        self.deferred: dict[str, Deferred] = {}  # tables whose rows wait (`defer`)
        self._write_all = False  # this write takes every row (`due`: memory full)
        self._spill_said = False  # a deferred table spilled past the bound: said once

    async def open_store(self) -> None:
        """Open the store (a corrupt or foreign file is set aside and a new one made)."""
        names = [t.name for t in self.tables]
        self.store = await asyncio.to_thread(open_store, self.path, self._identity, names)
        # a table's purge rule (a join's, `state/stream_join.py`): every write runs it
        purges = {t.name: getattr(t, "purge", None) for t in self.tables}
        self.store.purges = {name: purge for name, purge in purges.items() if purge is not None}

    async def open(self, reader: Restorer) -> None:
        """Open (or rebuild) the store, replay the changelog tail, build the caches."""
        await self.open_store()
        assert self.store is not None
        self.replayed = await reader.restore(
            self.store, describe_sources(self.tables, self.partition)
        )
        self.partitions = {
            t.name: TablePartition(
                t,
                self.partition,
                self.store,
                self._cache_entries,
                self._on_full,
                self.stage.partitions,
            )
            for t in self.tables
        }
        for part in self.partitions.values():
            if part.expiry is not None:
                part.expiry.load()  # index the keys of a table with a TTL by expiry
        stored = self.store.offsets()
        for t in self.tables:
            if t.source:
                at = stored.get((t.changelog.name, self.partition), -1)
                self.partitions[t.name].source_offset = at
        log.info("%s: open, %d changelog records replayed", self.path, self.replayed)

    def defer(self, name: str, source: Finality) -> None:
        """Table `name`'s rows reach the store only when they must (`deferred.py`); `source`
        (its join) says which are final. Call it once the store is open."""
        assert self.store is not None
        table = self.partitions[name].table
        ctp = (table.changelog.name, self.partition)
        retention = int(table.changelog.config.get("retention.ms", "-1"))
        max_age = retention / 2000 if retention > 0 else float("inf")
        self.deferred[name] = Deferred(source, self.store.offsets().get(ctp, -1), max_age)

    def snapshot(self, collector: RecordCollector) -> dict[str, dict[bytes, bytes | None]]:
        """Checkpoint step: take every dirty key (expired keys of a table with a TTL deleted
        first) and append it to its changelog partition."""
        changes = {}
        for name, part in self.partitions.items():
            if part.table.source:
                continue  # read-only: its rows come from its topic (see `write`)
            if part.expiry is not None:
                part.expiry.purge()  # expired keys: tombstones in this snapshot
            rows = part.take_dirty()
            if not rows:
                continue
            changes[name] = rows
            tp, add = (part.table.changelog.name, self.partition), collector.add
            for key, value in rows.items():
                add(tp, key, value, None, None)  # `append` to a known partition
        return changes

    def record(
        self, written: dict[tuple[str, int], int], source_offset: tuple[str, int, int] | None
    ) -> None:
        """Checkpoint step: the snapshot just committed reflects these changelog offsets
        (`written` may list other tasks' partitions too: ours are looked up, it is never
        walked) and this input offset; they wait for the next store write with its rows."""
        offsets, now = self._offsets, time.monotonic()
        for t in self.tables:
            ctp = (t.changelog.name, self.partition)
            if ctp in written:
                offsets[ctp] = self.changelog_committed[ctp] = written[ctp]
                if t.name in self.deferred:
                    self.deferred[t.name].recorded(written[ctp], now)
        if source_offset is not None:
            topic, partition, offset = source_offset
            offsets[(topic, partition)] = offset

    def due(self, final: bool = False, later: bool = False) -> bool:
        """Whether this checkpoint writes the store: the task's last one (`final`; a deferred
        table's rows still wait: `deferred.py`), the interval is over (unless the next
        checkpoint comes in a moment, `later`, and writes are not asked of every checkpoint),
        or the unwritten rows reached the cache's bound (every row, deferred ones too)."""
        if self.store is None:
            return False
        unwritten = sum(len(p.flushing) for p in self.partitions.values())
        self._write_all = unwritten >= self._cache_entries
        spilled = (
            [n for n in self.deferred if self.partitions[n].flushing] if self._write_all else []
        )
        if spilled and not self._spill_said:
            self._spill_said = True
            log.warning(
                "%s: %d rows unwritten, state_cache_entries is %d: the rows of %s go to SQLite "
                "(a write each, and a read for each one matched or updated again); raise "
                "state_cache_entries above the rows the partition holds",
                self.path, unwritten, self._cache_entries, ", ".join(sorted(spilled)),
            )  # fmt: skip
        if final or self._write_all:
            return True
        return time.monotonic() >= self._next_write and not (later and self.write_interval)

    async def write(self) -> None:
        """Checkpoint step: every change not written yet (all of them committed: a checkpoint
        writes only after its own transaction) and the offsets they reflect, in one SQLite
        transaction."""
        await write_stores([self])

    def take_write(self) -> StoreWrite | None:
        """What `write` writes, taken on the event loop (None: nothing)."""
        assert self.store is not None
        now = time.monotonic()
        self._next_write = now + self.write_interval
        offsets = self._offsets
        held = set()
        for name, deferred in self.deferred.items():
            at = None if self._write_all else deferred.held(now)
            if at is not None:
                held.add(name)
            offsets[(self.partitions[name].table.changelog.name, self.partition)] = (
                deferred.end if at is None else at
            )
        self._write_all = False
        changes = {}
        for name, part in self.partitions.items():
            if not part.flushing or part.table.source:
                continue
            if name in held:  # its rows wait in the overlay (a restore replays them), all but
                marker = self.deferred[name].source.marker  # the marker
                if marker in part.flushing:
                    changes[name] = {marker: part.flushing[marker]}
            else:  # a copy: a join's purge forgets rows of its overlay while the thread writes
                changes[name] = dict(part.flushing)
        followed = self._followed()
        for name, (rows, at) in followed.items():
            changes[name] = rows
            offsets[(self.partitions[name].table.changelog.name, self.partition)] = at
        if not (changes or offsets):
            return None
        # (no snapshot adds to the overlays meanwhile: the checkpoint's lock is held)
        return StoreWrite(self, self.store, changes, offsets, followed, held)

    def written(self, done: StoreWrite) -> None:
        """`done` is in SQLite: what the overlays and offsets no longer need to hold."""
        self._offsets = {}
        self.writes += 1
        for name, rows in done.changes.items():
            flushing = self.partitions[name].flushing
            if name in done.held or name in done.followed:  # a part of its overlay
                for key, value in rows.items():
                    if flushing.get(key, _GONE) is value:
                        del flushing[key]  # not replaced meanwhile: SQLite has it now
            else:  # SQLite has them all: the next snapshot starts anew
                self.partitions[name].flushing = {}
        for name, deferred in self.deferred.items():
            if name not in done.held:
                deferred.written()
        log.debug(
            "%s: wrote %s at %s",
            self.path, {n: len(c) for n, c in done.changes.items()}, done.offsets,
        )  # fmt: skip

    def _followed(self) -> dict[str, tuple[dict[bytes, bytes | None], int]]:
        """Read-only tables: the source rows applied since the last write, and their offset."""
        out = {}
        for name, part in self.partitions.items():
            if part.table.source and part.flushing:
                out[name] = (dict(part.flushing), part.source_offset)
        return out

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


class StoreWrite:
    """One store's due write: taken on the event loop, applied in a thread."""

    def __init__(
        self,
        tables: TaskTables,
        store: PartitionStore,
        changes: dict[str, dict[bytes, bytes | None]],
        offsets: dict[tuple[str, int], int],
        followed: dict[str, tuple[dict[bytes, bytes | None], int]],
        held: set[str],
    ) -> None:
        self.tables = tables
        self.store = store
        self.changes = changes
        self.offsets = offsets
        self.followed = followed
        self.held = held  # deferred tables whose rows wait


def _apply_all(writes: list[StoreWrite]) -> list[BaseException | None]:
    """In a thread: each write in its own SQLite transaction (the stores are separate files);
    one that fails does not stop the others."""
    outcomes: list[BaseException | None] = []
    for write in writes:
        try:
            write.store.apply(write.changes, write.offsets)
            outcomes.append(None)
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


WRITE_HOPS = 4  # thread hops a checkpoint's store writes are spread over, at most


async def write_stores(tables: list[TaskTables]) -> None:
    """Every due store's write, in a few thread hops (at hundreds of tasks, a hop each cost
    more than the writes; a few let big writes use more than one core); the first failure
    is raised once all were tried."""
    writes = [w for w in (t.take_write() for t in tables) if w is not None]
    if not writes:
        return
    hops = min(WRITE_HOPS, len(writes))
    parts = await asyncio.gather(
        *(asyncio.to_thread(_apply_all, writes[i::hops]) for i in range(hops))
    )
    outcomes: list[BaseException | None] = [None] * len(writes)
    for i, part in enumerate(parts):
        outcomes[i::hops] = part
    for write, error in zip(writes, outcomes, strict=True):
        if error is None:
            write.tables.written(write)
    error = next((e for e in outcomes if e is not None), None)
    if error is not None:
        raise error
