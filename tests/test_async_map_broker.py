"""map_async on the real broker with real worker processes: a worker killed with `kill -9`
while its calls are in flight, a second one finishing the work; the output, read to its end
offsets (read_committed), holds every event exactly once and each key in order."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

import streamkit as sk
from streamkit.runtime.dlq import describe
from streamkit.runtime.metrics import WorkerMetrics
from tests.kafkahelp import (
    WorkerProcess,
    committed,
    create_topic,
    produce,
    read_all,
    running,
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


def lookup_app(uid: str, workdir: Path) -> sk.App:
    app = sk.App(
        f"amstop-{uid}", processing_guarantee="exactly_once", commit_interval=0.2, workdir=workdir
    )
    src, out = app.topic(f"amstop-in-{uid}", partitions=2), app.topic(f"amstop-out-{uid}")

    async def lookup(value: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.02)
        if value["i"] % 50 == 7:
            raise LookupError(f"no customer for order {value['i']}")
        return {**value, "ok": True}

    app.stream(src).map_async(lookup, concurrency=8, timeout=1, retries=1, backoff=0.01).to(out)
    return app


async def test_a_stop_with_calls_in_flight_and_calls_that_keep_failing(
    uid: str, tmp_path: Path
) -> None:
    """A graceful stop delivers the calls in flight before the final checkpoint; the next run
    goes on from there; failing calls become dead letters, once each. The last 100 events
    (two of them failing) are sent after the first run stopped, so the second one has
    failing calls to count however far the first got."""
    n, first_part = 500, 400
    await create_topic(f"amstop-in-{uid}", 2)
    keys = [f"c{i % 29}".encode() for i in range(n)]

    async def send(events: range) -> None:
        await produce(
            f"amstop-in-{uid}",
            [orjson.dumps({"i": i}) for i in events],
            keys=[keys[i] for i in events],
        )

    await send(range(first_part))
    in_flight = 0
    async with running(lookup_app(uid, tmp_path / "state")) as first:

        async def some_done() -> bool:
            return sum((await committed(f"amstop-{uid}", f"amstop-in-{uid}")).values()) >= 60

        await wait_until(some_done, within=60, what="some offsets committed")
        assert first.tasks is not None
        in_flight = sum(t.calls.outstanding for t in first.tasks.tasks.values() if t.calls)
    assert in_flight, "no call was in flight at the stop"
    stopped_at = sum((await committed(f"amstop-{uid}", f"amstop-in-{uid}")).values())
    assert stopped_at < n
    await send(range(first_part, n))
    async with running(lookup_app(uid, tmp_path / "state")) as second:

        async def all_done() -> bool:
            return sum((await committed(f"amstop-{uid}", f"amstop-in-{uid}")).values()) == n

        await wait_until(all_done, within=60, what="every offset committed")
        samples = {
            sample.name: sample.value
            for family in WorkerMetrics(second).registry.collect()
            if family.name.startswith("streamkit_map_async")
            for sample in family.samples
        }
    # the second run called each of its events once, the failing ones twice (retries=1)
    failed_here = samples["streamkit_map_async_failures_total"]
    assert failed_here >= 1 and samples["streamkit_map_async_retries_total"] == failed_here
    assert samples["streamkit_map_async_attempts_total"] == n - stopped_at + failed_here
    assert samples["streamkit_map_async_in_flight"] == 0
    outputs = [orjson.loads(r.value) for r in await read_all(f"amstop-out-{uid}")]
    assert sorted(v["i"] for v in outputs) == [i for i in range(n) if i % 50 != 7]
    dead_records = await read_all(f"amstop-{uid}-dlq")
    assert sorted(orjson.loads(r.value)["i"] for r in dead_records) == list(range(7, n, 50))
    dead = [describe(r.headers) for r in dead_records]
    assert {d["streamkit.error.type"] for d in dead} == {"CallFailed"}
    assert all(
        d["streamkit.error"].startswith("map_async(lookup) failed 2 times, the last: LookupError")
        for d in dead
    )


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_map_async_into_sinks_writes_every_row_once(
    uid: str, tmp_path: Path, guarantee: str
) -> None:
    """A map_async step feeding sinks beyond Kafka: every event's row reaches the SQLite and
    JSON-lines destinations once, the rows of calls that finish after the last record too
    (they belong to no later record boundary), and a restart on the stored offsets writes
    none again. (Before the fix, rows delivered after a record boundary were never flushed
    while Kafka committed past them: 8 rows of 30.)"""
    n, db, lines = 300, tmp_path / "out.sqlite", tmp_path / "lines"

    def make() -> sk.App:
        app = sk.App(
            f"amsink-{uid}", processing_guarantee=guarantee, commit_interval=0.2,
            workdir=tmp_path / "state",
        )  # fmt: skip
        src = app.topic(f"amsink-in-{uid}", partitions=2)

        async def double(value: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(0.001 * (value["i"] % 7))  # keys finish out of offset order
            return {"i": value["i"], "twice": value["i"] * 2}

        rows = app.stream(src).map_async(double, concurrency=8)
        ddl = "CREATE TABLE IF NOT EXISTS t (i INTEGER, twice INTEGER)"
        rows.to(sk.SqliteSink(db, "t", columns=["i", "twice"], create=ddl))
        rows.to(sk.JsonLinesSink(lines))
        return app

    await create_topic(f"amsink-in-{uid}", 2)
    for first, last in ((0, n // 2), (n // 2, n)):  # two runs: the second resumes
        keys = [f"k{i % 11}".encode() for i in range(first, last)]
        await produce(
            f"amsink-in-{uid}", [orjson.dumps({"i": i}) for i in range(first, last)], keys=keys
        )
        async with running(make()):

            async def all_done(last: int = last) -> bool:
                offsets = await committed(f"amsink-{uid}", f"amsink-in-{uid}")
                return sum(offsets.values()) == last

            await wait_until(all_done, within=60, what="every offset committed")
    with sqlite3.connect(db) as conn:
        stored = sorted(i for (i,) in conn.execute("SELECT i FROM t"))
    assert stored == list(range(n)), f"rows lost or doubled: {len(stored)} of {n}"
    written = [
        orjson.loads(line)["i"]
        for f in sorted(lines.glob("*.jsonl"))
        for line in f.read_bytes().splitlines()
    ]
    assert sorted(written) == list(range(n))


def test_async_io_benchmark_smoke_run() -> None:
    """bench/async_io.py at tiny N (concurrency 1 and 8), its exactly-once check included."""
    out = run_bench("bench.async_io", "--smoke")
    assert "| 1 | 40 |" in out and "| 8 | 160 |" in out
    assert out.count("| yes |") == 2, out
