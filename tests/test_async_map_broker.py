"""map_async on the real broker with real worker processes: a worker killed with `kill -9`
while its calls are in flight, a second one finishing the work; the output, read to its end
offsets (read_committed), holds every event exactly once and each key in order."""

from __future__ import annotations

import signal
from collections import defaultdict
from pathlib import Path

import orjson

from tests.kafkahelp import (
    WorkerProcess,
    committed,
    create_topic,
    produce,
    read_all,
    wait_until,
)
from tests.test_bench_smoke import run_bench

EVENTS = 3000
KEYS = 37


def worker(uid: str, tmp_path: Path, name: str) -> WorkerProcess:
    env = {
        "SKTEST_ID": uid,
        "SKTEST_CALLS": str(tmp_path / "calls.txt"),
        "STREAMKIT_WORKDIR": str(tmp_path / "state"),
    }
    return WorkerProcess("tests.asyncapp:app", env, tmp_path / f"{name}.log")


async def test_kill_9_with_calls_in_flight_loses_and_repeats_nothing(
    uid: str, tmp_path: Path
) -> None:
    src, out = f"am-in-{uid}", f"am-out-{uid}"
    await create_topic(src, 3)
    keys = [f"k{i % KEYS}" for i in range(EVENTS)]
    victim = worker(uid, tmp_path, "victim").start()
    try:
        await wait_until(lambda: "assigned" in victim.log(), within=90, what="victim assigned")
        await produce(
            src,
            [orjson.dumps({"k": k, "i": i}) for i, k in enumerate(keys)],
            keys=[k.encode() for k in keys],
        )

        # kill once a part of the output is committed, with calls surely going on
        async def some_committed() -> bool:
            return sum((await committed(f"amproc-{uid}", src)).values()) >= EVENTS // 4

        await wait_until(some_committed, within=90, what="a quarter committed")
        victim.kill9()
    finally:
        victim.stop()
    assert victim.wait(5) == -signal.SIGKILL
    survivor = worker(uid, tmp_path, "survivor").start()
    try:

        async def all_committed() -> bool:
            return sum((await committed(f"amproc-{uid}", src)).values()) == EVENTS

        await wait_until(all_committed, within=120, what="every input offset committed")
    finally:
        survivor.stop()
    records = await read_all(out)  # to the end offsets, read_committed
    values = [orjson.loads(r.value) for r in records]
    assert sorted(v["i"] for v in values) == list(range(EVENTS))  # each exactly once
    by_key: dict[str, list[int]] = defaultdict(list)
    for r, v in zip(records, values, strict=True):
        assert r.key.decode() == v["k"]
        by_key[v["k"]].append(v["i"])  # one key: one partition, read in order
    assert all(seq == sorted(seq) for seq in by_key.values())
    # the victim had started calls whose results never committed: they ran again
    pids = {line.split()[0] for line in (tmp_path / "calls.txt").read_text().splitlines()}
    victim_pid = str(victim.proc.pid) if victim.proc else ""
    started = {
        int(line.split()[1])
        for line in (tmp_path / "calls.txt").read_text().splitlines()
        if line.split()[0] == victim_pid
    }
    kept = {v["i"] for v in values if str(v["pid"]) == victim_pid}
    assert len(pids) == 2 and started - kept, "no call was in flight at the kill"


def test_async_io_benchmark_smoke_run() -> None:
    """bench/async_io.py at tiny N (concurrency 1 and 8), its exactly-once check included."""
    out = run_bench("bench.async_io", "--smoke")
    assert "| 1 | 40 |" in out and "| 8 | 160 |" in out
    assert out.count("| yes |") == 2, out
