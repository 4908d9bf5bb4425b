"""Static membership (STREAMKIT_INSTANCE_ID, KIP-345) with real worker processes: a worker killed
with -9 and restarted under the same instance id within the session timeout gets its own
partitions back, the other worker sees no rebalance, and nothing is lost (or, exactly-once,
duplicated). The time from the restart until each of its partitions produces output again is
the figure of docs/reliability.md."""

from __future__ import annotations

import asyncio
import collections
import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.chaoshelp import OutputWatch, figures
from tests.kafkahelp import WorkerProcess, read_all, wait_until
from tests.rebalancehelp import feed

PARTITIONS = 4
RATE = 200  # events/s, spread over the partitions
SESSION_TIMEOUT_MS = "30000"  # a restart lands well inside it


def static_worker(uid: str, tmp_path: Path, name: str, guarantee: str) -> WorkerProcess:
    return WorkerProcess(
        "tests.procapp:app",
        {
            "SKTEST_ID": uid,
            "SKTEST_PARTITIONS": str(PARTITIONS),
            "STREAMKIT_WORKDIR": str(tmp_path / name),
            "STREAMKIT_INSTANCE_ID": f"{name}-{uid}",
            "STREAMKIT_SESSION_TIMEOUT_MS": SESSION_TIMEOUT_MS,
            "STREAMKIT_HEARTBEAT_INTERVAL_MS": "1000",
            "STREAMKIT_PROCESSING_GUARANTEE": guarantee,
        },
        tmp_path / f"{name}.log",
    )


def assigned(w: WorkerProcess, since: int = 0) -> list[str]:
    """The `assigned ...` lines of a worker's log after byte `since`."""
    return [line for line in w.log()[since:].splitlines() if "assigned proc-in" in line]


def partitions_of(line: str) -> set[int]:
    """`... assigned proc-in-x[0], proc-in-x[2]` → {0, 2}."""
    return {int(p) for p in re.findall(r"\[(\d+)\]", line)}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_a_static_worker_restarted_after_kill_9_gets_its_partitions_back_at_once(
    uid: str, tmp_path: Path, guarantee: str
) -> None:
    topic, out = f"proc-in-{uid}", f"proc-out-{uid}"
    a = static_worker(uid, tmp_path, "a", guarantee).start()
    b = static_worker(uid, tmp_path, "b", guarantee).start()
    watch: OutputWatch | None = None
    stop, sent = asyncio.Event(), list[int]()
    feeder: asyncio.Task[None] | None = None
    a2: WorkerProcess | None = None
    try:
        # 1. both hold partitions (the second join may move some: wait for the final split)
        def split() -> bool:
            la, lb = assigned(a), assigned(b)
            if not la or not lb:
                return False
            pa, pb = partitions_of(la[-1]), partitions_of(lb[-1])
            return not pa & pb and len(pa | pb) == PARTITIONS

        await wait_until(split, within=90, what="two workers sharing the partitions")
        assert a.alive and b.alive, a.log() + b.log()
        mine = partitions_of(assigned(a)[-1])
        b_mark = len(b.log())  # b's log from here on must show no rebalance
        watch = await OutputWatch(out).start()
        feeder = asyncio.create_task(feed(topic, PARTITIONS, RATE, stop, sent))
        await wait_until(lambda: len(watch.records) > RATE, within=60, what="output flowing")

        # 2. kill -9 a, restart it at once with the same instance id and workdir
        a.kill9()
        a2 = static_worker(uid, tmp_path, "a", guarantee)
        a2.log_path = tmp_path / "a2.log"
        restarted = time.monotonic()
        a2.start()
        assert a2.proc is not None
        pid = a2.proc.pid

        def back() -> bool:
            seen = {
                orjson.loads(r.value)["partition"]
                for r in watch.records[-4 * RATE :]
                if orjson.loads(r.value)["pid"] == pid
            }
            return mine <= seen

        await wait_until(back, within=30, what="the restarted worker's output", every=0.02)
        firsts: dict[int, float] = {}
        for times, rec in _arrivals(watch):
            value = orjson.loads(rec.value)
            if value["pid"] == pid and value["partition"] not in firsts:
                firsts[value["partition"]] = times
        recovery = max(firsts[p] for p in mine) - restarted
        stop.set()
        await feeder
        n = len(sent)
        await wait_until(
            lambda: len({orjson.loads(r.value)["value"] for r in watch.records}) >= n,
            within=60,
            what=f"outputs of all {n} events",
            every=0.2,
        )
        records = await read_all(out)  # to the end offsets, read_committed
        b_log = b.log()[b_mark:]  # before b is stopped (its stop revokes its partitions)
    finally:
        stop.set()
        if feeder is not None:
            await asyncio.gather(feeder, return_exceptions=True)
        if watch is not None:
            await watch.stop()
        for w in (a, b, a2):
            if w is not None:
                w.stop()

    # a got its own partitions back; b never took part in a rebalance
    assert a2 is not None
    got = assigned(a2)
    assert got and partitions_of(got[0]) == mine, a2.log()
    assert "revoked" not in b_log and "assigned" not in b_log, f"b saw a rebalance:\n{b_log}"
    values = collections.Counter(orjson.loads(r.value)["value"] for r in records)
    assert set(values) == set(range(n)), f"lost: {sorted(set(range(n)) - set(values))[:10]}"
    if guarantee == "exactly_once":
        assert max(values.values()) == 1, "duplicated under exactly-once"
    figures(
        f"static-restart-{guarantee}",
        restart_to_processing_s=round(recovery, 2),
        partitions=sorted(mine),
        events=n,
        duplicates=sum(c - 1 for c in values.values()),
    )
    assert recovery < 3.0, f"partitions processed again {recovery:.2f}s after the restart"


def _arrivals(watch: OutputWatch) -> list[tuple[float, Any]]:
    """Each record of the watch with the time its batch arrived (records and arrival times are
    appended batch by batch, in the same order)."""
    return list(zip(watch.times, watch.records, strict=True))
