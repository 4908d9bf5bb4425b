"""ChangelogReader: brings a store up to date from its changelog partitions.

One reader per worker (a consumer without a group, read_committed). `restore` reads each
changelog partition from the offset after the one the store reflects up to the partition's
end as it was when the restore began, and writes the records into SQLite in batches of
`BATCH` together with the offset reached, so an interrupted restore resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.structs import TopicPartition

from streamkit.runtime.clients import make_consumer
from streamkit.settings import Settings
from streamkit.state.store import PartitionStore

log = logging.getLogger(__name__)

BATCH = 20_000


class ChangelogReader:
    def __init__(self, settings: Settings, client_id: str) -> None:
        self._settings = settings
        self._client_id = client_id
        self._consumer: Any = None  # made on the first restore: stateless apps need none
        self._lock = asyncio.Lock()  # one restore at a time: they share the consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def restore(self, store: PartitionStore, sources: dict[str, TopicPartition]) -> int:
        """`sources`: table name → its changelog partition. Returns records replayed."""
        async with self._lock:
            if self._consumer is None:
                self._consumer = make_consumer(
                    self._settings,
                    group_id=None,
                    client_id=self._client_id,
                    max_poll_records=BATCH,
                    fetch_max_wait_ms=50,  # restoring: never idle at a partition's end
                )
                await self._consumer.start()
            return await self._restore(store, sources)

    async def _restore(self, store: PartitionStore, sources: dict[str, TopicPartition]) -> int:
        consumer = self._consumer
        started = time.monotonic()
        table_of = {tp: table for table, tp in sources.items()}
        tps = list(table_of)
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        stored = store.offsets()
        pending = {}
        for tp in tps:
            start = stored.get((tp.topic, tp.partition), -1) + 1
            if start < ends[tp]:
                consumer.seek(tp, start)
                pending[tp] = ends[tp]
        replayed = 0
        writing: asyncio.Task[None] | None = None  # apply batch n while fetching n+1
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            changes: dict[str, dict[bytes, bytes | None]] = {}
            reached: dict[tuple[str, int], int] = {}
            for tp, records in batch.items():
                rows = changes.setdefault(table_of[tp], {})
                for rec in records:
                    rows[rec.key] = rec.value
                if records:
                    reached[(tp.topic, tp.partition)] = records[-1].offset
                    replayed += len(records)
            if reached:
                if writing is not None:
                    await writing
                writing = asyncio.create_task(asyncio.to_thread(store.apply, changes, reached))
            for tp in list(pending):
                if await consumer.position(tp) >= pending[tp]:
                    del pending[tp]
        if writing is not None:
            await writing
        consumer.assign([])
        if replayed:
            elapsed = time.monotonic() - started
            log.info(
                "restored %d changelog records into %s in %.2fs (%.0f/s)",
                replayed,
                store.path.name,
                elapsed,
                replayed / max(elapsed, 1e-9),
            )
        return replayed


def describe_sources(tables: list[Any], partition: int) -> dict[str, TopicPartition]:
    return {t.name: TopicPartition(t.changelog.name, partition) for t in tables}
