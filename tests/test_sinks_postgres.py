"""The PostgreSQL sink against a real server (tests/conftest.py `postgres`; the crash of the
database itself on one of its own, streamkit/localpg.py) and real worker processes: kill -9
of a worker under exactly-once, kill -9 of the postmaster mid-run, refused rows to the
dead-letter topic, the upsert mode. Every check reads the whole table after the workers
stopped, against the oracle of tests/sinkapp.py."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

import streamkit as sk
from streamkit.localpg import start_postgres
from streamkit.runtime.dlq import describe
from tests.kafkahelp import WorkerProcess, produce, read_all, wait_until
from tests.sinkapp import oracle
from tests.test_sinks import fence_two_writers

USERS = [f"u{i}" for i in range(40)]


def orders(n: int, seed: int, refused: int = 0) -> list[dict[str, Any]]:
    """`n` orders of random users; `refused` of them with a negative amount."""
    rng = random.Random(seed)
    bad = set(rng.sample(range(n), refused))
    return [
        {"id": i, "user_id": rng.choice(USERS), "amount": -7 if i in bad else rng.randint(1, 99)}
        for i in range(n)
    ]


async def send(uid: str, rows: list[dict[str, Any]]) -> None:
    await produce(
        f"sink-orders-{uid}",
        [orjson.dumps(r) for r in rows],
        keys=[r["user_id"].encode() for r in rows],
    )


def worker(uid: str, tmp_path: Path, name: str, dsn: str, **env: str) -> WorkerProcess:
    return WorkerProcess(
        "tests.sinkapp:app",
        {
            "SKTEST_ID": uid,
            "STREAMKIT_WORKDIR": str(tmp_path / name),
            "STREAMKIT_POSTGRES_DSN": dsn,
            "STREAMKIT_PROCESSING_GUARANTEE": "exactly_once",
            **env,
        },
        tmp_path / f"{name}.log",
    )


async def holding(*workers: WorkerProcess) -> None:
    await wait_until(
        lambda: all("assigned" in w.log().rsplit("revoked", 1)[-1] for w in workers),
        within=90,
        what="workers holding partitions",
    )


async def table_rows(dsn: str, uid: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass($1)", f"orders_{uid}")
        if exists is None:
            return []
        rows = await conn.fetch(f"SELECT id, user_id, amount, total FROM orders_{uid}")
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def rows_reach(dsn: str, uid: str, n: int, within: float) -> None:
    async def enough() -> bool:
        try:
            return len(await table_rows(dsn, uid)) >= n
        except (OSError, asyncpg.PostgresError):
            return False

    await wait_until(enough, within=within, what=f"{n} rows in orders_{uid}", every=0.3)


def assert_exactly(rows: list[tuple[Any, ...]], expected: set[tuple[Any, ...]]) -> None:
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} rows written twice"
    assert set(rows) == expected, (
        f"missing {sorted(expected - set(rows))[:5]}, unexpected {sorted(set(rows) - expected)[:5]}"
    )


async def test_kill_9_of_a_worker_during_sink_writes_writes_each_row_once(
    uid: str, tmp_path: Path, postgres: str
) -> None:
    """Orders flow in steadily; worker b is killed with SIGKILL three times while it writes.
    Checkpoints are 1 s apart and batches of 50 rows go in between them: at each kill the
    table holds rows whose offsets Kafka has not committed, which the next owner replays."""
    rows = orders(4000, seed=18, refused=12)
    env = {"SKTEST_COMMIT_INTERVAL": "1.0"}
    a = worker(uid, tmp_path, "a", postgres, **env).start()
    b = worker(uid, tmp_path, "b", postgres, **env).start()
    started = [a, b]

    async def feed() -> None:
        for at in range(0, len(rows), 100):
            await send(uid, rows[at : at + 100])
            await asyncio.sleep(0.1)

    try:
        await holding(a, b)
        feeder = asyncio.create_task(feed())
        for kill in range(1, 4):
            await rows_reach(postgres, uid, kill * 800, within=60)
            await holding(b)
            b.kill9()
            b = worker(uid, tmp_path, "b", postgres, **env).start()
            started.append(b)
        await feeder
        await rows_reach(postgres, uid, len(oracle(rows)), within=120)
        for w in started:
            w.stop()
    finally:
        for w in started:
            w.stop()
    for w in started:
        assert "worker failing" not in w.log(), w.log()
    # the replays met rows already in the table (and skipped them)
    assert any("the records before are skipped" in w.log() for w in started[1:])
    assert_exactly(await table_rows(postgres, uid), oracle(rows))


async def test_the_database_killed_and_restarted_mid_run_loses_and_repeats_nothing(
    uid: str, tmp_path: Path
) -> None:
    rows = orders(2000, seed=7)
    with start_postgres() as server:
        a = worker(uid, tmp_path, "a", server.dsn).start()
        try:
            await holding(a)
            await send(uid, rows[:1000])
            await rows_reach(server.dsn, uid, 300, within=60)
            await send(uid, rows[1000:1500])
            server.kill()  # kill -9 of the postmaster while rows are being written
            await asyncio.sleep(2)  # the stage waits, retrying; input keeps arriving
            await send(uid, rows[1500:])
            await asyncio.to_thread(server.start)
            await rows_reach(server.dsn, uid, len(oracle(rows)), within=120)
            a.stop()
        finally:
            a.stop()
        log = a.log()
        assert "unavailable, retrying" in log, log
        assert "worker failing" not in log, log
        assert_exactly(await table_rows(server.dsn, uid), oracle(rows))


async def test_a_row_the_table_refuses_goes_to_the_dead_letter_topic_with_its_error(
    uid: str, tmp_path: Path, postgres: str
) -> None:
    rows = orders(400, seed=3, refused=5)
    a = worker(uid, tmp_path, "a", postgres).start()
    try:
        await holding(a)
        await send(uid, rows)
        await rows_reach(postgres, uid, len(oracle(rows)), within=60)
        endpoint = re.search(r"http endpoint (http://\S+)", a.log())
        assert endpoint is not None, a.log()
        sink = f'sink="orders_{uid}"'

        async def counted() -> bool:  # the metrics trail by one checkpoint at most
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{endpoint[1]}/metrics") as response,
            ):
                text = await response.text()
            return (
                f'streamkit_sink_rows_total{{outcome="written",{sink}}} {len(oracle(rows))}.0'
                in text
                and f'streamkit_sink_rows_total{{outcome="refused",{sink}}} 5.0' in text
            )

        await wait_until(counted, within=30, what="the sink's metrics")
        a.stop()
    finally:
        a.stop()
    assert_exactly(await table_rows(postgres, uid), oracle(rows))
    dead = await read_all(f"sinks-{uid}-dlq")
    refused = {r["id"] for r in rows if r["amount"] < 0}
    conn = await asyncpg.connect(postgres)
    try:  # the destination keeps them too, with the same coordinates
        kept = await conn.fetch(
            "SELECT topic, partition, record_offset, error, row_json FROM streamkit_sink_refused "
            "WHERE sink = $1",
            f"sinks-{uid}:orders_{uid}",
        )
    finally:
        await conn.close()
    assert {orjson.loads(k["row_json"])[0] for k in kept} == refused
    assert all("violates check constraint" in k["error"] for k in kept)
    kept_at = {(k["topic"], k["partition"], k["record_offset"]) for k in kept}
    assert {orjson.loads(d.value)["id"] for d in dead} == refused
    for d in dead:
        why = describe(d.headers)
        assert why["streamkit.error.type"] == "SinkRefused"
        assert "violates check constraint" in why["streamkit.error"], why
        assert why["streamkit.source.topic"] == f"sinks-{uid}-by-user-repartition"
        at = (why["streamkit.source.topic"], int(why["streamkit.source.partition"]))
        assert (*at, int(why["streamkit.source.offset"])) in kept_at


async def test_upsert_mode_overwrites_replayed_rows_under_at_least_once(
    uid: str, tmp_path: Path, postgres: str
) -> None:
    rows = orders(2000, seed=5)
    conn = await asyncpg.connect(postgres)
    try:  # a stale row the sink must overwrite
        await conn.execute(
            f"CREATE TABLE orders_{uid} (id BIGINT PRIMARY KEY, user_id TEXT NOT NULL, "
            "amount BIGINT NOT NULL CHECK (amount >= 0), total BIGINT NOT NULL)"
        )
        await conn.execute(f"INSERT INTO orders_{uid} VALUES (0, 'stale', 0, 0)")
    finally:
        await conn.close()
    env = {"SKTEST_MODE": "upsert", "STREAMKIT_PROCESSING_GUARANTEE": "at_least_once"}
    a = worker(uid, tmp_path, "a", postgres, **env).start()
    started = [a]
    try:
        await holding(a)
        await send(uid, rows[:1000])
        await rows_reach(postgres, uid, 500, within=60)
        a.kill9()  # its uncommitted offsets are replayed: the same rows again
        a = worker(uid, tmp_path, "a", postgres, **env).start()
        started.append(a)
        await send(uid, rows[1000:])
        await rows_reach(postgres, uid, len(rows), within=120)
        a.stop()
    finally:
        for w in started:
            w.stop()
    assert_exactly(await table_rows(postgres, uid), oracle(rows, stateful=False))


async def test_a_zombie_writer_is_fenced_by_the_stored_offsets(uid: str, postgres: str) -> None:
    table = f"fence_{uid}"
    sink = sk.PostgresSink(
        table,
        columns=["id", "amount"],
        dsn=postgres,
        create=f"CREATE TABLE IF NOT EXISTS {table} (id BIGINT, amount BIGINT)",
    )
    await fence_two_writers(sink)
    conn = await asyncpg.connect(postgres)
    try:
        assert [tuple(r) for r in await conn.fetch(f"SELECT * FROM {table} ORDER BY id")] == [
            (1, 1),
            (2, 2),
        ]
    finally:
        await conn.close()
