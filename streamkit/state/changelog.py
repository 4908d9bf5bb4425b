"""ChangelogReader: brings stores up to date from their changelog partitions.

One reader per worker. Tasks ask for a restore with `restore(store, sources)`; the reader's
background task `restore` waits `GATHER` for the other tasks of the same rebalance, then
replays every waiting request in one round (fetches are shared instead of queued). Each
changelog partition is read from the offset after the one its store reflects up to its end
(last stable offset) as it was when the round began. Records come through `ChangelogFetcher`
(raw read_committed fetches, keys and values only); offsets come from a group-less consumer.
Each fetch is written into SQLite per store, with the offset reached, so an interrupted
restore resumes where it stopped; each write overlaps the next fetch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.structs import TopicPartition

from streamkit.runtime.clients import make_consumer
from streamkit.settings import Settings
from streamkit.state.changelog_fetch import ChangelogFetcher, Fetched
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
        self._consumer: Any = None  # made on the first restore: stateless apps need none
        self._fetcher: ChangelogFetcher | None = None
        self._queue: list[_Request] = []
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._fetcher is not None:
            await self._fetcher.close()

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
        if self._consumer is None:
            self._consumer = make_consumer(self._settings, group_id=None, client_id=self._client_id)
            await self._consumer.start()
            self._fetcher = ChangelogFetcher(self._settings, self._client_id)
        consumer, fetcher = self._consumer, self._fetcher
        assert fetcher is not None
        started = time.monotonic()
        owner: dict[TopicPartition, tuple[_Request, str]] = {}
        for request in requests:
            for table, tp in request.sources.items():
                owner[tp] = (request, table)
        ends = await consumer.end_offsets(list(owner))  # read_committed: last stable offsets
        positions: dict[TopicPartition, int] = {}
        for request in requests:
            stored = request.store.offsets()
            for tp in request.sources.values():
                start = stored.get((tp.topic, tp.partition), -1) + 1
                if start < ends[tp]:
                    positions[tp] = start
                    request.pending.add(tp)
        writing: asyncio.Task[None] | None = None
        self._finish(requests, started)
        while positions:
            fetched = await fetcher.fetch(positions)
            for tp in [tp for tp, f in fetched.items() if f.out_of_range]:
                # the stored offset was compacted or deleted away: from the log start
                positions[tp] = (await consumer.beginning_offsets([tp]))[tp]
                del fetched[tp]
            work = self._collect(fetched, owner)
            if writing is not None:
                await writing
            writing = asyncio.create_task(_write(work)) if work else None
            for tp, got in fetched.items():
                positions[tp] = got.next_offset
                if got.next_offset >= ends[tp]:
                    del positions[tp]
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


async def _write(
    work: dict[int, tuple[PartitionStore, Changes, dict[tuple[str, int], int]]],
) -> None:
    def apply_all() -> None:
        for store, changes, reached in work.values():
            store.apply(changes, reached)

    await asyncio.to_thread(apply_all)


def describe_sources(tables: list[Any], partition: int) -> dict[str, TopicPartition]:
    return {t.name: TopicPartition(t.changelog.name, partition) for t in tables}
