"""Joins with tables against the broker: a payment sent right after its order joins it (the
stream waits until the table read from a topic caught up), and an as-of join over replayed,
out-of-order history gives the historical values, also after the worker lost its local state
and the table's source topic lost its records (the versioned table comes back from its own
changelog)."""

from __future__ import annotations

import collections
import random
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition
from prometheus_client import generate_latest

import streamkit as sk
from streamkit.runtime.admin import ensure_app_topics
from tests.kafkahelp import (
    WorkerProcess,
    bootstrap,
    committed,
    end_offsets,
    read_all,
    running,
    wait_until,
)


async def test_a_record_sent_just_after_its_table_row_joins_it(uid: str, workdir: Path) -> None:
    app = sk.App(f"race-{uid}", workdir=str(workdir), commit_interval=0.2)
    orders = app.topic(f"race-{uid}-orders", partitions=2, config={"cleanup.policy": "compact"})
    payments = app.topic(f"race-{uid}-payments", partitions=2)
    paid = app.topic(f"race-{uid}-paid", partitions=2)
    table = app.table("orders", source=orders)
    app.stream(payments).join_table(
        table, how="left", joiner=lambda p, o: {"payment": p["id"], "order": o}
    ).to(paid)
    await ensure_app_topics(app, client_id="test")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap())
    await producer.start()
    try:
        async with running(app) as worker:
            assert worker.tasks is not None
            await wait_until(
                lambda: all(t.sync is not None for t in worker.tasks.tasks.values()),
                what="the tasks to run",
            )
            for i in range(10):  # as a new user would: the order, then at once its payment
                key = f"o{i}".encode()
                await producer.send_and_wait(orders.name, orjson.dumps({"amount": i}), key=key)
                await producer.send_and_wait(payments.name, orjson.dumps({"id": i}), key=key)
            out = [orjson.loads(r.value) for r in await read_all(paid.name, expect=10)]
            assert worker.web is not None
            scraped = generate_latest(worker.web.metrics.registry).decode()
            held = sum(t.sync.holds for t in worker.tasks.tasks.values() if t.sync is not None)
            sync_lines = [
                line for line in scraped.splitlines() if line.startswith("streamkit_table_sync_")
            ]
    finally:
        await producer.stop()
    assert sorted(o["payment"] for o in out) == list(range(10))
    assert all(o["order"] == {"amount": o["payment"]} for o in out), out
    # none went on without its table caught up; /metrics says what the tasks counted
    counted = {"held": 0.0, "timed_out": 0.0}
    for line in sync_lines:
        if line.startswith("streamkit_table_sync_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            counted[outcome] += float(line.rsplit(" ", 1)[1])
    assert counted == {"held": held, "timed_out": 0.0}, sync_lines


SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
T0 = 1_600_000_000_000  # ms: the replayed history is years old


def price_history(rng: random.Random) -> list[tuple[str, int, int | None]]:
    """(symbol, time ms, price or None for a delisting) for each symbol, every 10 s."""
    rows = []
    for s in SYMBOLS:
        for step in range(30):
            price = None if step == 17 else rng.randint(1, 1000)
            rows.append((s, T0 + step * 10_000, price))
    return rows


def expected(history: list[tuple[str, int, int | None]], symbol: str, t: int) -> int | None:
    held = [(ts, p) for s, ts, p in history if s == symbol and ts <= t]
    return max(held)[1] if held else None


async def test_as_of_join_over_replayed_history(uid: str, workdir: Path) -> None:
    def make_app() -> tuple[sk.App, Any, Any, Any]:
        app = sk.App(f"asof-{uid}", workdir=str(workdir), commit_interval=0.2)
        prices = app.topic(f"asof-{uid}-prices", partitions=2, config={"retention.ms": "-1"})
        trades = app.topic(f"asof-{uid}-trades", partitions=2, config={"retention.ms": "-1"})
        out = app.topic(f"asof-{uid}-priced", partitions=2, config={"retention.ms": "-1"})
        table = app.table("prices", source=prices, versioned=sk.Versioned(retention=24 * 3600))
        app.stream(trades).join_table(
            table, how="left", joiner=lambda t, p: {"trade": t["id"], "price": p}
        ).to(out)
        return app, prices, trades, out

    rng = random.Random(16)
    history = price_history(rng)
    rng.shuffle(history)  # the price topic itself is out of order
    trades = [
        (i, SYMBOLS[i % 4], T0 - 5_000 + rng.randint(0, 300_000)) for i in range(200)
    ]  # some before the first price, some in the delisting, most in between
    app, prices_topic, trades_topic, out_topic = make_app()
    await ensure_app_topics(app, client_id="test")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5)
    await producer.start()
    try:
        for s, ts, p in history:
            value = None if p is None else orjson.dumps(p)
            await producer.send(prices_topic.name, value, key=s.encode(), timestamp_ms=ts)
        for i, s, ts in trades[:100]:  # all written before the worker starts: a replay
            await producer.send(
                trades_topic.name, orjson.dumps({"id": i}), key=s.encode(), timestamp_ms=ts
            )
        await producer.flush()
        async with running(app):
            got = await read_all(out_topic.name, expect=100, within=60)
        # the worker's local state is lost and so are the price topic's records: the
        # versioned table comes back from its own changelog
        shutil.rmtree(workdir)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
        await admin.start()
        try:
            ends = await end_offsets(prices_topic.name)
            await admin.delete_records(
                {
                    TopicPartition(prices_topic.name, p): RecordsToDelete(before_offset=end)
                    for p, end in ends.items()
                }
            )
        finally:
            await admin.close()
        for i, s, ts in trades[100:]:
            await producer.send(
                trades_topic.name, orjson.dumps({"id": i}), key=s.encode(), timestamp_ms=ts
            )
        await producer.flush()
        app2, *_ = make_app()
        async with running(app2) as worker:
            got = await read_all(out_topic.name, expect=200, within=60)
            # the interactive query: the versions kept, and one as of a time
            when = T0 + 123_000
            assert worker.web is not None
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"http://{worker.web.endpoint}/tables/prices/AAA", params={"as_of": str(when)}
                ) as resp,
            ):
                answer = await resp.json()
    finally:
        await producer.stop()
    answers = {orjson.loads(r.value)["trade"]: orjson.loads(r.value)["price"] for r in got}
    assert sorted(answers) == list(range(200))
    want = {i: expected(history, s, ts) for i, s, ts in trades}
    wrong = sorted(i for i in want if answers[i] != want[i])
    assert answers == want, (len(wrong), wrong[:5], wrong[-5:])
    assert any(v is None for v in want.values()) and len(set(want.values())) > 20
    assert answer["value"] == expected(history, "AAA", when) and answer["found"]
    assert answer["versions"] == sorted([ts, p] for s, ts, p in history if s == "AAA")


async def test_kill_9_mid_as_of_join_under_exactly_once_gives_each_result_once(
    uid: str, tmp_path: Path
) -> None:
    """A worker is killed with -9 mid-join; one with an empty state directory takes over:
    every trade is joined once (read_committed, to the end offsets) with the price that held
    at its time, the versioned table coming back from its changelog."""
    prefix = f"asofp-{uid}"
    rng = random.Random(7)
    history = price_history(rng)
    n = 400
    trades = [(i, SYMBOLS[i % 4], T0 + rng.randint(0, 300_000)) for i in range(n)]

    def worker(name: str, **env: str) -> WorkerProcess:
        return WorkerProcess(
            "tests.tablejoinapp:app",
            {"SKTEST_ID": uid, "STREAMKIT_WORKDIR": str(tmp_path / name), **env},
            tmp_path / f"{name}.log",
        )

    victim = worker("victim", SKTEST_SLOW="0.01").start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5)
    await producer.start()
    try:
        await wait_until(lambda: "assigned" in victim.log() or not victim.alive, within=60)
        assert victim.alive, victim.log()
        for s, ts, p in history:
            value = None if p is None else orjson.dumps(p)
            await producer.send(f"{prefix}-prices", value, key=s.encode(), timestamp_ms=ts)
        for i, s, ts in trades:
            await producer.send(
                f"{prefix}-trades", orjson.dumps({"id": i}), key=s.encode(), timestamp_ms=ts
            )
        await producer.flush()

        async def some_committed() -> bool:
            return sum((await committed(prefix, f"{prefix}-trades")).values()) > 0

        await wait_until(some_committed, within=60, what="a first commit", every=0.05)
        victim.kill9()
        done_before = len(await read_all(f"{prefix}-priced"))
        assert done_before < n, "the worker finished before the kill; make it slower"
        survivor = worker("survivor").start()
        try:
            await read_all(f"{prefix}-priced", expect=n, within=90)
            await wait_until(
                lambda: committed_all(prefix, f"{prefix}-trades"), within=60, what="all committed"
            )
            got = await read_all(f"{prefix}-priced")  # to the end offsets, read_committed
        finally:
            survivor.stop()
    finally:
        await producer.stop()
        victim.stop()
    results = [orjson.loads(r.value) for r in got]
    counts = collections.Counter(r["trade"] for r in results)
    assert set(counts) == set(range(n)) and set(counts.values()) == {1}, counts.most_common(3)
    want = {i: expected(history, s, ts) for i, s, ts in trades}
    assert {r["trade"]: r["price"] for r in results} == want


async def committed_all(group: str, topic: str) -> bool:
    return await committed(group, topic) == await end_offsets(topic)


async def test_table_table_join_end_to_end(uid: str, workdir: Path) -> None:
    """Orders and customers read as tables from two co-partitioned topics, outer-joined: the
    output read as a table (last value per key, tombstones deleting) is the join of the two
    topics read as tables, updates and deletes included."""
    app = sk.App(f"ttj-{uid}", workdir=str(workdir), commit_interval=0.2)
    left = app.topic(f"ttj-{uid}-orders", partitions=2)
    right = app.topic(f"ttj-{uid}-customers", partitions=2)
    out = app.topic(f"ttj-{uid}-joined", partitions=2)
    app.join_tables(left, right, how="outer", joiner=lambda a, b: [a, b]).to(out)
    await ensure_app_topics(app, client_id="test")
    rng = random.Random(3)
    changes = [
        (rng.choice([left.name, right.name]), f"k{rng.randrange(12)}", rng.choice([None, 1, 2, 3]))
        for _ in range(150)
    ]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5)
    await producer.start()
    try:
        async with running(app):
            for topic, key, value in changes:
                body = None if value is None else orjson.dumps(value)
                await producer.send(topic, body, key=key.encode())
            await producer.flush()
            tables: dict[str, dict[str, int]] = {left.name: {}, right.name: {}}
            for topic, key, value in changes:
                if value is None:
                    tables[topic].pop(key, None)
                else:
                    tables[topic][key] = value
            want = {
                k: [tables[left.name].get(k), tables[right.name].get(k)]
                for k in set(tables[left.name]) | set(tables[right.name])
            }

            async def materialized() -> dict[str, Any]:
                table: dict[str, Any] = {}
                for r in await read_all(out.name):
                    if r.value is None:
                        table.pop(r.key.decode(), None)
                    else:
                        table[r.key.decode()] = orjson.loads(r.value)
                return table

            async def done() -> bool:
                return await materialized() == want

            await wait_until(done, within=60, what="the joined output to match both tables")
    finally:
        await producer.stop()
