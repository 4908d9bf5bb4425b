"""Exactly-once vs at-least-once: the keyed running sum with a commit-interval sweep.

    python -m bench.exactly_once [--events N] [--rate R] [--seconds S] [--intervals 0.1,1,5]

For each guarantee and commit interval, in one invocation against one broker:

1. Throughput: N pre-loaded purchases → key_by(user_id) → table += amount → emit the total;
   events/s from worker start until a read_committed reader has all N outputs (exactly-once
   outputs become visible a transaction at a time, so only the end-to-end rate compares).
2. Latency: purchases produced at R events/s for S seconds while the worker runs, each
   stamped with its send time; a read_committed reader notes when each total becomes visible.
   p50 / p99 of (visible - sent).
3. The cost of one transactional producer per input partition: the worker's checkpoints per
   second and their mean duration (pause → commit of every partition's transaction → SQLite).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

import streamkit as sk
from bench.common import PARTITIONS, Cluster, bootstrap, make_events, preload
from streamkit.runtime.worker import Worker

GUARANTEES = ("at_least_once", "exactly_once")


def running_sum_app(uid: str, source: str, output: str, workdir: Path, **settings: Any) -> sk.App:
    app = sk.App(f"be-{uid}", workdir=workdir, **settings)
    src = app.topic(source, partitions=PARTITIONS)
    out = app.topic(output, partitions=PARTITIONS)
    total = app.table("total", default=float)

    @app.agent(app.stream(src).key_by("user_id"), sink=out, state=[total])
    async def running_sum(stream: sk.Stream[Any]) -> Any:
        async for p in stream:
            total[p["user_id"]] += p["amount"]
            yield {"user_id": p["user_id"], "total": total[p["user_id"]], "ts": p["ts"]}

    return app


class Reader:
    """A read_committed consumer of the output topic, counting records and their latency."""

    def __init__(self, topic: str) -> None:
        self.count = 0
        self.latencies: list[float] = []
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap(),
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            group_id=None,
        )

    async def run(self, latency: bool) -> None:
        await self._consumer.start()
        try:
            while True:
                batch = await self._consumer.getmany(timeout_ms=100)
                now_wall = time.time()
                for records in batch.values():
                    self.count += len(records)
                    if latency:
                        self.latencies.extend(
                            now_wall - orjson.loads(r.value)["ts"] for r in records
                        )
        finally:
            await self._consumer.stop()


async def run_worker_until(worker: Worker, done: Any, within: float) -> None:
    task = asyncio.create_task(worker.run(install_signal_handlers=False))
    deadline = time.monotonic() + within
    try:
        while not done():
            if task.done():
                task.result()
                raise RuntimeError("worker stopped early")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not done in {within}s")
            await asyncio.sleep(0.05)
    finally:
        worker.request_stop()
        await task


def checkpoint_cost(worker: Worker, seconds: float) -> dict[str, float]:
    cp = worker.checkpointer
    assert cp is not None
    return {
        "transactions_or_commits": cp.commits,
        "checkpoints_per_s": cp.checkpoints / seconds,
        "mean_checkpoint_ms": 1000 * cp.total_duration / max(cp.checkpoints, 1),
    }


async def throughput(
    cluster: Cluster, source: str, n: int, guarantee: str, interval: float
) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:6]
    output = f"be-out-{uid}"
    await cluster.create_topics([output])
    reader = Reader(output)
    reading = asyncio.create_task(reader.run(latency=False))
    with tempfile.TemporaryDirectory() as wd:
        app = running_sum_app(
            uid, source, output, Path(wd), processing_guarantee=guarantee, commit_interval=interval
        )
        worker = Worker(app)
        started = time.monotonic()
        await run_worker_until(worker, lambda: reader.count >= n, within=600)
        elapsed = time.monotonic() - started
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    return {
        "events_per_s": n / elapsed,
        **checkpoint_cost(worker, elapsed),
    }


async def latency(
    cluster: Cluster, rate: int, seconds: float, guarantee: str, interval: float
) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:6]
    source, output = f"be-lin-{uid}", f"be-lout-{uid}"
    await cluster.create_topics([source, output])
    n = int(rate * seconds)
    reader = Reader(output)
    reading = asyncio.create_task(reader.run(latency=True))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5)
    await producer.start()
    template = [orjson.loads(e) for e in make_events(min(n, 10_000))]
    sent = 0

    async def feed() -> None:
        nonlocal sent
        tick, per_tick = 0.02, max(1, int(rate * 0.02))
        next_at = time.monotonic()
        while sent < n:
            for _ in range(min(per_tick, n - sent)):
                event = dict(template[sent % len(template)], ts=time.time())
                await producer.send(source, orjson.dumps(event))
                sent += 1
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    with tempfile.TemporaryDirectory() as wd:
        app = running_sum_app(
            uid, source, output, Path(wd), processing_guarantee=guarantee, commit_interval=interval
        )
        worker = Worker(app)
        feeding: asyncio.Task[None] | None = None

        def done() -> bool:
            nonlocal feeding
            if feeding is None and worker.tasks is not None and len(worker.tasks.tasks) == 8:
                feeding = asyncio.create_task(feed())
            return reader.count >= n

        await run_worker_until(worker, done, within=seconds + 120)
    await producer.stop()
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    lat = sorted(reader.latencies)
    cost = checkpoint_cost(worker, seconds)
    return {
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[int(len(lat) * 0.99) - 1],
        "paced_mean_checkpoint_ms": cost["mean_checkpoint_ms"],
        "paced_transactions_per_s": cost["transactions_or_commits"] / seconds,
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    async with Cluster() as cluster:
        source = f"be-in-{uuid.uuid4().hex[:6]}"
        await cluster.create_topics([source])
        await cluster.warm_up_groups()
        await preload(source, make_events(args.events))
        for interval in args.intervals:
            for guarantee in GUARANTEES:
                row: dict[str, Any] = {"guarantee": guarantee, "commit_interval": interval}
                row.update(await throughput(cluster, source, args.events, guarantee, interval))
                row.update(await latency(cluster, args.rate, args.seconds, guarantee, interval))
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"Keyed running sum, {args.events:,} events (throughput); {args.rate:,} events/s for "
        f"{args.seconds:.0f} s (latency); {PARTITIONS} partitions",
        "",
        "| guarantee | commit interval | events/s | mean checkpoint (throughput run) "
        "| p50 latency | p99 latency | mean checkpoint (paced run) | commits or transactions/s "
        "(paced) |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['guarantee']} | {r['commit_interval']:g} s | {r['events_per_s']:,.0f} "
            f"| {r['mean_checkpoint_ms']:.0f} ms | {r['p50_ms']:,.0f} ms | {r['p99_ms']:,.0f} ms "
            f"| {r['paced_mean_checkpoint_ms']:.0f} ms | {r['paced_transactions_per_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--intervals", type=lambda s: [float(x) for x in s.split(",")], default=[0.1, 1.0, 5.0]
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args))
    print(markdown(rows, args))
    if args.json is not None:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": None}, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
