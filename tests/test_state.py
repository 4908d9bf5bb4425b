"""State against the real broker: SQLite tables per partition, changelogs, recovery, state that
follows its partition. Real `streamkit worker apps.shop:app` processes on private topics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from streamkit.state import inspect as inspect_state
from tests.kafkahelp import ROOT, WorkerProcess, read_all, wait_until
from tests.shophelp import (
    assert_state,
    finish,
    holding,
    last_totals,
    oracle,
    purchases,
    send,
    shop_app,
    shop_env,
    shop_worker,
)


async def test_counts_are_exact_across_a_graceful_restart(uid: str, tmp_path: Path) -> None:
    wd = tmp_path / "state"
    rows = purchases(3000, seed=1)
    first = shop_worker(uid, wd, tmp_path, "first").start()
    await holding(first)
    await send(uid, rows[:2000])
    await read_all(f"totals-{uid}", expect=2000, within=60)
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0
    second = shop_worker(uid, wd, tmp_path, "second")
    records = await finish(second, uid, rows[2000:], expect=3000, within=60)
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
    # apps.shop runs exactly-once: the restored state goes on from the last committed
    # transaction (never from zero) and no event counts twice.
    spent, count = oracle(rows)
    assert len(records) == 4000
    last = last_totals(records)
    assert {u: v["count"] for u, v in last.items()} == count
    assert {u: v["total"] for u, v in last.items()} == pytest.approx(spent)
    assert_state(shop_app(uid, wd), rows)


def reset_app(uid: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """`streamkit reset apps.shop:app --yes` on a machine whose state folder is `workdir`."""
    return subprocess.run(
        [sys.executable, "-m", "streamkit.cli", "reset", "apps.shop:app", "--yes"],
        env={**os.environ, **shop_env(uid, workdir)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


async def test_a_store_left_on_another_machine_by_a_reset_is_rebuilt_not_reused(
    uid: str, tmp_path: Path
) -> None:
    """Machine A ran the app; `streamkit reset` ran on machine B (it deletes and recreates the
    changelogs, and only B's state folder); B ran the app again, so the new changelogs are
    longer than A's stores' offsets. When A starts again, its stores name changelog topic ids
    that no longer exist: each is wiped and rebuilt from the new changelog."""
    wd_a, wd_b = tmp_path / "a", tmp_path / "b"
    rows = purchases(2200, seed=5)
    a = shop_worker(uid, wd_a, tmp_path, "a1").start()
    await holding(a)
    await send(uid, rows[:1000])
    await read_all(f"totals-{uid}", expect=1000, within=60)
    a.stop()
    reset = await asyncio.to_thread(reset_app, uid, wd_b)
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert len(list(wd_a.rglob("*.sqlite"))) == 4  # machine A's stores are still there
    b = shop_worker(uid, wd_b, tmp_path, "b").start()
    try:
        await holding(b)
        await send(uid, rows[1000:2000])
        await read_all(f"totals-{uid}", expect=3000, within=90)  # the rerun, then the new rows
    finally:
        b.stop()
    a = shop_worker(uid, wd_a, tmp_path, "a2").start()
    try:
        await holding(a)
        await send(uid, rows[2000:])
        records = await read_all(f"totals-{uid}", expect=3200, within=90)
    finally:
        a.stop()
    assert "created again (id" in a.log(), "a store from before the reset was reused"
    _spent, count = oracle(rows)  # after the reset every purchase counts once
    assert {u: v["count"] for u, v in last_totals(records).items()} == count
    assert_state(shop_app(uid, wd_a), rows)


async def test_standbys_keep_warm_copies_of_the_other_workers_partitions(
    uid: str, tmp_path: Path
) -> None:
    """With standby_replicas=1 and two workers, each worker's folder ends up with every
    partition: its own (active) and the other's (standby, tailed from the changelogs)."""
    rows = purchases(2000, seed=6)
    folders = [tmp_path / "s0", tmp_path / "s1"]
    workers = [
        WorkerProcess(
            "apps.shop:app",
            {**shop_env(uid, wd), "STREAMKIT_STANDBY_REPLICAS": "1"},
            tmp_path / f"s{i}.log",
        ).start()
        for i, wd in enumerate(folders)
    ]
    _spent, count = oracle(rows)
    try:
        await holding(*workers)
        await send(uid, rows)
        await read_all(f"totals-{uid}", expect=2000, within=90)

        def warm() -> bool:
            return all(
                inspect_state.read_all(shop_app(uid, wd), "count") == count for wd in folders
            )

        await wait_until(warm, within=60, what="both folders to hold every partition")
    finally:
        for w in workers:
            w.stop()
    assert all("standbys: " in w.log() for w in workers)
