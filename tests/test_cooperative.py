"""Cooperative rebalancing (STREAMKIT_REBALANCE_PROTOCOL=cooperative, the default) with real
worker processes under exactly-once (one transactional producer per worker): when a worker
joins and when one leaves, the partitions that stay with their worker keep producing
committed output while the ones that move are handed over (asserted from the outputs, read
under read_committed, as they arrive), only the moved tasks are revoked; `kill -9` of a
worker in the middle of a cooperative rebalance loses and duplicates nothing (outputs read
to their end offsets), and neither does a rolling switch between eager and cooperative
workers."""

from __future__ import annotations

import asyncio
import collections
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.chaoshelp import OutputWatch, figures
from tests.kafkahelp import WorkerProcess, chaos_only, read_all, wait_until
from tests.rebalancehelp import feed, owners, teardown

PARTITIONS = 6
RATE = 300  # events/s over the partitions


def coop_worker(uid: str, tmp_path: Path, name: str, **env: str) -> WorkerProcess:
    return WorkerProcess(
        "tests.procapp:app",
        {
            "SKTEST_ID": uid,
            "SKTEST_PARTITIONS": str(PARTITIONS),
            "STREAMKIT_WORKDIR": str(tmp_path / name),
            "STREAMKIT_HEARTBEAT_INTERVAL_MS": "500",
            "STREAMKIT_PROCESSING_GUARANTEE": "exactly_once",
            "STREAMKIT_TRANSACTIONAL_PRODUCER": "per_worker",
            "STREAMKIT_REBALANCE_PROTOCOL": "cooperative",
            "STREAMKIT_WEB_ENABLED": "false",
            **env,
        },
        tmp_path / f"{name}.log",
    )


def committed_twice(records: list[Any]) -> list[tuple[int, int]]:
    """The (input partition, offset) of every input record with more than one output."""
    seen = collections.Counter(
        (orjson.loads(r.value)["partition"], orjson.loads(r.value)["offset"]) for r in records
    )
    return sorted(c for c, n in seen.items() if n > 1)


async def assert_once_each(out: str, sent: list[int]) -> None:
    """Exactly once, by input coordinates: the outputs read until all are there, then to the
    end offsets (read_committed): no input record with two outputs, none without one."""
    await read_all(out, expect=len(sent), within=90)
    records = await read_all(out)  # to the end offsets, read_committed
    twice = committed_twice(records)
    assert not twice, f"{len(twice)} input records' outputs committed twice: {twice[:10]}"
    assert sorted(orjson.loads(r.value)["value"] for r in records) == sent


def arrivals(watch: OutputWatch, partition: int, pid: int | None = None) -> list[float]:
    return [
        at
        for at, record in zip(watch.times, watch.records, strict=True)
        if orjson.loads(record.value)["partition"] == partition
        and (pid is None or orjson.loads(record.value)["pid"] == pid)
    ]


def revoked_lines(w: WorkerProcess, since: int) -> list[set[int]]:
    """The partitions of each `revoked ...` line of a worker's log after byte `since`."""
    return [
        {int(p) for p in re.findall(r"\[(\d+)\]", line)}
        for line in w.log()[since:].splitlines()
        if "revoked proc-in" in line
    ]


async def handover(
    watch: OutputWatch, action: Callable[[], object], settled: Callable[[], bool]
) -> tuple[dict[str, float | int], set[int], set[int]]:
    """Run `action`, wait until `settled` and 2 s more, and measure from the outputs: the
    partitions that
    stayed with their pid and those that moved; the handover window (from the first moved
    partition's last output by its old pid to the last one's first output by its new pid);
    and the outputs of the stayed partitions that arrived inside it."""
    before = owners(watch, time.monotonic() - 1.5, time.monotonic())
    at = time.monotonic()
    action()
    await wait_until(settled, within=90, what="the rebalance", every=0.05)
    await asyncio.sleep(2.0)
    after = owners(watch, time.monotonic() - 1.5, time.monotonic())
    assert all(len(p) == 1 for p in (*before.values(), *after.values())), (before, after)
    stayed = {p for p in range(PARTITIONS) if before.get(p) == after.get(p)}
    moved = set(range(PARTITIONS)) - stayed
    assert stayed and moved, (before, after)
    last_old = min(arrivals(watch, p, next(iter(before[p])))[-1] for p in moved)
    first_new = max(
        next(t for t in arrivals(watch, p, next(iter(after[p]))) if t > at) for p in moved
    )
    inside = {p: sum(1 for t in arrivals(watch, p) if last_old < t < first_new) for p in stayed}
    gap = max(
        (
            b - a
            for p in stayed
            for a, b in zip(arrivals(watch, p), arrivals(watch, p)[1:], strict=False)
            if first_new >= a and b >= last_old
        ),
        default=0.0,
    )
    return (
        {
            "stayed": len(stayed),
            "moved": len(moved),
            "handover_s": round(first_new - last_old, 2),
            "stayed_outputs_during_handover": min(inside.values()),
            "stayed_longest_gap_s": round(gap, 2),
        },
        stayed,
        moved,
    )


@pytest.mark.parametrize(
    ("protocol", "guarantee", "fetch_path"),
    [
        ("cooperative", "exactly_once", "raw"),
        ("eager", "exactly_once", "raw"),
        ("cooperative", "at_least_once", "raw"),
        pytest.param(
            "cooperative", "exactly_once", "consumer", marks=chaos_only("cooperative/consumer")
        ),
        pytest.param("eager", "exactly_once", "consumer", marks=chaos_only("eager/consumer")),
    ],
)
async def test_a_cooperative_rebalance_keeps_the_partitions_that_stay_running(
    uid: str, tmp_path: Path, protocol: str, guarantee: str, fetch_path: str
) -> None:
    """(eager: the same measure, which must show every task stopped: the contrast. At least
    once: plain offset commits, which the group refuses between JoinGroup and SyncGroup. Both
    fetch paths: the raw one, and aiokafka's consumer, the reference.)"""
    topic, out = f"proc-in-{uid}", f"proc-out-{uid}"
    env = {
        "STREAMKIT_REBALANCE_PROTOCOL": protocol,
        "STREAMKIT_PROCESSING_GUARANTEE": guarantee,
        "STREAMKIT_FETCH_PATH": fetch_path,
    }
    a = coop_worker(uid, tmp_path, "a", **env).start()
    workers = [a]
    watch = OutputWatch(out)
    stop, sent = asyncio.Event(), list[int]()
    feeder: asyncio.Task[None] | None = None
    try:
        await wait_until(lambda: "assigned proc-in" in a.log(), within=60, what="a's partitions")
        await watch.start()
        feeder = asyncio.create_task(feed(topic, PARTITIONS, RATE, stop, sent))
        await wait_until(lambda: len(watch.records) > RATE, within=60, what="output flowing")

        # 1. a second worker joins: half of a's partitions move to it, the rest keep running
        b = coop_worker(uid, tmp_path, "b", **env)
        workers.append(b)
        mark = len(a.log())
        join, stayed, moved = await handover(
            watch, b.start, lambda: "assigned proc-in" in b.log() and "assigned" in a.log()[mark:]
        )
        assert len(moved) == PARTITIONS // 2
        revoked_at_join = revoked_lines(a, mark)
        # 2. it leaves (SIGTERM): its partitions come back to a, a's own keep running
        mark = len(a.log())
        leave, stayed2, moved2 = await handover(
            watch, lambda: b.signal(signal.SIGTERM), lambda: "assigned proc-in" in a.log()[mark:]
        )
        assert stayed2 == stayed and moved2 == moved
        revoked_at_leave = revoked_lines(a, mark)
        figures(f"rebalance, {protocol}, {guarantee}", join=join, leave=leave)
        if protocol == "eager":  # every task of a stopped, each time
            assert revoked_at_join == [set(range(PARTITIONS))]
            assert revoked_at_leave == [stayed]
        else:  # a revoked the moved tasks only, and nothing when they came back
            assert revoked_at_join == [moved] and revoked_at_leave == []
            for change in (join, leave):
                # the window says something: longer than a round trip of the group protocol
                # (a leave hands over in about 0.2 s since checkpoints keep a fixed rate)
                assert change["handover_s"] > 0.1, change
                # every partition that stayed had committed output inside it
                assert change["stayed_outputs_during_handover"] >= 1, change
        stop.set()
        await feeder
        await read_all(out, expect=len(sent), within=60)
        records = await read_all(out)  # to the end offsets, read_committed
        values = sorted(orjson.loads(r.value)["value"] for r in records)
        assert values == sent  # nothing lost, nothing twice
    finally:
        await teardown(stop, feeder, watch, workers)
    for w in workers:
        assert "Traceback" not in w.log(), w.log()


@pytest.mark.parametrize(
    ("victim", "producers"),
    [
        ("revoking", "per_worker"),
        pytest.param("joining", "per_worker", marks=chaos_only("joining/per_worker")),
        pytest.param("revoking", "per_partition", marks=chaos_only("revoking/per_partition")),
    ],
)
async def test_kill_9_during_a_cooperative_rebalance_loses_and_duplicates_nothing(
    uid: str, tmp_path: Path, victim: str, producers: str
) -> None:
    """Two workers run; a third joins. The moment one of the first two logs its cooperative
    revoke (between the two rounds) it is killed -9 ("revoking"), or the joiner is killed
    the moment it gets partitions ("joining"); the killed one is restarted at once. With one
    transactional producer per worker, and with one per partition."""
    topic, out = f"proc-in-{uid}", f"proc-out-{uid}"
    env = {"STREAMKIT_TRANSACTIONAL_PRODUCER": producers}
    first = [coop_worker(uid, tmp_path, n, **env).start() for n in ("a", "b")]
    workers = list(first)
    stop, sent = asyncio.Event(), list[int]()
    feeder: asyncio.Task[None] | None = None
    try:
        await wait_until(
            lambda: all("assigned proc-in" in w.log() for w in first), within=60, what="a, b"
        )
        feeder = asyncio.create_task(feed(topic, PARTITIONS, RATE, stop, sent, total=RATE * 12))
        await asyncio.sleep(2)
        marks = [len(w.log()) for w in first]
        c = coop_worker(uid, tmp_path, "c", **env).start()
        workers.append(c)

        def pick() -> WorkerProcess | None:
            if victim == "joining":
                return c if "assigned proc-in" in c.log() else None
            for w, mark in zip(first, marks, strict=True):
                if "cooperative rebalance" in w.log()[mark:]:
                    return w
            return None

        await wait_until(lambda: pick() is not None, within=60, what=victim, every=0.01)
        killed = pick()
        assert killed is not None
        killed.kill9()
        again = coop_worker(uid, tmp_path, "restarted", **env)
        again.env["STREAMKIT_WORKDIR"] = killed.env["STREAMKIT_WORKDIR"]
        workers.append(again.start())
        await feeder
        records = await read_all(out, expect=len(sent), within=90)
        twice = committed_twice(records)
        assert not twice, f"{len(twice)} input records' outputs committed twice: {twice[:10]}"
        values = sorted(orjson.loads(r.value)["value"] for r in records)
        assert values == sent, f"lost {len(set(sent) - set(values))}"
        records = await read_all(out)  # and to the end offsets: nothing after them either
        assert len(records) == len(sent)
    finally:
        await teardown(stop, feeder, None, workers)


async def test_no_checkpoint_commits_a_revoked_task_s_outputs_without_its_offset(
    uid: str, tmp_path: Path
) -> None:
    """One producer per worker: every task writes into one shared collector. `a` holds every
    partition; `b` joins; `a` closes the tasks it gives up, waits a second there (a test
    hook: three commit intervals), and is killed -9 before their last checkpoint. A
    checkpoint of the tasks still running inside that second would commit what the closed
    ones produced since the last one, without their offsets, and `b` would produce it
    again. Every input record's output arrives once, by its coordinates, read to the end
    offsets."""
    topic, out = f"proc-in-{uid}", f"proc-out-{uid}"
    hooks = "delay-after-revoke-close:1,crash-after-revoke-close:1"
    a = coop_worker(uid, tmp_path, "a", STREAMKIT_TEST_HOOK=hooks).start()
    workers = [a]
    stop, sent = asyncio.Event(), list[int]()
    feeder: asyncio.Task[None] | None = None
    try:
        await wait_until(lambda: "assigned proc-in" in a.log(), within=60, what="a")
        feeder = asyncio.create_task(feed(topic, PARTITIONS, RATE, stop, sent, total=RATE * 8))
        await asyncio.sleep(2)
        workers.append(coop_worker(uid, tmp_path, "b").start())
        await wait_until(lambda: not a.alive, within=60, what="a's crash in its revoke")
        assert "test hook: crash-after-revoke-close" in a.log(), a.log()
        await feeder
        await assert_once_each(out, sent)
    finally:
        await teardown(stop, feeder, None, workers)


async def test_a_rolling_switch_between_eager_and_cooperative_loses_and_duplicates_nothing(
    uid: str, tmp_path: Path
) -> None:
    """Two eager workers (the earlier default) are restarted one by one as cooperative ones
    (the new default) on their workdirs while events flow, then a third cooperative worker
    joins, then one goes back to eager: the group mixes both kinds at every step; once all
    are cooperative a join revokes only what moves; every event's output arrives once
    (read_committed, to the end offsets), and no worker fails."""
    topic, out = f"proc-in-{uid}", f"proc-out-{uid}"
    eager = {"STREAMKIT_REBALANCE_PROTOCOL": "eager"}
    a, b = (coop_worker(uid, tmp_path, n, **eager).start() for n in ("a", "b"))
    workers = [a, b]
    stop, sent = asyncio.Event(), list[int]()
    feeder: asyncio.Task[None] | None = None

    def restart(old: WorkerProcess, name: str, protocol: str) -> WorkerProcess:
        old.stop()  # SIGTERM, then wait
        new = coop_worker(uid, tmp_path, name, STREAMKIT_REBALANCE_PROTOCOL=protocol)
        new.env["STREAMKIT_WORKDIR"] = old.env["STREAMKIT_WORKDIR"]
        workers.append(new.start())
        return new

    async def settled(*ws: WorkerProcess) -> None:
        await wait_until(
            lambda: all("assigned proc-in" in w.log().rsplit("revoked", 1)[-1] for w in ws),
            within=90,
            what="the group to settle",
        )

    try:
        await settled(a, b)
        feeder = asyncio.create_task(feed(topic, PARTITIONS, RATE, stop, sent))
        await wait_until(lambda: len(sent) > RATE, within=30, what="events sent")
        a2 = restart(a, "a2", "cooperative")  # eager b and cooperative a2
        await settled(a2, b)
        b2 = restart(b, "b2", "cooperative")  # both cooperative now
        await settled(a2, b2)
        marks = [len(a2.log()), len(b2.log())]
        c = coop_worker(uid, tmp_path, "c").start()
        workers.append(c)
        await wait_until(lambda: "assigned proc-in" in c.log(), within=90, what="c's partitions")
        # the whole group is current and cooperative: a's and b's revokes were of what moved
        for w, mark in zip((a2, b2), marks, strict=True):
            assert "revoking all" not in w.log()[mark:], w.log()[mark:]
        rounds = [w.log()[m:] for w, m in zip((a2, b2), marks, strict=True)]
        assert any("cooperative rebalance" in log for log in rounds), rounds
        b3 = restart(b2, "b3", "eager")  # and back: eager again beside cooperative ones
        await settled(a2, b3, c)
        await asyncio.sleep(1.0)
        stop.set()
        await feeder
        records = await read_all(out, expect=len(sent), within=90)
        twice = committed_twice(records)
        assert not twice, f"{len(twice)} input records' outputs committed twice: {twice[:10]}"
        values = sorted(orjson.loads(r.value)["value"] for r in records)
        assert values == sent, f"lost {len(set(sent) - set(values))}"
        assert len(await read_all(out)) == len(sent)  # to the end offsets
    finally:
        await teardown(stop, feeder, None, workers)
    for w in workers:
        assert "worker failing" not in w.log() and "Traceback" not in w.log(), w.log()
