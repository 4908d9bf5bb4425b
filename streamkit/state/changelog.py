"""ChangelogReader: brings stores up to date from their changelog partitions.

One reader per worker; tasks ask for a restore with `restore(store, sources)`. When a task
of a stateful stage starts, its store is brought up to date in these numbered steps (the
same text is in docs/architecture.md, "Recovery"):

1. **Open.** `open_store` opens the file (or creates it). `PRAGMA quick_check` failing, a
   file that is not SQLite (or an error whose text quotes corrupt bytes that are not UTF-8,
   which Python's sqlite3 raises as `UnicodeDecodeError`), or an identity that differs
   (another app, stage, partition or table set): the file (and its WAL) is renamed
   `*.bad-<ms>`, logged, and a fresh store is made. An error of the disk rather than the
   file (`sqlite3.OperationalError`: full, read-only, I/O) sets nothing aside:
   `StoreUnavailable` (its message says if the file system is read-only or full) fails the
   worker.
2. **Gather.** The task asks the `ChangelogReader` (one per worker, background task
   `restore`) for a restore. The reader waits 50 ms for the other tasks of the same
   rebalance, then takes every waiting request into one round.
3. **Check.** For each changelog partition: its end (last stable offset) as of the start of
   the round, its log start, its high watermark and its topic's id, asked all at once (the
   reader's client connected when the worker started). The position is the stored offset
   + 1 (the log start for a store without one). A position before the log start or past the
   high watermark, or a topic id other than the one the store recorded, is a vanished
   offset: the table's rows are wiped and the partition is read from its log start. The
   stores record the topics' ids (every store's in one thread hop).
4. **Replay.** Fetch from every position up to the end through the one reader of compacted
   topics; each fetch is written into the right stores in one thread hop, with the offsets
   reached, overlapping the next fetch. A store's request completes once its last write is
   done.
5. **Run.** The task turns `RUNNING` and the consumer resumes the input at the group's
   committed offset.

Records come through the one reader of compacted topics (`state/compacted.py`), which
handles a vanished offset (retention, a changelog created again) as every reader does. Each
fetch is written into SQLite per store with the offset reached, so an interrupted restore
resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.structs import TopicPartition

from streamkit.settings import Settings
from streamkit.state.compacted import CompactedReader, Fetched
from streamkit.state.store import PartitionStore

log = logging.getLogger(__name__)

GATHER = 0.05  # seconds a round waits for the other tasks of a rebalance to ask too
Changes = dict[str, dict[bytes, bytes | None]]
Work = dict[int, tuple[PartitionStore, Changes, dict[tuple[str, int], int]]]  # per store


@dataclass
class _Request:
    store: PartitionStore
    sources: dict[str, TopicPartition]  # table name → changelog partition
    done: asyncio.Future[int]
    pending: set[TopicPartition] = field(default_factory=set)
    replayed: int = 0


class Restorer(Protocol):
    """What a task's tables restore through: the worker's `ChangelogReader`, or the testing
    kit's in-memory changelogs."""

    async def restore(self, store: PartitionStore, sources: dict[str, TopicPartition]) -> int:
        """Replay `sources` (table name → changelog partition) into `store` from the offset
        after the one it reflects; the number of records replayed."""


class ChangelogReader:
    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._reader: CompactedReader | None = None  # made on the first restore
        self._queue: list[_Request] = []
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._reader is not None:
            await self._reader.close()

    async def connect(self) -> None:
        """Connect the reader now, beside the worker's other clients, rather than on the
        first restore."""
        await self._compacted().connect()

    def _compacted(self) -> CompactedReader:
        if self._reader is None:
            self._reader = CompactedReader(self._settings, self._client_id, "restore")
        return self._reader

    async def stable_ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The last stable offset of each of `tps`: where step 3 ends a restore."""
        return await self._compacted().ends(tps)

    async def restore(self, store: PartitionStore, sources: dict[str, TopicPartition]) -> int:
        """Replay `sources` into `store`; returns the number of records replayed."""
        request = _Request(store, sources, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._wake.set()
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="streamkit-restore")
        return await request.done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(GATHER)
            self._wake.clear()
            requests, self._queue = self._queue, []
            if not requests:
                continue
            try:
                await self._round(requests)
            except Exception as exc:
                for request in requests:
                    if not request.done.done():
                        request.done.set_exception(exc)

    async def _round(self, requests: list[_Request]) -> None:
        reader = self._compacted()
        reader.positions.clear()
        started = time.monotonic()
        owner: dict[TopicPartition, tuple[_Request, str]] = {}
        stored: dict[TopicPartition, int | None] = {}
        known: dict[TopicPartition, str] = {}
        for request in requests:
            offsets, ids = request.store.offsets(), request.store.topic_ids()
            for table, tp in request.sources.items():
                owner[tp] = (request, table)
                stored[tp] = offsets.get((tp.topic, tp.partition))
                if tp.topic in ids:
                    known[tp] = ids[tp.topic]
        writing: asyncio.Task[None] | None = None

        async def wipe(tp: TopicPartition, _start: int) -> None:
            nonlocal writing
            if writing is not None:  # the store's writer connection: one thread at a time
                await writing
                writing = None
            request, table = owner[tp]
            await asyncio.to_thread(request.store.wipe, table, tp.topic, tp.partition)

        ends, ids = await asyncio.gather(
            reader.ends(list(owner)),  # read_committed: last stable offsets
            reader.start(stored, wipe, known),
        )
        new_ids = []
        for request in requests:
            mine = {tp.topic: ids[tp.topic] for tp in request.sources.values() if tp.topic in ids}
            if mine and any(request.store.topic_ids().get(t) != i for t, i in mine.items()):
                new_ids.append((request.store, mine))
        if new_ids:  # every store's in one thread hop
            await asyncio.to_thread(_set_topic_ids, new_ids)
        for tp, position in list(reader.positions.items()):
            if position < ends[tp]:
                owner[tp][0].pending.add(tp)
            else:
                del reader.positions[tp]
        self._finish(requests, started)
        while reader.positions:
            fetched = await reader.fetch(wipe)
            work = self._collect(fetched, owner)
            if writing is not None:
                await writing
            writing = asyncio.create_task(_write(work)) if work else None
            for tp, got in fetched.items():
                if got.next_offset >= ends[tp]:
                    reader.positions.pop(tp, None)
                    owner[tp][0].pending.discard(tp)
            if writing is not None and any(not r.pending and not r.done.done() for r in requests):
                await writing  # a finished store must hold everything before its task runs
                writing = None
            self._finish(requests, started)
        if writing is not None:
            await writing
        self._finish(requests, started)

    @staticmethod
    def _collect(
        fetched: dict[TopicPartition, Fetched], owner: dict[TopicPartition, tuple[_Request, str]]
    ) -> Work:
        work: Work = {}
        for tp, got in fetched.items():
            if not got.rows:
                continue
            request, table = owner[tp]
            _, changes, reached = work.setdefault(id(request), (request.store, {}, {}))
            changes.setdefault(table, {}).update(got.rows)  # the last value of a key wins
            reached[(tp.topic, tp.partition)] = got.next_offset - 1
            request.replayed += len(got.rows)
        return work

    @staticmethod
    def _finish(requests: list[_Request], started: float) -> None:
        for request in requests:
            if request.pending or request.done.done():
                continue
            request.done.set_result(request.replayed)
            if request.replayed:
                elapsed = time.monotonic() - started
                log.info(
                    "restored %d changelog records into %s in %.2fs (%.0f/s)",
                    request.replayed,
                    request.store.path.name,
                    elapsed,
                    request.replayed / max(elapsed, 1e-9),
                )


def _set_topic_ids(new_ids: list[tuple[PartitionStore, dict[str, str]]]) -> None:
    for store, ids in new_ids:
        store.set_topic_ids(ids)


async def _write(
    work: dict[int, tuple[PartitionStore, Changes, dict[tuple[str, int], int]]],
) -> None:
    def apply_all() -> None:
        for store, changes, reached in work.values():
            store.apply(changes, reached)

    await asyncio.to_thread(apply_all)


def describe_sources(tables: list[Any], partition: int) -> dict[str, TopicPartition]:
    return {t.name: TopicPartition(t.changelog.name, partition) for t in tables}
