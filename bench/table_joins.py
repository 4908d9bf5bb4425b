"""Joins with tables: what a stream-table lookup and an as-of join with a versioned table cost,
against the same stream copied through a map, on the same pre-loaded input.

    python -m bench.table_joins [--events N] [--symbols S] [--versions V] [--reps R]

The input: N trades keyed by symbol (S symbols), 4 partitions, timestamps spread over the
price history; a price topic with V versions per symbol (a compacted copy of the latest for
the plain table). Forms, each in a fresh app and group, runs alternating:

- `map`: trades copied to the output (the floor);
- `join_table(source table)`: each trade joined with the latest price (a table read from a topic);
- `join_table(versioned, as-of)`: each trade joined with the price that held at its time.

A run ends when the output holds N records (its end offsets); its
output is validated (count; every as-of price equals the oracle's, every plain price the
latest). Wall time from worker start; CPU time of this process (the worker runs in it).
Needs KAFKA_BOOTSTRAP_SERVERS.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
import statistics
import tempfile
import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

import streamkit as sk
from bench.common import bootstrap
from streamkit.runtime.admin import ensure_app_topics
from streamkit.runtime.worker import Worker

PARTITIONS = 4
T0 = 1_600_000_000_000
STEP = 60_000  # ms between two versions of a symbol
FORMS = ("map", "join_table(source table)", "join_table(versioned, as-of)")


def history(symbols: int, versions: int, rng: random.Random) -> dict[str, list[tuple[int, int]]]:
    return {
        f"S{s}": [(T0 + v * STEP, rng.randint(1, 10_000)) for v in range(versions)]
        for s in range(symbols)
    }


async def preload(
    uid: str, n: int, prices: dict[str, list[tuple[int, int]]], rng: random.Random
) -> tuple[dict[str, str], list[tuple[int, str, int]]]:
    names = {k: f"tjb-{uid}-{k}" for k in ("trades", "prices", "latest")}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5, acks="all")
    await producer.start()
    app = sk.App(f"tjb-setup-{uid}")
    app.topic(names["trades"], partitions=PARTITIONS, config={"retention.ms": "-1"})
    app.topic(names["prices"], partitions=PARTITIONS, config={"retention.ms": "-1"})
    app.topic(names["latest"], partitions=PARTITIONS, config={"cleanup.policy": "compact"})
    await ensure_app_topics(app, client_id="bench")
    symbols = sorted(prices)
    span = (len(next(iter(prices.values()))) + 1) * STEP
    trades = []
    try:
        for s, versions in prices.items():
            for ts, p in versions:
                await producer.send(
                    names["prices"], orjson.dumps(p), key=s.encode(), timestamp_ms=ts
                )
            await producer.send(names["latest"], orjson.dumps(versions[-1][1]), key=s.encode())
        for i in range(n):
            s, ts = rng.choice(symbols), T0 - STEP // 2 + rng.randrange(span)
            trades.append((i, s, ts))
            await producer.send(
                names["trades"], orjson.dumps({"id": i, "qty": 1}), key=s.encode(), timestamp_ms=ts
            )
        await producer.flush()
    finally:
        await producer.stop()
    return names, trades


def build(form: str, uid: str, names: dict[str, str], out: str, workdir: str) -> sk.App:
    app = sk.App(f"tjb-{uid}", commit_interval=1.0, workdir=workdir)
    trades = app.topic(names["trades"], partitions=PARTITIONS)
    output = app.topic(out, partitions=PARTITIONS)
    stream = app.stream(trades)

    def joined(t: dict[str, Any], p: Any) -> dict[str, Any]:
        return {"id": t["id"], "price": p}

    if form == "map":
        stream.map(lambda t: {"id": t["id"], "price": None}).to(output)
    elif form == "join_table(source table)":
        table = app.table("latest", source=app.topic(names["latest"], partitions=PARTITIONS))
        stream.join_table(table, how="left", joiner=joined).to(output)
    else:
        prices = app.topic(names["prices"], partitions=PARTITIONS)
        versioned = app.table("prices", source=prices, versioned=sk.Versioned(retention=10**7))
        stream.join_table(versioned, how="left", joiner=joined).to(output)
    return app


async def count(topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap())
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


async def read(topic: str) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap(), auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for recs in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(orjson.loads(r.value) for r in recs)
    finally:
        await consumer.stop()
    return out


def check(
    form: str,
    rows: list[dict[str, Any]],
    trades: list[tuple[int, str, int]],
    prices: dict[str, list[tuple[int, int]]],
) -> str:
    if len(rows) != len(trades):
        return f"{len(rows)} outputs for {len(trades)} trades"
    got = {r["id"]: r["price"] for r in rows}
    for i, s, ts in trades:
        if form == "map":
            want = None
        elif form == "join_table(source table)":
            want = prices[s][-1][1]
        else:
            k = bisect.bisect_right([v[0] for v in prices[s]], ts)
            want = prices[s][k - 1][1] if k else None
        if got.get(i, "missing") != want:
            return f"trade {i}: price {got.get(i, 'missing')}, expected {want}"
    return ""


async def one_run(
    form: str, names: dict[str, str], trades: list[Any], prices: Any
) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:8]
    out = f"tjb-{uid}-out"
    with tempfile.TemporaryDirectory() as workdir:
        app = build(form, uid, names, out, workdir)
        await ensure_app_topics(app, client_id="bench")
        worker = Worker(app)
        cpu0, t0 = time.process_time(), time.monotonic()
        task = asyncio.create_task(worker.run(install_signal_handlers=False))
        try:
            while await count(out) < len(trades):
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
            wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        finally:
            worker.request_stop()
            await asyncio.gather(task, return_exceptions=True)
    error = check(form, await read(out), trades, prices)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        await admin.delete_topics([out])
    finally:
        await admin.close()
    return {"form": form, "ok": not error, "error": error, "wall_s": wall, "cpu_s": cpu}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(16)
    prices = history(args.symbols, args.versions, rng)
    names, trades = await preload(uuid.uuid4().hex[:8], args.events, prices, rng)
    runs = []
    for rep in range(args.reps):
        order = FORMS[rep % 3 :] + FORMS[: rep % 3]
        for form in order:
            run = await one_run(form, names, trades, prices)
            print(run, flush=True)
            runs.append(run)
    print(f"\n{args.events:,} trades, {args.symbols} symbols x {args.versions} versions\n")
    print("| form | ok | wall s (median) | CPU s (median) | CPU µs per trade |")
    print("|---|--:|--:|--:|--:|")
    for form in FORMS:
        mine = [r for r in runs if r["form"] == form and r["ok"]]
        total = sum(1 for r in runs if r["form"] == form)
        if not mine:
            print(f"| {form} | 0/{total} | | | |")
            continue
        wall = statistics.median(r["wall_s"] for r in mine)
        cpu = statistics.median(r["cpu_s"] for r in mine)
        print(
            f"| {form} | {len(mine)}/{total} | {wall:.2f} | {cpu:.2f} | "
            f"{cpu / args.events * 1e6:.1f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
