"""ChangelogReader: brings stores up to date from their changelog partitions.

One reader per worker (a consumer without a group, read_committed). Tasks ask for a restore
with `restore(store, sources)`; the reader's background task `restore` waits `GATHER` for the
other tasks of the same rebalance, then replays every waiting request in one round on the one
consumer (fetches are shared instead of queued). Each changelog partition is read from the
offset after the one its store reflects up to its end as it was when the round began. Each
fetch (up to `BATCH` records) is written into SQLite per store, with the offset reached, so an
interrupted restore resumes where it stopped; each write overlaps the next fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.structs import TopicPartition

from streamkit.runtime.clients import make_consumer
from streamkit.settings import Settings
from streamkit.state.store import PartitionStore

log = logging.getLogger(__name__)

BATCH = 100_000  # records per fetch, over all partitions being restored
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


class ChangelogReader:
    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._consumer: Any = None  # made on the first restore: stateless apps need none
        self._queue: list[_Request] = []
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

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
            self._consumer = make_consumer(
                self._settings,
                group_id=None,
                client_id=self._client_id,
                max_poll_records=BATCH,
                fetch_max_wait_ms=50,  # restoring: never idle at a partition's end
            )
            await self._consumer.start()
        consumer = self._consumer
        started = time.monotonic()
        owner: dict[TopicPartition, tuple[_Request, str]] = {}
        for request in requests:
            for table, tp in request.sources.items():
                owner[tp] = (request, table)
        consumer.assign(list(owner))
        ends = await consumer.end_offsets(list(owner))
        ends_left: dict[TopicPartition, int] = {}
        for request in requests:
            stored = request.store.offsets()
            for tp in request.sources.values():
                start = stored.get((tp.topic, tp.partition), -1) + 1
                if start < ends[tp]:
                    consumer.seek(tp, start)
                    ends_left[tp] = ends[tp]
                    request.pending.add(tp)
        writing: asyncio.Task[None] | None = None
        self._finish(requests, started)
        while ends_left:
            batch = await consumer.getmany(*ends_left, timeout_ms=500)
            work = self._collect(batch, owner)
            if writing is not None:
                await writing
            writing = asyncio.create_task(_write(work)) if work else None
            for tp in list(ends_left):
                if await consumer.position(tp) >= ends_left[tp]:
                    del ends_left[tp]
                    owner[tp][0].pending.discard(tp)
            if writing is not None and any(not r.pending and not r.done.done() for r in requests):
                await writing  # a finished store must hold everything before its task runs
                writing = None
            self._finish(requests, started)
        if writing is not None:
            await writing
        self._finish(requests, started)
        with contextlib.suppress(Exception):
            consumer.assign([])

    @staticmethod
    def _collect(
        batch: dict[TopicPartition, list[Any]], owner: dict[TopicPartition, tuple[_Request, str]]
    ) -> Work:
        work: Work = {}
        for tp, records in batch.items():
            if not records:
                continue
            request, table = owner[tp]
            _, changes, reached = work.setdefault(id(request), (request.store, {}, {}))
            rows = changes.setdefault(table, {})
            for rec in records:
                rows[rec.key] = rec.value
            reached[(tp.topic, tp.partition)] = records[-1].offset
            request.replayed += len(records)
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
