"""Standbys: local copies of partitions this worker does not own, kept warm from changelogs.

With `standby_replicas=N` the assignor names, for each partition of a stateful stage, N
workers other than its owner. Each of them opens that partition's store (the same file an
active task would use) and tails its changelog partitions into it, batch by batch, recording
the offset reached. When the partition later moves to one of them, its task finds the store
almost current and replays only the tail.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from aiokafka.structs import TopicPartition

from streamkit.graph import Stage
from streamkit.settings import Settings
from streamkit.state.compacted import CompactedReader, Fetched
from streamkit.state.task_tables import TaskTables

log = logging.getLogger(__name__)

Changes = dict[str, dict[bytes, bytes | None]]


class Standbys:
    def __init__(
        self, app_id: str, settings: Settings, stages: dict[str, Stage], client_id: str
    ) -> None:
        self._app_id = app_id
        self._settings = settings
        self._stages = stages  # source topic → its stage
        self._reader = CompactedReader(settings, client_id, "standby")
        self._lock = asyncio.Lock()  # `update` never closes a store while a batch is applied
        self.tables: dict[TopicPartition, TaskTables] = {}  # stage source tp → its store
        self._changelogs: dict[TopicPartition, tuple[TaskTables, str]] = {}
        self.applied = 0
        self._wake = asyncio.Event()
        self.interval = 0.2  # seconds between fetches while nothing is new

    def _workdir(self) -> Path:
        return self._settings.workdir

    async def update(self, wanted: set[TopicPartition]) -> None:
        """Keep exactly `wanted` as standbys (call before active tasks open their stores)."""
        async with self._lock:
            for tp in list(self.tables):
                if tp not in wanted:
                    self.tables.pop(tp).close()
            added = []
            for tp in sorted(wanted - set(self.tables)):
                stage = self._stages.get(tp.topic)
                if stage is None or not stage.tables:
                    continue
                tables = TaskTables(
                    self._app_id, self._workdir(), stage, tp.partition, 1000, on_full=_nothing
                )
                await tables.open_store()
                self.tables[tp] = tables
                added.append(tables)
            await self._follow(added)
        self._wake.set()
        if self.tables:
            log.info("standbys: %s", ", ".join(f"{t.topic}[{t.partition}]" for t in self.tables))

    async def _follow(self, added: list[TaskTables]) -> None:
        """Read every standby's changelog partitions; the new ones from their stored offsets."""
        self._changelogs = {}
        for tables in self.tables.values():
            for table in tables.tables:
                tp = TopicPartition(table.changelog.name, tables.partition)
                self._changelogs[tp] = (tables, table.name)
        for tp in list(self._reader.positions):
            if tp not in self._changelogs:
                del self._reader.positions[tp]
        stored: dict[TopicPartition, int | None] = {}
        known: dict[TopicPartition, str] = {}
        for tables in added:
            assert tables.store is not None
            offsets, ids = tables.store.offsets(), tables.store.topic_ids()
            for table in tables.tables:
                tp = TopicPartition(table.changelog.name, tables.partition)
                stored[tp] = offsets.get((tp.topic, tp.partition))
                if tp.topic in ids:
                    known[tp] = ids[tp.topic]
        ids = await self._reader.start(stored, self._wipe, known)
        for tables in added:
            assert tables.store is not None
            mine = {
                t.changelog.name: ids[t.changelog.name]
                for t in tables.tables
                if t.changelog.name in ids
            }
            if mine:
                await asyncio.to_thread(tables.store.set_topic_ids, mine)

    async def _wipe(self, tp: TopicPartition, _start: int) -> None:
        tables, name = self._changelogs[tp]
        assert tables.store is not None
        await asyncio.to_thread(tables.store.wipe, name, tp.topic, tp.partition)

    async def run(self) -> None:
        """The `standby` background task: apply changelog batches as they come."""
        while True:
            if not self._reader.positions:
                self._wake.clear()
                await self._wake.wait()
                continue
            async with self._lock:
                fetched = await self._reader.fetch(self._wipe)
                applied = await self._apply(fetched)
            if not applied:
                await asyncio.sleep(self.interval)

    async def _apply(self, fetched: dict[TopicPartition, Fetched]) -> int:
        per_store: dict[int, tuple[TaskTables, Changes, dict[tuple[str, int], int]]] = {}
        count = 0
        for tp, got in fetched.items():
            target = self._changelogs.get(tp)
            if target is None or not got.rows:
                continue  # no longer a standby, or nothing new
            tables, name = target
            _, changes, offsets = per_store.setdefault(id(tables), (tables, {}, {}))
            changes.setdefault(name, {}).update(got.rows)  # the last value of a key wins
            offsets[(tp.topic, tp.partition)] = got.next_offset - 1
            count += len(got.rows)
        for tables, changes, offsets in per_store.values():
            assert tables.store is not None
            await asyncio.to_thread(tables.store.apply, changes, offsets)
        self.applied += count
        return count

    async def close(self) -> None:
        async with self._lock:
            for tables in self.tables.values():
                tables.close()
            self.tables.clear()
            self._changelogs = {}
            self._reader.positions.clear()
        await self._reader.close()


def _nothing() -> None:
    return None
