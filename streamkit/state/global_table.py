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

from streamkit.serde import RAW, Codec, DecodeError, codec_for
from streamkit.settings import Settings
from streamkit.state.compacted import CompactedReader
from streamkit.state.store import PartitionStore, open_store
from streamkit.topics import Topic

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")


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
    """The runtime side, one per worker: load every global table, then follow them.

    Each table's SQLite file holds one table of rows per partition of its topic (`"0"`,
    `"1"`, ...), so a partition whose offset vanished (see `state/compacted.py`) is wiped and
    read again alone."""

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
        self._interval = interval
        self._stores: dict[str, PartitionStore] = {}
        self._owner: dict[TopicPartition, GlobalTable[Any, Any]] = {}
        self._reader = CompactedReader(settings, client_id, "global table")

    async def start(self) -> None:
        """Open the local copies and read every partition up to its current end."""
        if not self.tables:
            return
        stored: dict[TopicPartition, int | None] = {}
        known: dict[TopicPartition, str] = {}
        for table in self.tables:
            await self._open(table, stored, known)
        ids = await self._reader.start(stored, self._wipe, known)
        for table in self.tables:
            if table.source.name in ids:
                mine = {table.source.name: ids[table.source.name]}
                await asyncio.to_thread(self._stores[table.name].set_topic_ids, mine)
        ends = await self._reader.ends(list(self._owner))
        while any(at < ends[tp] for tp, at in self._reader.positions.items()):
            await self._round()
        for table in self.tables:
            table.ready = True
            log.info("global table %s: %d keys loaded", table.name, len(table.data))

    async def _open(
        self,
        table: GlobalTable[Any, Any],
        stored: dict[TopicPartition, int | None],
        known: dict[TopicPartition, str],
    ) -> None:
        topic = table.source.name
        count = table.source.partitions or await self._reader.partitions(topic)
        identity = {"app": self._app_id, "global": table.name, "source": topic}
        path = store_path(self._settings.workdir, self._app_id, table.name)
        names = [str(p) for p in range(count)]
        store = await asyncio.to_thread(open_store, path, identity, names)
        self._stores[table.name] = store
        _load(table, store)
        offsets, ids = store.offsets(), store.topic_ids()
        for p in range(count):
            tp = TopicPartition(topic, p)
            stored[tp] = offsets.get((topic, p))
            if topic in ids:
                known[tp] = ids[topic]
            self._owner[tp] = table

    async def _wipe(self, tp: TopicPartition, _start: int) -> None:
        table = self._owner[tp]
        store = self._stores[table.name]
        await asyncio.to_thread(store.wipe, str(tp.partition), tp.topic, tp.partition)
        _load(table, store)  # the other partitions' rows stay

    async def _round(self) -> bool:
        """One fetch from every position: apply and store what came; whether anything did."""
        fetched = await self._reader.fetch(self._wipe)
        per_store: dict[str, tuple[dict[str, dict[bytes, bytes | None]], dict[Any, int]]] = {}
        for tp, got in fetched.items():
            if got.rows:
                table = self._owner[tp]
                table.apply(got.rows)
                changes, offsets = per_store.setdefault(table.name, ({}, {}))
                changes.setdefault(str(tp.partition), {}).update(got.rows)
                offsets[(tp.topic, tp.partition)] = got.next_offset - 1
        for name, (changes, offsets) in per_store.items():
            await asyncio.to_thread(self._stores[name].apply, changes, offsets)
        return bool(per_store)

    async def run(self) -> None:
        """The `global` background task: keep following every partition."""
        if not self.tables:
            return
        while True:
            if not await self._round():
                await asyncio.sleep(self._interval)

    async def close(self) -> None:
        await self._reader.close()
        for store in self._stores.values():
            store.close()
        self._stores.clear()


def _load(table: GlobalTable[Any, Any], store: PartitionStore) -> None:
    """The table's rows as its SQLite file holds them (every partition)."""
    table.data.clear()
    for name in store.tables:
        table.apply(list(store.scan(name)))
