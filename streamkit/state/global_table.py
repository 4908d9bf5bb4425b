"""Global tables: every partition of a topic, copied into every worker, readable by any key.

`products = app.global_table("products", source=catalog)` declares one. Each worker (no
consumer group: every worker reads everything) keeps the latest value of every key of the
topic in memory, backed by a local SQLite file with the offset reached per partition, so a
restart reads only what is new. At start the worker catches up to the end of every partition
(its last stable offset: read_committed) *before* it joins the group, so no agent ever sees
a half-loaded table; then the background task `global` keeps following the topic.

Any code of any agent, in any stage, can read it (`products[k]`, `products.get(k)`, `in`):
unlike a partitioned table it needs no co-partitioning and no key_by. It is read-only (produce
to the topic to change it) and held in memory on every worker: for reference data (catalogs,
rates, settings), not for state that grows with the stream. As with Kafka Streams' global
tables, a lookup sees the topic as far as this worker has read it; updates are not aligned
with the stream's event time or with its checkpoints.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from aiokafka.structs import TopicPartition

from streamkit.runtime.clients import make_consumer
from streamkit.serde import RAW, Codec, DecodeError, codec_for
from streamkit.settings import Settings
from streamkit.state.changelog_fetch import ChangelogFetcher
from streamkit.state.store import PartitionStore, open_store
from streamkit.topics import Topic

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
_ROWS = "rows"


class GlobalTableNotReady(Exception):
    """A global table read where no worker has loaded it (outside a worker, or before start)."""


class GlobalTable(Generic[K, V]):
    """A read-only mapping of all of `source`'s keys to their latest value."""

    def __init__(
        self,
        name: str,
        source: Topic,
        *,
        key_type: Any = str,
        value_type: Any = None,
        default: Callable[[], V] | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.default = default
        self.key_codec: Codec[Any] = RAW if key_type is bytes else codec_for(key_type)
        self.value_codec: Codec[Any] = codec_for(value_type)
        self.data: dict[K, V] = {}
        self.ready = False
        self.applied = 0  # records applied by this process (loaded or followed)
        self.skipped = 0  # records that did not decode

    def __repr__(self) -> str:
        return f"GlobalTable({self.name!r}, source={self.source.name!r})"

    def _data(self) -> dict[K, V]:
        if not self.ready:
            raise GlobalTableNotReady(
                f"global table {self.name} is not loaded: it is read inside a worker, "
                "which loads it before its agents start"
            )
        return self.data

    def __getitem__(self, key: K) -> V:
        data = self._data()
        if key in data:
            return data[key]
        if self.default is None:
            raise KeyError(key)
        return self.default()

    def get(self, key: K, default: V | None = None) -> V | None:
        return self._data().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data()

    def __len__(self) -> int:
        return len(self._data())

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data()))

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(list(self._data().items()))

    def apply(self, rows: list[tuple[bytes, bytes | None]]) -> None:
        """Records of the topic, in offset order: the last value of a key wins, None deletes."""
        decode_key, decode_value, data = self.key_codec.decode, self.value_codec.decode, self.data
        for key, value in rows:
            try:
                k = decode_key(key)
                if value is None:
                    data.pop(k, None)
                else:
                    data[k] = decode_value(value)
            except DecodeError as exc:  # bad input never stops a worker: skipped, logged
                self.skipped += 1
                log.warning("global table %s: record with key %r skipped: %s", self.name, key, exc)
        self.applied += len(rows)


def store_path(workdir: Path, app_id: str, name: str) -> Path:
    return workdir / app_id / "global" / f"{name}.sqlite"


class GlobalTables:
    """The runtime side, one per worker: load every global table, then follow them."""

    def __init__(
        self,
        app_id: str,
        tables: list[GlobalTable[Any, Any]],
        settings: Settings,
        client_id: str,
        interval: float = 0.2,
    ) -> None:
        self._app_id = app_id
        self.tables = tables
        self._settings = settings
        self._client_id = client_id
        self._interval = interval
        self._stores: dict[str, PartitionStore] = {}
        self._positions: dict[TopicPartition, int] = {}  # next offset to read
        self._owner: dict[TopicPartition, GlobalTable[Any, Any]] = {}
        self._fetcher = ChangelogFetcher(settings, client_id)

    async def start(self) -> None:
        """Open the local copies and read every partition up to its current end."""
        if not self.tables:
            return
        consumer = make_consumer(self._settings, group_id=None, client_id=self._client_id)
        await consumer.start()
        try:
            for table in self.tables:
                await self._open(table, consumer)
            ends = await consumer.end_offsets(list(self._positions))
        finally:
            await consumer.stop()
        behind = {tp: at for tp, at in self._positions.items() if at < ends[tp]}
        while behind:
            reached = await self._round(behind)
            behind = {tp: at for tp, at in reached.items() if at < ends[tp]}
        for table in self.tables:
            table.ready = True
            log.info("global table %s: %d keys loaded", table.name, len(table.data))

    async def _open(self, table: GlobalTable[Any, Any], consumer: Any) -> None:
        identity = {"app": self._app_id, "global": table.name, "source": table.source.name}
        path = store_path(self._settings.workdir, self._app_id, table.name)
        store = await asyncio.to_thread(open_store, path, identity, [_ROWS])
        self._stores[table.name] = store
        table.data.clear()
        table.apply(list(store.scan(_ROWS)))
        stored = store.offsets()
        count = table.source.partitions or len(consumer.partitions_for_topic(table.source.name))
        for p in range(count):
            tp = TopicPartition(table.source.name, p)
            self._positions[tp] = stored.get((tp.topic, p), -1) + 1
            self._owner[tp] = table

    async def _round(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """One fetch from `positions`: apply and store what came; returns the new positions."""
        fetched = await self._fetcher.fetch(positions)
        per_store: dict[str, tuple[dict[bytes, bytes | None], dict[tuple[str, int], int]]] = {}
        reached = dict(positions)
        for tp, got in fetched.items():
            if got.out_of_range:
                log.warning("global table source %s[%d]: offset out of range", *tp)
                continue
            if got.rows:
                table = self._owner[tp]
                table.apply(got.rows)
                rows, offsets = per_store.setdefault(table.name, ({}, {}))
                rows.update(got.rows)
                offsets[(tp.topic, tp.partition)] = got.next_offset - 1
            reached[tp] = got.next_offset
            self._positions[tp] = got.next_offset
        for name, (rows, offsets) in per_store.items():
            await asyncio.to_thread(self._stores[name].apply, {_ROWS: rows}, offsets)
        return reached

    async def run(self) -> None:
        """The `global` background task: keep following every partition."""
        if not self.tables:
            return
        while True:
            before = dict(self._positions)
            after = await self._round(before)
            if after == before:
                await asyncio.sleep(self._interval)

    async def close(self) -> None:
        await self._fetcher.close()
        for store in self._stores.values():
            store.close()
        self._stores.clear()
