"""What the demo knows about the running pipeline, read from Kafka itself.

`Progress`: each stage's input partitions: end offsets vs the group's committed offsets
(lag), and the committed offsets' growth per second (events/s per stage and partition).
`Outputs`: a read_committed consumer of the output topics: sessions, trending, totals,
dead letters, late events and the enriched events; and what the pipeline's own sinks wrote
to the local sink (a SQLite table and JSON lines, files a person can open).
`window_watermarks`: the watermark each window table's partitions have committed, read from
the workers' stores.
"""

from __future__ import annotations

import collections
import contextlib
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from streamkit.eventtime import NO_WATERMARK
from streamkit.graph import Stage
from streamkit.runtime.dlq import describe
from streamkit.sinks.jsonlines import committed_lines
from streamkit.state.task_tables import store_path
from streamkit.state.window_table import WATERMARK_ROW
from streamkit.windows import merge_top


@dataclass
class StageLoad:
    name: str
    topic: str
    partitions: int
    end: dict[int, int] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    rate: dict[int, float] = field(default_factory=dict)  # committed offsets per second

    @property
    def lag(self) -> int:
        """Records not yet committed by the stage. Under exactly-once the last offset of a
        partition is often a transaction marker, never consumed: a gap of 1 is no lag."""
        gaps = [e - self.committed.get(p, 0) for p, e in self.end.items()]
        return sum(g for g in gaps if g > 1)

    @property
    def processed(self) -> int:
        return sum(self.committed.values())


class Progress:
    """Committed vs end offsets of every stage's input, sampled by `sample()`."""

    def __init__(self, bootstrap: str, group: str, stages: list[Stage]) -> None:
        self._bootstrap = bootstrap
        self._group = group
        self.stages = [
            StageLoad(st.name, st.source.name, st.source.partitions or 1) for st in stages
        ]
        self._admin: Any = None
        self._consumer: Any = None
        self._last: tuple[float, dict[tuple[str, int], int]] | None = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap, isolation_level="read_committed"
        )
        await self._consumer.start()

    async def stop(self) -> None:
        if self._admin is not None:
            await self._admin.close()
        if self._consumer is not None:
            await self._consumer.stop()

    async def sample(self) -> None:
        tps = [TopicPartition(s.topic, p) for s in self.stages for p in range(s.partitions)]
        ends = await self._consumer.end_offsets(tps)
        offsets = await self._admin.list_consumer_group_offsets(self._group)
        committed = {(tp.topic, tp.partition): m.offset for tp, m in offsets.items()}
        now = time.monotonic()
        for s in self.stages:
            for p in range(s.partitions):
                s.end[p] = ends[TopicPartition(s.topic, p)]
                at = committed.get((s.topic, p), 0)
                if self._last is not None:
                    then, before = self._last
                    s.rate[p] = max(0, at - before.get((s.topic, p), 0)) / max(now - then, 1e-3)
                s.committed[p] = at
        self._last = (now, committed)

    @property
    def total_lag(self) -> int:
        return sum(s.lag for s in self.stages)


class Outputs:
    """Reads the pipeline's outputs as they commit; keeps what the view and checks need."""

    def __init__(self, bootstrap: str, topics: dict[str, str], sink_dir: Path, top: int) -> None:
        self._bootstrap = bootstrap
        self.topics = topics  # role → topic name
        self._role = {name: role for role, name in topics.items()}
        self._top = top
        self.counts: collections.Counter[str] = collections.Counter()
        self.sessions: list[tuple[str, int, int, int, int]] = []
        self.totals: dict[str, int] = {}
        self.alerts: list[tuple[str, int, int]] = []  # fraud: (user, window end, purchases)
        self.trending: dict[tuple[int, int], dict[str, list[list[Any]]]] = {}
        self.dead_reasons: collections.Counter[str] = collections.Counter()
        self.per_user: collections.Counter[str] = collections.Counter()
        self.enriched_ids: collections.Counter[str] = collections.Counter()
        self.enriched_ok = 0  # joined with a known product
        self.sqlite_path = sink_dir / "enriched.sqlite"  # written by the pipeline's sinks
        self.jsonl_dir = sink_dir / "enriched"
        self.postgres: tuple[int, int] | None = None  # rows, distinct ids (with a server)
        self.conversions: collections.Counter[tuple[str, bool]] = collections.Counter()
        self.views_of: dict[str, str] = {}  # view id → product
        self._consumer: Any = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            *self.topics.values(),
            bootstrap_servers=self._bootstrap,
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            metadata_max_age_ms=2000,
        )
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def poll(self, timeout_ms: int = 200) -> int:
        batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        n = 0
        for tp, records in batch.items():
            role = self._role[tp.topic]
            for r in records:
                n += 1
                self.counts[role] += 1
                if role == "enriched":
                    self._enriched(r)
                elif role == "sessions":
                    v = orjson.loads(r.value)
                    acc = v["reduce"]
                    self.sessions.append(
                        (v["key"], v["start"], v["end"], acc["pages"], acc["spend"])
                    )
                elif role == "totals":
                    v = orjson.loads(r.value)
                    self.totals[v["user_id"]] = v["total_cents"]
                elif role == "trending":
                    v = orjson.loads(r.value)
                    self.trending.setdefault((v["start"], v["end"]), {})[v["key"]] = v["top_k"]
                elif role == "fraud-alerts":
                    v = orjson.loads(r.value)
                    self.alerts.append((v["key"], v["end"], v["count"]))
                elif role == "conversions":
                    v = orjson.loads(r.value)
                    self.conversions[(v["view"], v["bought"])] += 1
                    self.views_of[v["view"]] = v["product_id"]
                elif role == "dlq":
                    self.dead_reasons[describe(r.headers).get("streamkit.error.type", "?")] += 1
        return n

    def _enriched(self, r: Any) -> None:
        v = orjson.loads(r.value)
        self.enriched_ids[v["id"]] += 1
        self.per_user[v["user_id"]] += 1
        if v["name"] != "?":
            self.enriched_ok += 1

    def top_trending(self) -> tuple[tuple[int, int], list[list[Any]]] | None:
        """The busiest of the ten newest windows, with its overall top k (merged over the
        partitions' lists)."""
        if not self.trending:
            return None

        def clicks(window: tuple[int, int]) -> int:
            return sum(n for ranked in self.trending[window].values() for _, n in ranked)

        window = max(sorted(self.trending)[-10:], key=clicks)
        return window, merge_top(list(self.trending[window].values()), self._top)

    def merged_trending(self) -> dict[tuple[int, int], list[list[Any]]]:
        return {w: merge_top(list(p.values()), self._top) for w, p in self.trending.items()}

    def conversion_rate(self) -> tuple[int, int]:
        """(views, views followed by a purchase within 30 minutes)."""
        converted = {view for view, bought in self.conversions if bought}
        return len(self.views_of), len(converted)

    def conversion_per_product(self) -> list[tuple[str, int, int]]:
        """(product, views, views bought within 30 minutes), most viewed first."""
        converted = {view for view, bought in self.conversions if bought}
        views: collections.Counter[str] = collections.Counter(self.views_of.values())
        bought = collections.Counter(self.views_of[v] for v in converted)
        return [(p, n, bought[p]) for p, n in sorted(views.items(), key=lambda x: (-x[1], x[0]))]

    def sink_rows(self) -> int:
        """Rows of the SQLite sink (0 before its first batch)."""
        return self.sink_counts()[0]

    def sink_counts(self) -> tuple[int, ...]:
        """The local sink's rows and distinct event ids in the SQLite table, then its JSON
        lines and their distinct ids (every task's file), then the PostgreSQL table's."""
        rows = distinct = 0
        if self.sqlite_path.exists():
            with contextlib.closing(sqlite3.connect(self.sqlite_path)) as db:
                found = db.execute("SELECT count(*), count(DISTINCT id) FROM enriched").fetchone()
                rows, distinct = int(found[0]), int(found[1])
        ids = [orjson.loads(line)["id"] for line in committed_lines(self.jsonl_dir)]
        return rows, distinct, len(ids), len(set(ids)), *(self.postgres or ())

    async def read_postgres(self, dsn: str, table: str) -> None:
        """The PostgreSQL sink's rows and distinct ids (after the workers stopped)."""
        conn = await asyncpg.connect(dsn)
        try:
            found = await conn.fetchrow(f"SELECT count(*), count(DISTINCT id) FROM {table}")
        finally:
            await conn.close()
        assert found is not None
        self.postgres = int(found[0]), int(found[1])


def window_watermarks(app: Any, windows: list[str], workdirs: list[Path]) -> list[int]:
    """Per partition of the stages of `windows` (window table names), the highest watermark
    its store shows in any of `workdirs` (NO_WATERMARK if none does). A store is written after
    its checkpoint committed, and a task that moves restores the watermark from the
    changelog: a partition's windows never see an earlier one again."""
    found = []
    for stage in app.stages:
        for wt in stage.windows:
            if wt.name not in windows:
                continue
            table = wt.table
            key = table.key_codec.encode(WATERMARK_ROW)
            for p in range(stage.partitions or 1):
                best = NO_WATERMARK
                for workdir in workdirs:
                    path = store_path(workdir, app.id, stage, p)
                    with contextlib.suppress(sqlite3.Error):  # none yet, or being written
                        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
                        try:
                            row = db.execute(
                                f'SELECT v FROM "t:{table.name}" WHERE k = ?', (key,)
                            ).fetchone()
                        finally:
                            db.close()
                        if row is not None:
                            best = max(best, int(table.value_codec.decode(row[0])))
                found.append(best)
    return found
