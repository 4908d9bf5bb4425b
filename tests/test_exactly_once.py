"""Exactly-once against the real broker with real `streamkit worker apps.shop:app` processes:
crashes at the worst moments, an aborted transaction, a zombie worker."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import time
from pathlib import Path

import pytest

from streamkit.state import inspect as inspect_state
from tests.chaoshelp import OutputWatch, figures, summary
from tests.kafkahelp import WorkerProcess, chaos_only, read_all, wait_until
from tests.rebalancehelp import held
from tests.shophelp import (
    assert_exactly_once,
    assert_state,
    finish,
    holding,
    oracle,
    purchases,
    send,
    shop_app,
    shop_worker,
)


async def test_a_crash_between_the_kafka_commit_and_the_sqlite_write_costs_a_replay(
    uid: str, tmp_path: Path
) -> None:
    wd = tmp_path / "state"
    rows = purchases(3000, seed=11)
    victim = shop_worker(uid, wd, tmp_path, "victim")
    victim.env["STREAMKIT_TEST_HOOK"] = "crash-after-commit:2"
    victim.start()
    await holding(victim)
    await send(uid, rows[:2000])
    assert victim.wait(60) == -signal.SIGKILL, victim.log()
    assert "test hook: crash-after-commit" in victim.log()
    survivor = shop_worker(uid, wd, tmp_path, "survivor")
    records = await finish(survivor, uid, rows[2000:], expect=3000, within=90)
    replays = [line for line in survivor.log().splitlines() if "changelog records replayed" in line]
    assert any(" 0 changelog" not in line for line in replays), "the stale store replayed nothing"
    assert_exactly_once(records, rows)
    assert_state(shop_app(uid, wd), rows)


async def test_a_store_written_only_at_the_stop_is_rebuilt_from_the_changelog_after_kill_9(
    uid: str, tmp_path: Path
) -> None:
    """`state_write_interval`: the checkpoints commit the tables' changes to the changelog,
    and their SQLite files wait (an hour here, the first write at half of it at the
    earliest). A worker killed -9 after 2,000 committed events has written no row to its
    stores; the next one replays the changelog and counts every event once, and its stop
    writes the stores whole."""
    wd = tmp_path / "state"
    rows = purchases(3000, seed=13)
    victim = shop_worker(uid, wd, tmp_path, "victim")
    victim.env["STREAMKIT_STATE_WRITE_INTERVAL"] = "3600"
    victim.start()
    await holding(victim)
    await send(uid, rows[:2000])
    await read_all(f"totals-{uid}", expect=2000, within=90)
    app = shop_app(uid, wd)
    assert inspect_state.read_all(app, "count") == {}, "a store was written before its time"
    victim.kill9()
    survivor = shop_worker(uid, wd, tmp_path, "survivor")
    survivor.env["STREAMKIT_STATE_WRITE_INTERVAL"] = "3600"
    records = await finish(survivor, uid, rows[2000:], expect=3000, within=90)
    replayed = re.findall(r"open, (\d+) changelog records replayed", survivor.log())
    assert sum(map(int, replayed)) >= len(oracle(rows[:2000])[1]), survivor.log()
    assert_exactly_once(records, rows)
    assert_state(app, rows)  # the survivor's last checkpoint wrote every store


@pytest.mark.parametrize("fetch_path", ["raw", "consumer"])
async def test_an_aborted_transaction_shows_nothing_and_its_events_count_once(
    uid: str, tmp_path: Path, fetch_path: str
) -> None:
    wd = tmp_path / "state"
    rows = purchases(3000, seed=12)
    w = shop_worker(uid, wd, tmp_path, "w")
    w.env["STREAMKIT_TEST_HOOK"] = "fail-before-commit:6"
    w.env["STREAMKIT_FETCH_PATH"] = fetch_path
    w.start()
    try:
        await holding(w)
        await send(uid, rows[:2000])
        await wait_until(
            lambda: "rejoining" in w.log() or not w.alive, within=60, what="the injected abort"
        )
        assert w.alive, w.log()
        await send(uid, rows[2000:])
        records = await read_all(f"totals-{uid}", expect=3000, within=90)
    finally:
        w.stop()
    assert "InjectedFault" in w.log()
    assert_exactly_once(records, rows)
    assert_state(shop_app(uid, wd), rows)
    # the aborted transaction's records were written, then aborted: only a read_uncommitted
    # reader sees them
    seen = 0
    for topic in (f"totals-{uid}", f"shop-{uid}-by-user-repartition"):
        seen += len(await read_all(topic, isolation="read_uncommitted"))
    assert seen > 3000 * 2, "the aborted transaction wrote nothing"


async def test_a_zombie_is_fenced_and_writes_no_duplicate(uid: str, tmp_path: Path) -> None:
    rows = purchases(4500, seed=13)
    a = shop_worker(uid, tmp_path / "a", tmp_path, "a").start()
    b = shop_worker(uid, tmp_path / "b", tmp_path, "b").start()
    try:
        await holding(a, b)
        await send(uid, rows[:1500])
        await read_all(f"totals-{uid}", expect=1500, within=60)
        await send(uid, rows[1500:1600])  # a has events in flight when it freezes
        a.signal(signal.SIGSTOP)
        frozen = time.monotonic()
        await wait_until(
            lambda: len(held(b.log())) == 8, within=60, what="b to take over a's partitions"
        )
        taken_over = time.monotonic() - frozen
        await send(uid, rows[1600:3000])
        await read_all(f"totals-{uid}", expect=3000, within=60)
        a.signal(signal.SIGCONT)
        thawed = time.monotonic()
        await wait_until(
            # per-partition producers: fenced by a's transactional ids; one per worker
            # (KIP-447): refused by the group coordinator
            lambda: (
                "fenced: ProducerFenced" in a.log()
                or "fenced: GroupFenced" in a.log()
                or not a.alive
            ),
            within=60,
            what="a to learn it is fenced",
        )
        fenced_in = time.monotonic() - thawed
        assert a.alive, a.log()
        await holding(a, b)
        await send(uid, rows[3000:])
        records = await read_all(f"totals-{uid}", expect=4500, within=90)
    finally:
        a.signal(signal.SIGCONT)
        a.stop()
        b.stop()
    assert_exactly_once(records, rows)
    figures(
        "zombie",
        events_checked=len(records),
        taken_over_after_freeze_s=round(taken_over, 2),
        fenced_after_resume_s=round(fenced_in, 2),
    )


CHAOS_KILLS = int(os.environ.get("CHAOS_KILLS", "20"))
CHAOS_EVENTS = int(os.environ.get("CHAOS_EVENTS", "6000"))


@pytest.mark.parametrize(
    "fetch_path", ["raw", pytest.param("consumer", marks=chaos_only("consumer"))]
)
async def test_kill_9_at_random_moments_loses_nothing_and_counts_nothing_twice(
    uid: str, tmp_path: Path, fetch_path: str
) -> None:
    """Three workers; one of them, chosen at random, is killed with SIGKILL at a random moment
    and restarted on its own workdir, again and again, while purchases flow in (on either
    fetch path: the raw one, and aiokafka's consumer, the reference, which only `make chaos`
    runs: the suite's time)."""
    kills = CHAOS_KILLS
    seed = int(os.environ.get("CHAOS_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    rows = purchases(CHAOS_EVENTS, seed=seed)
    workdirs = [tmp_path / f"wd{i}" for i in range(3)]
    incarnations: list[WorkerProcess] = []

    def start(i: int) -> WorkerProcess:
        w = shop_worker(uid, workdirs[i], tmp_path, f"w{i}-{len(incarnations)}")
        w.env["STREAMKIT_FETCH_PATH"] = fetch_path
        incarnations.append(w.start())
        return w

    workers = [start(i) for i in range(3)]
    await holding(workers[0])
    watch = await OutputWatch(f"totals-{uid}").start()
    kill_times: list[float] = []
    chunk = max(1, CHAOS_EVENTS // (kills * 3))

    async def feed() -> None:
        for at in range(0, len(rows), chunk):
            await send(uid, rows[at : at + chunk])
            await asyncio.sleep(0.5)

    feeder = asyncio.create_task(feed())
    try:
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.3, 3.0))
            i = rng.randrange(3)
            workers[i].kill9()
            kill_times.append(time.monotonic())
            workers[i] = start(i)
        await feeder
        records = await watch.wait_for(len(rows), within=240)
        await watch.stop()
        # the last two leave gracefully: the first ends up owning (and restoring) everything
        for w in workers[1:]:
            w.stop()
        await wait_until(
            lambda: owns_all_stores(workers[0]), within=90, what="w0 to own every store"
        )
        workers[0].stop()
    finally:
        feeder.cancel()
        await watch.stop()
        for w in incarnations:
            w.stop()
    recoveries = [r for r in map(watch.resumed_after, kill_times) if r is not None]
    figures(
        "kill -9",
        seed=seed,
        kills_survived=kills,
        events_checked=len(records),
        **summary(recoveries),
    )
    for w in incarnations:
        assert "worker failing" not in w.log(), w.log()
    assert_exactly_once(records, rows)
    assert_state(shop_app(uid, workdirs[0]), rows)


def stores_open(log: str) -> set[str]:
    """The partitions whose store a worker has open now: a "<stage>/<p>.sqlite: open" line
    after the assignment that gave it the task (a task kept through a cooperative rebalance
    keeps its store open; an eager rebalance reopens every store)."""
    stores: set[str] = set()
    for line in log.splitlines():
        if " assigned " in line:  # "assigned <all it holds>[ (new: <the new ones>)]"
            listed = line.split(" assigned ", 1)[1].split(" (new: ")[-1]
            stores -= set(STATEFUL.findall(listed))
        elif " revoked " in line:
            stores -= set(STATEFUL.findall(line))
        elif (found := STORE_OPEN.search(line)) is not None:
            stores.add(found.group(1))
    return stores


STATEFUL = re.compile(r"-repartition\[(\d+)\]")
STORE_OPEN = re.compile(r"/(\d+)\.sqlite: open, ")


def owns_all_stores(w: WorkerProcess) -> bool:
    """After its last rebalance `w` holds all 8 tasks' partitions and has the 4 stores open."""
    log = w.log()
    return len(held(log)) == 8 and stores_open(log) == {"0", "1", "2", "3"}
