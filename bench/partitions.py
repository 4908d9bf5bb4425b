"""Exactly-once at 8, 64 and 256 input partitions per worker: one transactional producer per
input partition vs one per worker (KIP-447).

    python -m bench.partitions [--events N] [--partitions 8,64,256]
                               [--modes per_partition,per_worker,per_worker/streamkit]
                               [--raw] [--json FILE]

Pipeline A (the keyed running sum of bench.exactly_once: purchases → key_by(user_id) → table
+= amount → the total), exactly-once, the default commit interval (0.1 s under exactly-once),
one worker in-process. "P input partitions" is P/2 source partitions plus P/2 repartition
partitions (both stages' tasks run in the worker). For each P and mode, N pre-loaded events
(1,000,000 by default: thousands per partition even at 256); reported:

- start-up apart: ready_s, from the worker's start until every task is assigned (per-partition
  mode registers P producers here, each `InitProducerId`), and first_output_s, until a
  read_committed reader sees the first total;
- the steady rate: events the second stage (after the repartition hop, so through the first
  stage's transaction) took in per second between 10 % and 90 % of N, and this process's CPU
  µs per event over the same span (read inside the pipeline: under exactly-once the outputs
  arrive in bursts, one per committed transaction);
- events/s end to end: N / (from the worker's start until a read_committed reader has all N
  totals), and the worker's CPU µs per event over that whole run (÷ N);
- the checkpoints: how many, their mean and p95 duration (pause → transaction(s) → SQLite),
  and the transactions committed;
- then a paced run (`--rate` events/s for `--seconds`, each event stamped with its send time)
  into fresh topics: the checkpoint's mean and p95 duration at that steady load, transactions
  per second, the worker's CPU µs per event, and p50 / p99 of (total visible to a
  read_committed reader - sent);
- with `--raw`, after each P's paced runs, the same paced load with the worker replaced by
  a plain aiokafka loop committing the transactions it would commit (`bench/txn_ceiling.py`):
  the part of the checkpoint that is the broker's and the Kafka client's;
- with `--kafka-streams`, the same paced run with pipeline A in Kafka Streams
  (`bench/kstreams`, exactly-once v2, one stream thread, its default 0.1 s commit interval)
  in place of the worker: the mean time of its transactions, from its own metrics over the fed
  span (the transactional producer's total time in `sendOffsetsToTransaction` and
  `commitTransaction`, which flushes the batches first, over the stream thread's commits).
  It leaves out what Kafka Streams does before (its tasks' pre-commit), so it is the lower
  bound of its commit; its own `commit-latency-*` metrics are per task (the commit's time
  divided by the tasks it committed) and have a millisecond resolution.

The broker's data folder matters here: on this VM's disk, a broker with hundreds of
partitions spends most of its CPU faulting in index pages (docs/benchmarks.md, "The broker's
disk"); `STREAMKIT_KAFKA_DATA=/dev/shm scripts/localkafka.py up` puts it on a tmpfs.

The worker runs in this process, alone: the feeder and the read_committed reader run in a
process of their own (`bench/load_process.py`), so every CPU figure is the worker's (before
2026-12-02 they shared this process and its event loop, and its CPU figures included them).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import streamkit as sk
from bench.common import Cluster, make_events, preload
from bench.load_process import Feed, LoadProcess
from bench.profile import report
from bench.txn_ceiling import raw_paced
from streamkit.runtime.worker import Worker

T = TypeVar("T")


def running_sum_app(
    uid: str,
    source: str,
    output: str,
    partitions: int,
    workdir: Path,
    mode: str,
    commit_interval: float | None = None,
) -> sk.App:
    """Pipeline A; `commit_interval` None is the default (0.1 s under exactly-once). `mode`:
    a `transactional_producer`, optionally with a `transactional_client` after a slash
    (`per_worker/streamkit`)."""
    producer, _, client = mode.partition("/")
    app = sk.App(
        f"bp-{uid}",
        workdir=workdir,
        processing_guarantee="exactly_once",
        commit_interval=commit_interval,
        transactional_producer=producer,
        web_enabled=False,
        **({"transactional_client": client} if client else {}),
    )
    src = app.topic(source, partitions=partitions)
    out = app.topic(output, partitions=partitions)
    total = app.table("total", default=float)

    by_user = app.stream(src).key_by("user_id", partitions=partitions)

    @app.agent(by_user, sink=out, state=[total])
    async def running_sum(stream: sk.Stream[Any]) -> Any:
        async for p in stream:
            total[p["user_id"]] += p["amount"]
            yield {"user_id": p["user_id"], "total": total[p["user_id"]], "ts": p["ts"]}

    return app


async def one_run(cluster: Cluster, source: str, half: int, n: int, mode: str) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:6]
    output = f"bp-out-{uid}"
    await cluster.create_topics([output], partitions=half)
    reader = LoadProcess(output)
    reader.start()
    durations: list[float] = []
    # (monotonic, events the second stage took in, process CPU): the steady rate is read
    # inside the pipeline, since under exactly-once the outputs show up in bursts of commits
    series: list[tuple[float, int, float]] = []
    with tempfile.TemporaryDirectory() as wd:
        app = running_sum_app(uid, source, output, half, Path(wd), mode)
        worker = Worker(app)
        intake = Intake(worker, source)
        started, cpu_started = time.monotonic(), time.process_time()
        task = asyncio.create_task(worker.run(install_signal_handlers=False))
        ready: float | None = None
        first: float | None = None
        try:
            while reader.count < n:
                if task.done():
                    task.result()
                    raise RuntimeError("worker stopped early")
                reader.check()
                if (
                    ready is None
                    and worker.tasks is not None
                    and len(worker.tasks.tasks) == 2 * half
                ):
                    ready = time.monotonic() - started
                    assert worker.checkpointer is not None
                    worker.checkpointer.on_checkpoint = durations.append
                if time.monotonic() - started > 1800:
                    raise RuntimeError("not done in 1800 s")
                if first is None and reader.count:
                    first = time.monotonic() - started
                series.append((time.monotonic(), intake(), time.process_time()))
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
            cpu = time.process_time() - cpu_started
        finally:
            worker.request_stop()
            await task
            reader.stop()
    cp = worker.checkpointer
    assert cp is not None and ready is not None
    durations.sort()
    steady = steady_window(series, n)
    return {
        "partitions": 2 * half,
        "mode": mode,
        "events": n,
        "events_per_s": round(n / elapsed),
        "ready_s": round(ready, 2),
        "first_output_s": round(first or elapsed, 2),
        "steady_events_per_s": steady["events_per_s"],
        "steady_cpu_us_per_event": steady["cpu_us_per_event"],
        "cpu_us_per_event": round(1e6 * cpu / n, 1),
        "checkpoints": len(durations),
        "mean_checkpoint_ms": round(1000 * statistics.fmean(durations), 1) if durations else None,
        "p95_checkpoint_ms": round(1000 * durations[int(len(durations) * 0.95)], 1)
        if durations
        else None,
        "transactions": cp.commits,
    }


class Intake:
    """Events the second stage (after the repartition hop) has taken in so far: each is through
    the source stage and its transaction, and about to be summed. Counts of tasks that a
    rebalance closed are kept."""

    def __init__(self, worker: Worker, source: str) -> None:
        self._worker, self._source = worker, source
        self._seen: dict[int, tuple[Any, int]] = {}

    def __call__(self) -> int:
        tasks = self._worker.tasks
        if tasks is not None:
            for t in list(tasks.tasks.values()):
                if t.topic.name != self._source:
                    self._seen[id(t)] = (t, t.events_in)
        return sum(count for _, count in self._seen.values())


def steady_window(series: list[tuple[float, int, float]], n: int) -> dict[str, float]:
    """The steady rate: events processed and CPU between the samples where 10 % and 90 % of
    the N events had been taken in (start-up before, the tail after, both left out)."""
    lo = next((s for s in series if s[1] >= 0.1 * n), None)
    hi = next((s for s in series if s[1] >= 0.9 * n), None)
    events = 0 if lo is None or hi is None else hi[1] - lo[1]
    if lo is None or hi is None or events <= 0 or hi[0] <= lo[0]:
        return {"events_per_s": float("nan"), "cpu_us_per_event": float("nan")}
    return {
        "events_per_s": round(events / (hi[0] - lo[0])),
        "cpu_us_per_event": round(1e6 * (hi[2] - lo[2]) / events, 1),
    }


async def paced_run(
    cluster: Cluster,
    half: int,
    mode: str,
    rate: int,
    seconds: float,
    span: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """RATE events/s for SECONDS into a fresh source while the worker runs: the checkpoint
    at a steady load (not a backlog) and the end-to-end latency of each total. `span`, a
    profiler, runs over the measured span only (from the first event fed to the last total
    read)."""
    uid = uuid.uuid4().hex[:6]
    source, output = f"bp-pin-{uid}", f"bp-pout-{uid}"
    await cluster.create_topics([source, output], partitions=half)
    n = int(rate * seconds)
    load = LoadProcess(output, Feed(source, half, rate, seconds))
    load.start()
    durations: list[float] = []
    lat: list[float] = []

    with tempfile.TemporaryDirectory() as wd:
        app = running_sum_app(uid, source, output, half, Path(wd), mode)
        worker = Worker(app)
        task = asyncio.create_task(worker.run(install_signal_handlers=False))
        feeding = False
        started = time.monotonic()
        try:
            while load.count < n:
                if task.done():
                    task.result()
                    raise RuntimeError("worker stopped early")
                load.check()
                tasks = worker.tasks
                if not feeding and tasks is not None and len(tasks.tasks) == 2 * half:
                    assert worker.checkpointer is not None
                    worker.checkpointer.on_checkpoint = durations.append
                    transactions_before = worker.checkpointer.commits
                    cpu_started = time.process_time()
                    if span is not None:
                        span.enable()
                    load.go()
                    feeding = True
                if time.monotonic() - started > seconds + 300:
                    raise RuntimeError("paced run not done")
                await asyncio.sleep(0.05)
            cpu = time.process_time() - cpu_started  # the worker's process only
            if span is not None:
                span.disable()
        finally:
            worker.request_stop()
            await task
            lat = sorted(load.stop())
    durations.sort()
    cp = worker.checkpointer
    assert cp is not None
    return {
        "paced_rate": rate,
        "paced_mean_checkpoint_ms": round(1000 * statistics.fmean(durations), 1),
        "paced_p50_checkpoint_ms": round(1000 * statistics.median(durations), 1),
        "paced_p95_checkpoint_ms": round(1000 * durations[int(len(durations) * 0.95)], 1),
        "paced_transactions_per_s": round((cp.commits - transactions_before) / seconds, 1),
        "paced_cpu_us_per_event": round(1e6 * cpu / n, 1),
        "paced_p50_ms": round(1000 * statistics.median(lat)),
        "paced_p99_ms": round(1000 * lat[int(len(lat) * 0.99) - 1]),
    }


async def kafka_streams_paced(
    cluster: Cluster, half: int, rate: int, seconds: float
) -> dict[str, Any]:
    """`paced_run` with Kafka Streams as the worker (its own process): the mean time of its
    transactions while the paced load runs, from the totals it reports every second."""
    from bench.common import peer_env
    from bench.compare import command, prepare

    prepare(["kafka streams"])
    uid = uuid.uuid4().hex[:6]
    source, output = f"bp-kin-{uid}", f"bp-kout-{uid}"
    await cluster.create_topics([source, output], partitions=half)
    n = int(rate * seconds)
    load = LoadProcess(output, Feed(source, half, rate, seconds), latency=False)
    load.start()
    samples: list[tuple[float, int, int]] = []  # (time, commits, ns in the transactions)
    running = asyncio.Event()

    async def follow(stdout: asyncio.StreamReader) -> None:
        async for line in stdout:
            word, *rest = line.decode().split()
            if word == "STATE" and rest == ["RUNNING"]:
                running.set()
            elif word == "COMMITS":
                samples.append((time.monotonic(), int(rest[0]), int(rest[1]) + int(rest[2])))

    with tempfile.TemporaryDirectory() as state:
        env = dict(os.environ) | peer_env(
            "A", source, output, f"bp-ks-{uid}", "exactly_once", 0.1, state
        )
        proc = await asyncio.create_subprocess_exec(
            *command("kafka streams"), env=env | {"BENCH_METRICS_EVERY_MS": "1000"},
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        following = asyncio.create_task(follow(proc.stdout))
        try:
            await asyncio.wait_for(running.wait(), 300)
            load.go()
            fed = time.monotonic()
            deadline = fed + seconds + 300
            while load.count < n:
                load.check()
                if proc.returncode is not None:
                    raise RuntimeError("Kafka Streams stopped early")
                if time.monotonic() > deadline:
                    raise RuntimeError("paced run not done")
                await asyncio.sleep(0.05)
            done = time.monotonic()
            await asyncio.sleep(1.1)  # the last second's sample
        finally:
            proc.terminate()
            await proc.wait()
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            load.stop()
    (t0, commits0, ns0), (t1, commits1, ns1) = (
        min((s for s in samples if s[0] >= fed), key=lambda s: s[0]),
        max((s for s in samples if s[0] <= done + 1.1), key=lambda s: s[0]),
    )
    commits = commits1 - commits0
    return {
        "partitions": 2 * half,
        "mode": "kafka streams",
        "paced_rate": rate,
        "paced_mean_checkpoint_ms": round((ns1 - ns0) / 1e6 / commits, 1),
        "paced_transactions_per_s": round(commits / (t1 - t0), 1),
    }


async def profiled(top: int, title: str, events: int, run: Awaitable[T]) -> T:
    """`run`, under cProfile when `top` (then its `top` costliest functions are printed)."""
    if not top:
        return await run
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        return await run
    finally:
        profiler.disable()
        print(f"## {title}\n{report(pstats.Stats(profiler), events, top)}", flush=True)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    async with Cluster() as cluster:
        await cluster.warm_up_groups()
        for total in args.partitions:
            half = total // 2
            source = f"bp-in-{uuid.uuid4().hex[:6]}"
            await cluster.create_topics([source], partitions=half)
            await preload(source, make_events(args.events), partitions=half)
            for mode in args.modes:
                row = await profiled(
                    args.profile, f"{total} partitions, {mode}, backlog", args.events,
                    one_run(cluster, source, half, args.events, mode),
                )  # fmt: skip
                if args.rate:
                    n = int(args.rate * args.seconds)
                    span = cProfile.Profile(time.process_time) if args.profile else None
                    row |= await paced_run(cluster, half, mode, args.rate, args.seconds, span)
                    if span is not None:  # the measured span only: no start-up, no stop
                        title = f"{total} partitions, {mode}, paced (fed span)"
                        print(f"## {title}\n{report(pstats.Stats(span), n, args.profile)}")
                print(json.dumps(row), flush=True)
                rows.append(row)
            if args.kafka_streams and args.rate:
                row = await kafka_streams_paced(cluster, half, args.rate, args.seconds)
                print(json.dumps(row), flush=True)
                rows.append(row)
            if args.raw and args.rate:  # the baseline: the same transactions, no streamkit
                row = await raw_paced(cluster, half, args.rate, args.seconds, 0.1)
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--partitions", type=lambda s: [int(x) for x in s.split(",")], default=[8, 64, 256]
    )
    parser.add_argument(
        "--modes", type=lambda s: s.split(","), default=["per_partition", "per_worker"]
    )
    parser.add_argument("--rate", type=int, default=2000, help="paced run, events/s (0: none)")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced run length")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument(
        "--raw", action="store_true",
        help="after each P's paced runs, the same transactions from a plain aiokafka loop "
        "(bench/txn_ceiling.py): the broker's share of the checkpoint",
    )  # fmt: skip
    parser.add_argument(
        "--kafka-streams", action="store_true",
        help="after each P's paced runs, the same paced load through Kafka Streams: the "
        "mean time of its transactions",
    )  # fmt: skip
    parser.add_argument(
        "--profile", type=int, default=0, metavar="K",
        help="run each backlog run, and each paced run's measured span, under cProfile and "
        "print its K costliest functions",
    )  # fmt: skip
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
