"""State against the real broker: SQLite tables per partition, changelogs, recovery, state that
follows its partition. Real `streamkit worker apps.shop:app` processes on private topics."""

from __future__ import annotations

import collections
import importlib
import os
import random
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

import streamkit as sk
from streamkit.state import inspect as inspect_state
from tests.kafkahelp import WorkerProcess, end_offsets, produce, read_all, wait_until

USERS = 40


def shop_env(uid: str, workdir: Path) -> dict[str, str]:
    return {
        "SHOP_APP_ID": f"shop-{uid}",
        "SHOP_PURCHASES": f"purchases-{uid}",
        "SHOP_TOTALS": f"totals-{uid}",
        "STREAMKIT_WORKDIR": str(workdir),
    }


def shop_app(uid: str, workdir: Path) -> sk.App:
    """The same app the workers run, loaded here to read their local state."""
    os.environ.update(shop_env(uid, workdir))
    app: sk.App = importlib.reload(importlib.import_module("apps.shop")).app
    return app


def purchases(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"user_id": f"user_{rng.randrange(USERS)}", "amount": rng.randrange(1, 500) / 4, "ts": i}
        for i in range(n)
    ]


def oracle(rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, int]]:
    spent: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.Counter()
    for r in rows:
        spent[r["user_id"]] += r["amount"]
        count[r["user_id"]] += 1
    return dict(spent), dict(count)


def shop_worker(uid: str, workdir: Path, logs: Path, name: str) -> WorkerProcess:
    return WorkerProcess("apps.shop:app", shop_env(uid, workdir), logs / f"{name}.log")


async def send(uid: str, rows: list[dict[str, Any]]) -> None:
    await produce(f"purchases-{uid}", [orjson.dumps(r) for r in rows])


async def holding(*workers: WorkerProcess) -> None:
    await wait_until(
        lambda: all("assigned" in w.log().rsplit("revoked", 1)[-1] for w in workers),
        within=90,
        what="workers holding partitions",
    )


def last_totals(records: list[Any]) -> dict[str, dict[str, Any]]:
    last = {}
    for r in records:  # per key, totals arrive in order (one partition per user)
        value = orjson.loads(r.value)
        last[value["user_id"]] = value
    return last


def assert_state(app: sk.App, rows: list[dict[str, Any]]) -> None:
    spent, count = oracle(rows)
    assert inspect_state.read_all(app, "count") == count
    assert inspect_state.read_all(app, "spent") == pytest.approx(spent)


async def test_counts_are_exact_across_a_graceful_restart(uid: str, tmp_path: Path) -> None:
    wd = tmp_path / "state"
    rows = purchases(3000, seed=1)
    first = shop_worker(uid, wd, tmp_path, "first").start()
    await holding(first)
    await send(uid, rows[:2000])
    await read_all(f"totals-{uid}", expect=2000, within=60)
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    second = shop_worker(uid, wd, tmp_path, "second").start()
    try:
        await holding(second)
        await send(uid, rows[2000:])
        records = await read_all(f"totals-{uid}", expect=3000, within=60)
    finally:
        second.stop()
    assert len(records) == 3000
    spent, count = oracle(rows)
    last = last_totals(records)
    assert {u: v["count"] for u, v in last.items()} == count
    assert {u: v["total"] for u, v in last.items()} == pytest.approx(spent)
    assert_state(shop_app(uid, wd), rows)


async def test_lost_and_corrupt_stores_are_rebuilt_from_the_changelog(
    uid: str, tmp_path: Path
) -> None:
    wd = tmp_path / "state"
    rows = purchases(2000, seed=2)
    w = shop_worker(uid, wd, tmp_path, "w1").start()
    await holding(w)
    await send(uid, rows[:1000])
    await read_all(f"totals-{uid}", expect=1000, within=60)
    w.stop()
    app = shop_app(uid, wd)
    files = sorted(p.path for p in inspect_state.local_partitions(app) if p.table == "count")
    assert len(files) == 4
    files[0].unlink()  # lost
    for side in ("-wal", "-shm"):
        files[0].with_name(files[0].name + side).unlink(missing_ok=True)
    data = bytearray(files[1].read_bytes())  # corrupt: garbage over the b-tree pages
    data[1024 : 1024 + 4096] = os.urandom(4096)
    files[1].write_bytes(bytes(data))

    w = shop_worker(uid, wd, tmp_path, "w2").start()
    try:
        await holding(w)
        await send(uid, rows[1000:])
        records = await read_all(f"totals-{uid}", expect=2000, within=60)
    finally:
        w.stop()
    _spent, count = oracle(rows)
    assert {u: v["count"] for u, v in last_totals(records).items()} == count
    assert_state(app, rows)
    assert list(files[1].parent.glob(f"{files[1].name}.bad-*")), "corrupt file not set aside"
    assert "set aside" in w.log()


async def test_state_follows_partitions_as_workers_join_and_leave(uid: str, tmp_path: Path) -> None:
    rows = purchases(6000, seed=3)
    workers = [shop_worker(uid, tmp_path / f"wd{i}", tmp_path, f"w{i}") for i in range(3)]
    workers[0].start()
    await holding(workers[0])
    await send(uid, rows[:1500])
    workers[1].start()  # a second joins while events flow
    await send(uid, rows[1500:3000])
    await holding(workers[0], workers[1])
    workers[2].start()  # a third joins
    await send(uid, rows[3000:4500])
    await holding(*workers)
    workers[0].stop()  # the first leaves
    await send(uid, rows[4500:])
    try:
        records = await read_all(f"totals-{uid}", expect=6000, within=120)
    finally:
        for w in workers:
            w.stop()
    assert len(records) == 6000, "graceful rebalances must not replay or lose"
    spent, count = oracle(rows)
    last = last_totals(records)
    assert {u: v["count"] for u, v in last.items()} == count
    assert {u: v["total"] for u, v in last.items()} == pytest.approx(spent)


async def test_kill_9_then_restart_restores_state(uid: str, tmp_path: Path) -> None:
    wd = tmp_path / "state"
    rows = purchases(4000, seed=4)
    victim = shop_worker(uid, wd, tmp_path, "victim").start()
    await holding(victim)
    await send(uid, rows)
    await wait_until(
        lambda: len(list(wd.rglob("*.sqlite"))) == 4, within=60, what="the stores to exist"
    )
    victim.kill9()
    survivor = shop_worker(uid, wd, tmp_path, "survivor").start()
    try:
        await holding(survivor)
        records = await read_all(f"totals-{uid}", expect=4000, within=90)
    finally:
        survivor.stop()
    # At-least-once: events after the last commit may count twice, none is lost, and the
    # restored state goes on from what the changelog held (never from zero).
    _spent, count = oracle(rows)
    last = last_totals(records)
    assert set(last) == set(count)
    for user, value in last.items():
        assert value["count"] >= count[user]
    state = inspect_state.read_all(shop_app(uid, wd), "count")
    assert state == {u: v["count"] for u, v in last.items()}


def replayed_after_last_rebalance(log: str) -> list[int]:
    tail = log.rsplit("revoked", 1)[-1]
    return [
        int(line.split("open, ")[1].split()[0]) for line in tail.splitlines() if "open, " in line
    ]


async def test_a_standby_takes_over_replaying_only_the_tail(uid: str, tmp_path: Path) -> None:
    env = {"STREAMKIT_STANDBY_REPLICAS": "1"}
    rows = purchases(5000, seed=5)
    a = shop_worker(uid, tmp_path / "a", tmp_path, "a")
    b = shop_worker(uid, tmp_path / "b", tmp_path, "b")
    a.env.update(env)
    b.env.update(env)
    a.start()
    b.start()
    try:
        await holding(a, b)
        await send(uid, rows[:4000])
        await read_all(f"totals-{uid}", expect=4000, within=60)
        # every partition has one owner and one standby: both workdirs hold all 4 stores
        app_b = shop_app(uid, tmp_path / "b")
        await wait_until(
            lambda: (
                {p.partition for p in inspect_state.local_partitions(app_b)} == {0, 1, 2, 3}
                and "standbys:" in b.log()
            ),
            within=60,
            what="b to hold standbys",
        )
        changelog = await end_offsets(f"shop-{uid}-count-changelog")
        await wait_until(
            lambda: _standby_caught_up(app_b, uid, changelog), within=60, what="standbys current"
        )
        a.signal(signal.SIGTERM)  # a leaves: b owns everything now
        assert a.wait(30) == 0
        await wait_until(
            lambda: len(replayed_after_last_rebalance(b.log())) >= 4,
            within=60,
            what="b to open all four stores",
        )
        await send(uid, rows[4000:])
        records = await read_all(f"totals-{uid}", expect=5000, within=60)
    finally:
        a.stop()
        b.stop()
    replayed = replayed_after_last_rebalance(b.log())
    assert all(changelog[p] > 0 for p in range(4)), "every standby had a changelog to follow"
    total = sum(changelog.values()) * 2  # two tables
    assert sum(replayed) <= total * 0.05, (replayed, total)
    _spent, count = oracle(rows)
    assert {u: v["count"] for u, v in last_totals(records).items()} == count


def _standby_caught_up(app: sk.App, uid: str, ends: dict[int, int]) -> bool:
    import sqlite3

    for part in inspect_state.local_partitions(app):
        if part.table != "count":
            continue
        db = sqlite3.connect(f"file:{part.path}?mode=ro", uri=True)
        try:
            rows = dict(
                ((t, p), o)
                for t, p, o in db.execute("SELECT topic, partition, offset FROM offsets")
            )
        finally:
            db.close()
        if rows.get((f"shop-{uid}-count-changelog", part.partition), -1) < ends[part.partition] - 1:
            return False
    return True
