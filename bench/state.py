"""State benchmarks: the keyed running sum, changelog restore speed, memory at many keys.

    python -m bench.state [--events N] [--restore-keys K] [--rss-keys 1000000,10000000]

1. Keyed running sum (at-least-once): purchases → key_by(user_id) → table += amount → emit
   the total, against streamkit's pass-through on the same input (same invocation).
2. Restore: K distinct keys written to a changelog partition set, then a fresh store per
   partition restored by the `ChangelogReader`; records/s (goal ≥ 200k/s).
3. Memory: a table partition (default cache bound, checkpoints every 100k changes into
   SQLite) fed with N distinct keys in a child process; peak RSS (goal < 300 MB at 10M).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

import streamkit as sk
from bench.common import PARTITIONS, Cluster, bootstrap, make_events, preload
from streamkit.runtime.worker import Worker
from streamkit.state.changelog import ChangelogReader
from streamkit.state.task_tables import TaskTables


async def run_app(app: sk.App, output: str, events: int, cluster: Cluster) -> float:
    """Run a worker until `output` holds `events` records; events/s from worker start."""
    worker = Worker(app)
    started = time.monotonic()
    task = asyncio.create_task(worker.run(install_signal_handlers=False))
    while await cluster.count(output) < events:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    worker.request_stop()
    await task
    return events / elapsed


def keyed_sum_app(uid: str, source: str, output: str, workdir: Path, keyed: bool) -> sk.App:
    app = sk.App(f"bs-{uid}", workdir=workdir, commit_interval=1.0)
    src = app.topic(source, partitions=PARTITIONS)
    out = app.topic(output, partitions=PARTITIONS)
    total = app.table("total", default=float)

    if keyed:

        @app.agent(app.stream(src).key_by("user_id"), sink=out, state=[total])
        async def running_sum(stream: sk.Stream[Any]) -> Any:
            async for p in stream:
                total[p["user_id"]] += p["amount"]
                yield {"user_id": p["user_id"], "total": total[p["user_id"]]}

    else:

        @app.agent(src, sink=out)
        async def passthrough(stream: sk.Stream[Any]) -> Any:
            async for value in stream:
                yield value

    return app


async def keyed_sum(events: int) -> dict[str, float]:
    rates = {}
    async with Cluster() as cluster:
        source = f"bs-in-{uuid.uuid4().hex[:6]}"
        await cluster.create_topics([source])
        await preload(source, make_events(events))
        for name, keyed in (("pass-through", False), ("keyed running sum", True)):
            uid = uuid.uuid4().hex[:6]
            output = f"bs-out-{uid}"
            await cluster.create_topics([output])
            with tempfile.TemporaryDirectory() as wd:
                app = keyed_sum_app(uid, source, output, Path(wd), keyed)
                rates[name] = await run_app(app, output, events, cluster)
    return rates


async def restore(keys: int) -> tuple[float, int]:
    """Fill a changelog with `keys` keys, restore four fresh stores; records/s, replayed."""
    uid = uuid.uuid4().hex[:6]
    app = sk.App(f"br-{uid}")
    src = app.topic(f"br-in-{uid}", partitions=PARTITIONS)
    table = app.table("t", default=int)

    @app.agent(src, state=[table])
    async def use(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            table["x"] = 1

    stage = app.stages[-1]
    async with Cluster() as cluster:
        await cluster.create_topics([table.changelog.name])
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=20)
        await producer.start()
        try:
            for p in range(PARTITIONS):
                batch = producer.create_batch()
                for i in range(p, keys, PARTITIONS):
                    if batch.append(key=b"key-%d" % i, value=b"%d" % i, timestamp=None) is None:
                        await producer.send_batch(batch, table.changelog.name, partition=p)
                        batch = producer.create_batch()
                        batch.append(key=b"key-%d" % i, value=b"%d" % i, timestamp=None)
                await producer.send_batch(batch, table.changelog.name, partition=p)
            await producer.flush()
        finally:
            await producer.stop()
    reader = ChangelogReader(app.settings, "bench-restore")
    with tempfile.TemporaryDirectory() as wd:
        started = time.monotonic()
        stores = [
            TaskTables(app.id, Path(wd), stage, p, 1000, on_full=lambda: None)
            for p in range(PARTITIONS)
        ]
        await asyncio.gather(*(tables.open(reader) for tables in stores))  # as after a rebalance
        elapsed = time.monotonic() - started
        replayed = sum(tables.replayed for tables in stores)
        for tables in stores:
            tables.close()
    await reader.stop()
    return replayed / elapsed, replayed


def rss_child(keys: int) -> None:
    """In a child process: N distinct keys through one table partition; print peak RSS."""
    from streamkit.state.store import open_store
    from streamkit.state.table import Table, TablePartition

    app = sk.App("rss")
    table: Table[Any, Any] = app.table("t", default=int)
    with tempfile.TemporaryDirectory() as wd:
        store = open_store(Path(wd) / "0.sqlite", {"app": "rss"}, ["t"])
        part = TablePartition(table, 0, store, 100_000, on_full=lambda: None)
        for i in range(keys):
            part.set(f"user-{i}", i)
            if len(part.dirty) >= 100_000:
                store.apply({"t": part.take_dirty()}, {})
                part.flushing = {}
        store.apply({"t": part.take_dirty()}, {})
        store.close()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def peak_rss_mb(keys: int) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "bench.state", "--rss-child", str(keys)],
        capture_output=True,
        check=True,
    ).stdout
    return int(out.split()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.state", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--restore-keys", type=int, default=1_000_000)
    parser.add_argument("--rss-keys", default="1000000,10000000")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child)
        return 0
    rates = asyncio.run(keyed_sum(args.events))
    print(f"## State, {args.events:,} events, {PARTITIONS} partitions, at-least-once\n")
    print("| pipeline | events/s | vs pass-through |\n|---|--:|--:|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / rates['pass-through']:.0%} |")
    speed, replayed = asyncio.run(restore(args.restore_keys))
    print(f"\nrestore: {replayed:,} changelog records in 4 partitions at {speed:,.0f} records/s")
    for n in (int(x) for x in args.rss_keys.split(",") if x):
        print(f"peak RSS with {n:,} keys (cache bound 100,000): {peak_rss_mb(n)} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
