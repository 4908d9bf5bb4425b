"""Standbys: local copies of partitions this worker does not own, kept warm from changelogs.

With `standby_replicas=N` the assignor names, for each partition of a stateful stage, N
workers other than its owner. Each of them opens that partition's store (the same file an
active task would use) and tails its changelog partitions into it, batch by batch, recording
the offset reached. When the partition later moves to one of them, its task finds the store
almost current and replays only the tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from aiokafka.structs import TopicPartition

from streamkit.graph import Stage
from streamkit.runtime.clients import make_consumer
from streamkit.settings import Settings
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
        self._client_id = client_id
        self._consumer: Any = None
        self._lock = asyncio.Lock()  # `update` never closes a store while a batch is applied
        self.tables: dict[TopicPartition, TaskTables] = {}  # stage source tp → its store
        self._changelogs: dict[TopicPartition, tuple[TaskTables, str]] = {}
        self.applied = 0
        self._wake = asyncio.Event()

    def _workdir(self) -> Path:
        return self._settings.workdir

    async def update(self, wanted: set[TopicPartition]) -> None:
        """Keep exactly `wanted` as standbys (call before active tasks open their stores)."""
        async with self._lock:
            for tp in list(self.tables):
                if tp not in wanted:
                    self.tables.pop(tp).close()
            for tp in sorted(wanted - set(self.tables)):
                stage = self._stages.get(tp.topic)
                if stage is None or not stage.tables:
                    continue
                tables = TaskTables(
                    self._app_id, self._workdir(), stage, tp.partition, 1000, on_full=_nothing
                )
                await tables.open_store()
                self.tables[tp] = tables
            await self._follow()
        self._wake.set()
        if self.tables:
            log.info("standbys: %s", ", ".join(f"{t.topic}[{t.partition}]" for t in self.tables))

    async def _follow(self) -> None:
        """Point the consumer at every standby's changelog partitions, from stored offsets."""
        self._changelogs = {}
        for tables in self.tables.values():
            for table in tables.tables:
                tp = TopicPartition(table.changelog.name, tables.partition)
                self._changelogs[tp] = (tables, table.name)
        if self._consumer is None:
            if not self._changelogs:
                return
            self._consumer = make_consumer(
                self._settings, group_id=None, client_id=self._client_id, max_poll_records=20_000
            )
            await self._consumer.start()
        self._consumer.assign(list(self._changelogs))
        for tp, (tables, _) in self._changelogs.items():
            assert tables.store is not None
            stored = tables.store.offsets().get((tp.topic, tp.partition))
            if stored is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, stored + 1)

    async def run(self) -> None:
        """The `standby` background task: apply changelog batches as they come."""
        while True:
            if not self._changelogs:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = await self._consumer.getmany(timeout_ms=200)
            if not batch:
                continue
            async with self._lock:
                await self._apply(batch)

    async def _apply(self, batch: dict[TopicPartition, list[Any]]) -> None:
        per_store: dict[
            int, tuple[TaskTables, dict[str, dict[bytes, bytes | None]], dict[Any, int]]
        ] = {}
        for tp, records in batch.items():
            target = self._changelogs.get(tp)
            if target is None or not records:
                continue  # no longer a standby
            tables, name = target
            _, changes, offsets = per_store.setdefault(id(tables), (tables, {}, {}))
            rows = changes.setdefault(name, {})
            for rec in records:
                rows[rec.key] = rec.value
            offsets[(tp.topic, tp.partition)] = records[-1].offset
            self.applied += len(records)
        for tables, changes, offsets in per_store.values():
            assert tables.store is not None
            await asyncio.to_thread(tables.store.apply, changes, offsets)

    async def close(self) -> None:
        async with self._lock:
            for tables in self.tables.values():
                tables.close()
            self.tables.clear()
            self._changelogs = {}
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()


def _nothing() -> None:
    return None
