"""Real `streamkit worker` processes: sharing partitions, SIGTERM, kill -9 (at-least-once)."""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import orjson

from tests.kafkahelp import (
    WorkerProcess,
    committed,
    end_offsets,
    produce,
    read_all,
    wait_until,
)


def worker(uid: str, tmp_path: Path, name: str, **env: str) -> WorkerProcess:
    return WorkerProcess(
        "tests.procapp:app",
        {"SKTEST_ID": uid, "STREAMKIT_WORKDIR": str(tmp_path / name), **env},
        tmp_path / f"{name}.log",
    )


def outputs(records: list[object]) -> list[dict[str, object]]:
    return [orjson.loads(r.value) for r in records]  # type: ignore[attr-defined]


async def started(*workers: WorkerProcess) -> None:
    for w in workers:

        def up(w: WorkerProcess = w) -> bool:
            return "assigned" in w.log() or not w.alive

        await wait_until(up, within=60, what="a worker to start")
        assert w.alive, w.log()


async def test_two_worker_processes_share_the_partitions(uid: str, tmp_path: Path) -> None:
    a = worker(uid, tmp_path, "a").start()
    b = worker(uid, tmp_path, "b").start()
    try:
        await started(a, b)
        await wait_until(
            lambda: (
                "assigned proc-in" in a.log().split("revoked")[-1]
                and "assigned proc-in" in b.log().split("revoked")[-1]
            ),
            within=60,
            what="both workers to hold partitions",
        )
        n = 400
        await produce(f"proc-in-{uid}", [orjson.dumps(i) for i in range(n)])
        results = outputs(await read_all(f"proc-out-{uid}", expect=n, within=60))
    finally:
        a.stop()
        b.stop()
    assert sorted(r["value"] for r in results) == list(range(n))  # type: ignore[type-var]
    by_pid = collections.defaultdict(set)
    for r in results:
        by_pid[r["pid"]].add(r["partition"])
    assert len(by_pid) == 2, f"one process did all the work: {dict(by_pid)}"
    assert set().union(*by_pid.values()) == {0, 1, 2, 3}
    assert not set.intersection(*by_pid.values()), "a partition was processed by both"


async def test_sigterm_commits_and_a_restart_neither_loses_nor_rereads(
    uid: str, tmp_path: Path
) -> None:
    topic, out = f"proc-in-{uid}", f"proc-out-{uid}"
    first = worker(uid, tmp_path, "first").start()
    await started(first)
    await produce(topic, [orjson.dumps(i) for i in range(200)])
    await read_all(out, expect=200, within=60)
    first.signal(signal.SIGTERM)
    assert first.wait(30) == 0, first.log()
    assert "worker" in first.log() and "stopped" in first.log()
    assert await committed(f"proc-{uid}", topic) == await end_offsets(topic)

    second = worker(uid, tmp_path, "second").start()
    try:
        await started(second)
        await produce(topic, [orjson.dumps(i) for i in range(200, 300)])
        results = outputs(await read_all(out, expect=300, within=60))
    finally:
        second.stop()
    values = [r["value"] for r in results]
    assert sorted(values) == list(range(300)), "lost or re-read events"  # type: ignore[type-var]


async def test_kill_9_then_restart_loses_nothing(uid: str, tmp_path: Path) -> None:
    topic, out = f"proc-in-{uid}", f"proc-out-{uid}"
    n = 600
    victim = worker(uid, tmp_path, "victim", SKTEST_SLOW="0.02").start()
    await started(victim)
    await produce(topic, [orjson.dumps(i) for i in range(n)])
    # Kill mid-stream: after a commit, with outputs out but far from all.
    await wait_until(
        lambda: _some_committed(uid, topic), within=60, what="a first commit", every=0.05
    )
    victim.kill9()
    done_before = len(await read_all(out))
    assert done_before < n, "the worker finished before the kill; make it slower"

    survivor = worker(uid, tmp_path, "survivor").start()
    try:
        await started(survivor)
        results = outputs(await read_all(out, expect=n, within=90))
    finally:
        survivor.stop()
    values = collections.Counter(r["value"] for r in results)
    assert set(values) == set(range(n)), f"lost: {sorted(set(range(n)) - set(values))[:10]}"
    # At-least-once: replays only cover what was processed after the last commit.
    replayed = sum(c - 1 for c in values.values())
    assert replayed <= done_before


async def _some_committed(uid: str, topic: str) -> bool:
    offsets = await committed(f"proc-{uid}", topic)
    return sum(offsets.values()) > 0


async def test_processes_exit_cleanly_on_sigint(uid: str, tmp_path: Path) -> None:
    w = worker(uid, tmp_path, "int").start()
    await started(w)
    w.signal(signal.SIGINT)
    assert w.wait(30) == 0, w.log()
    assert "Traceback" not in w.log()
    await asyncio.sleep(0)
