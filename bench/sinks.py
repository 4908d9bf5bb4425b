"""Sink throughput: one stage writing every event of a pre-loaded topic as a row, into Kafka
(the baseline, `to(topic)`), PostgreSQL (exactly-once and upsert), SQLite and JSON lines.

    python -m bench.sinks [--events N] [--guarantee at_least_once|exactly_once] [--json PATH]

A run starts a worker in this process on a fresh app and reads the destination until it holds
N rows; then the worker stops (its final checkpoint) and the run is valid only if the
destination holds exactly N rows with N distinct ids. Wall time and the process's CPU time
are measured from the worker's start to the N-th row. Needs KAFKA_BOOTSTRAP_SERVERS;
STREAMKIT_POSTGRES_DSN, or a local server is started (streamkit/localpg.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

import streamkit as sk
from bench.common import PARTITIONS, Cluster, bootstrap, make_events, preload
from streamkit.localpg import start_postgres
from streamkit.runtime.worker import Worker
from streamkit.sinks.jsonlines import committed_lines

COLUMNS = ["id", "user_id", "amount", "qty"]
DDL = (
    "CREATE TABLE IF NOT EXISTS {} (id TEXT NOT NULL, user_id TEXT, amount DOUBLE PRECISION, "
    "qty INTEGER)"
)
UPSERT_DDL = (
    "CREATE TABLE IF NOT EXISTS {} (id TEXT PRIMARY KEY, user_id TEXT, "
    "amount DOUBLE PRECISION, qty INTEGER)"
)


@dataclass
class Result:
    sink: str
    events: int
    ok: bool
    wall_s: float
    cpu_s: float

    @property
    def rows_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s else 0.0


def row(order: dict[str, Any]) -> dict[str, Any]:
    at = sk.current_event()
    return {**order, "id": f"{at.partition}:{at.offset}"}


async def pg_count(dsn: str, table: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT to_regclass($1)", table) is None:
            return 0, 0
        found = await conn.fetchrow(f"SELECT count(*), count(DISTINCT id) FROM {table}")
    finally:
        await conn.close()
    assert found is not None
    return int(found[0]), int(found[1])


async def sqlite_count(path: Path, table: str) -> tuple[int, int]:
    return await asyncio.to_thread(_sqlite_count, path, table)


def _sqlite_count(path: Path, table: str) -> tuple[int, int]:
    if not path.exists():
        return 0, 0
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        try:
            found = db.execute(f"SELECT count(*), count(DISTINCT id) FROM {table}").fetchone()
        except sqlite3.OperationalError:  # not created yet
            return 0, 0
    return int(found[0]), int(found[1])


async def lines_count(folder: Path) -> tuple[int, int]:
    return await asyncio.to_thread(_lines_count, folder)


def _lines_count(folder: Path) -> tuple[int, int]:
    ids = [orjson.loads(line)["id"] for line in committed_lines(folder)]
    return len(ids), len(set(ids))


async def run_one(
    name: str,
    source: str,
    n: int,
    guarantee: str,
    workdir: Path,
    make_sink: Callable[[str], Any],
    count: Callable[[str], Awaitable[tuple[int, int]]],
) -> Result:
    tag = uuid.uuid4().hex[:8]
    app = sk.App(
        f"bench-sinks-{tag}",
        processing_guarantee=guarantee,
        workdir=str(workdir / tag),
        max_poll_records=5000,
    )
    topic = app.topic(source, partitions=PARTITIONS)
    target = make_sink(tag)
    if isinstance(target, str):
        target = app.topic(target, partitions=PARTITIONS)
    app.stream(topic).map(row).to(target)
    worker = Worker(app)
    cpu0, t0 = time.process_time(), time.monotonic()
    runner = asyncio.create_task(worker.run(install_signal_handlers=False))
    wall = cpu = 0.0
    try:
        while not runner.done():
            if (await count(tag))[0] >= n:
                wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
                break
            await asyncio.sleep(0.1)
    finally:
        worker.request_stop()
        await asyncio.gather(runner, return_exceptions=True)
    if runner.done() and not runner.cancelled() and runner.exception() is not None:
        print(f"{name}: worker failed: {runner.exception()}", file=sys.stderr)
    rows, distinct = await count(tag)
    return Result(name, n, rows == distinct == n and wall > 0, wall, cpu)


class TopicReader:
    """The Kafka baseline's output, read read_committed as it comes: rows and distinct ids."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.ids: list[str] = []
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap(), isolation_level="read_committed", group_id=None
        )

    async def start(self) -> TopicReader:
        await self._consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        return self

    async def count(self) -> tuple[int, int]:
        batch = await self._consumer.getmany(timeout_ms=50, max_records=100_000)
        for records in batch.values():
            self.ids.extend(orjson.loads(r.value)["id"] for r in records)
        return len(self.ids), len(set(self.ids))

    async def stop(self) -> None:
        await self._consumer.stop()


@contextlib.contextmanager
def postgres_dsn() -> Iterator[str]:
    given = os.environ.get("STREAMKIT_POSTGRES_DSN")
    if given:
        yield given
        return
    with start_postgres() as server:
        yield server.dsn


async def main_async(args: argparse.Namespace, dsn: str, workdir: Path) -> list[Result]:
    source = f"bench-sinks-in-{uuid.uuid4().hex[:8]}"
    async with Cluster() as cluster:
        await cluster.create_topics([source])
        await cluster.warm_up_groups()
        await preload(source, make_events(args.events))

        readers: dict[str, TopicReader] = {}

        async def kafka_count(tag: str) -> tuple[int, int]:
            topic = f"bench-sinks-out-{tag}"
            if topic not in readers:
                await cluster.create_topics([topic])
                readers[topic] = await TopicReader(topic).start()
            return await readers[topic].count()

        cases: list[tuple[str, Callable[[str], Any], Callable[[str], Awaitable[Any]]]] = [
            ("Kafka topic (baseline)", lambda t: f"bench-sinks-out-{t}", kafka_count),
            (
                "PostgresSink exactly-once",
                lambda t: sk.PostgresSink(
                    f"rows_{t}", columns=COLUMNS, dsn=dsn, create=DDL.format(f"rows_{t}")
                ),
                lambda t: pg_count(dsn, f"rows_{t}"),
            ),
            (
                "PostgresSink upsert",
                lambda t: sk.PostgresSink(
                    f"rows_{t}",
                    columns=COLUMNS,
                    key=["id"],
                    mode="upsert",
                    dsn=dsn,
                    create=UPSERT_DDL.format(f"rows_{t}"),
                ),
                lambda t: pg_count(dsn, f"rows_{t}"),
            ),
            (
                "SqliteSink exactly-once",
                lambda t: sk.SqliteSink(
                    workdir / f"{t}.sqlite", "rows", columns=COLUMNS, create=DDL.format("rows")
                ),
                lambda t: sqlite_count(workdir / f"{t}.sqlite", "rows"),
            ),
            (
                "JsonLinesSink exactly-once",
                lambda t: sk.JsonLinesSink(workdir / f"{t}-lines"),
                lambda t: lines_count(workdir / f"{t}-lines"),
            ),
        ]
        results = []
        for name, make, count in cases:
            result = await run_one(name, source, args.events, args.guarantee, workdir, make, count)
            print(
                f"{name:28} {'ok' if result.ok else 'FAILED':6} {result.wall_s:6.2f} s wall "
                f"{result.cpu_s:6.2f} s CPU {result.rows_per_s:9,.0f} rows/s",
                flush=True,
            )
            results.append(result)
        for reader in readers.values():
            await reader.stop()
        return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sinks", description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--guarantee", default="at_least_once")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with postgres_dsn() as dsn, tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(main_async(args, dsn, Path(tmp)))
    if args.json:
        args.json.write_text(
            orjson.dumps(
                {"guarantee": args.guarantee, "runs": [asdict(r) for r in results]},
                option=orjson.OPT_INDENT_2,
            ).decode()
        )
    sys.exit(0 if all(r.ok for r in results) else 1)


if __name__ == "__main__":
    main()
