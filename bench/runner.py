"""The side-by-side harness's runner: one timed run of one system (its processes, the observer,
the checks), the paced sender of the latency runs, and the plan of a whole invocation.

Throughput runs: the input is pre-loaded before the clock starts; the system's processes are
launched with the same environment (bench/peers/__init__.py) and a fresh group, state
directory and output topic; the run is done when every key's latest output is the oracle's and
the input is committed. A wrong run is reported as failed, not timed. CPU seconds and peak RSS
are the system processes' own (/proc, summed over its processes), read just before they are
stopped; the broker's CPU seconds over the same span (its JVM found by the port it listens on,
when it runs on this machine) count what the system's requests cost the broker, the
observer's reads of the output included (the same for every system). Repetitions run in
rotated order, after one run that is not reported (`warm_up`).

Paced runs (latency): once the group is stable with all its processes, M events are produced
at R events/s into an empty input; each output is mapped back to the input event it answers,
and its latency is the time the observer read it minus the time that event was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.common import PARTITIONS, Cluster, bootstrap, peer_env, preload
from bench.hardware import hardware_ceiling
from bench.observer import Observer, listening_pids, proc_usage
from bench.pipelines import Workload, workload
from bench.report import Run

ROOT = Path(__file__).resolve().parent.parent
TICK_S = 0.01  # the paced sender's step
STALL_S = 180.0  # a run whose output stops growing this long before N is failed (a stalled peer)


async def pace(topic: str, work: Workload, rate: float) -> tuple[list[float], float]:
    """Send the workload at `rate` events/s, round-robin over the partitions, one batch per
    partition every TICK_S; return each event's send time (monotonic) and the rate achieved."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), acks="all", linger_ms=0)
    await producer.start()
    sent: list[float] = []
    try:
        start = time.monotonic()
        i, n = 0, len(work.values)
        while i < n:
            due = min(n, int((time.monotonic() - start) * rate) + 1)
            now = time.monotonic()
            batches: dict[int, Any] = {}
            futures = []
            for j in range(i, due):
                p = j % PARTITIONS
                ts = None if work.timestamps is None else work.timestamps[j]
                batch = batches.get(p) or batches.setdefault(p, producer.create_batch())
                if batch.append(key=None, value=work.values[j], timestamp=ts) is None:
                    futures.append(await producer.send_batch(batch, topic, partition=p))
                    batches[p] = batch = producer.create_batch()
                    batch.append(key=None, value=work.values[j], timestamp=ts)
                sent.append(now)
            for p, batch in batches.items():
                futures.append(await producer.send_batch(batch, topic, partition=p))
            i = due
            await asyncio.gather(*futures)
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        achieved = n / max(1e-9, sent[-1] - sent[0]) if n > 1 else rate
    finally:
        await producer.stop()
    return sent, achieved


class Plan:
    """What an invocation runs: the systems' command lines and process counts, and args."""

    def __init__(
        self,
        args: argparse.Namespace,
        command: Callable[[str], list[str]],
        processes: Callable[[str], int],
    ) -> None:
        self.args = args
        self.command = command
        self.processes = processes
        self.sources: dict[str, str] = {}  # pipeline → its pre-loaded input topic
        self.ends: dict[str, dict[int, int]] = {}  # pipeline → that topic's end offsets


async def _stop(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def run_one(cluster: Cluster, plan: Plan, run: Run, work: Workload, logs: Path) -> Run:
    args = plan.args
    uid = uuid.uuid4().hex[:8]
    group, output = f"peer-{uid}", f"peer-out-{uid}"
    paced = run.mode == "paced"
    source = f"peer-in-{uid}" if paced else plan.sources[work.pipeline]
    await cluster.create_topics([output, source] if paced else [output])
    n = work.outputs  # outputs expected (A, B: one per input event)
    count = plan.processes(run.system)
    name = f"{run.system.replace(' ', '-')}-{work.pipeline}-{run.mode}-{run.guarantee}"
    log = (logs / f"{name}-{run.rep}.log").open("wb")
    with tempfile.TemporaryDirectory(prefix="peer-") as state:
        env = {
            **os.environ,
            **peer_env(work.pipeline, source, output, group, run.guarantee, args.commit_interval),
        }
        brokers = listening_pids(bootstrap())  # the local broker's CPU over the run, too
        broker_cpu = proc_usage(brokers)[0]
        started = time.monotonic()
        procs = []
        for w in range(count):
            workdir = Path(state) / f"w{w}"
            workdir.mkdir()
            procs.append(
                await asyncio.create_subprocess_exec(
                    *plan.command(run.system),
                    env={**env, "BENCH_STATE_DIR": str(workdir), "BENCH_WORKER": str(w)},
                    cwd=ROOT,
                    stdout=log,
                    stderr=log,
                )
            )
        observer = Observer(output, work, started)
        reading = asyncio.create_task(observer.run())
        sending: asyncio.Task[tuple[list[float], float]] | None = None
        within = max(120.0, n / 150)  # Faust's correct runs: ~300 events/s

        def alive() -> bool:
            return all(p.returncode is None for p in procs)

        try:
            if paced:
                await cluster.wait_stable(group, alive, within, members=count)
                sending = asyncio.create_task(pace(source, work, args.paced_rate))
            ends = None if paced else plan.ends[work.pipeline]
            settled: float | None = None  # when the input was committed with answers wrong
            committed_at: float | None = None  # when the input was first seen committed
            seen, moved = -1, time.monotonic()  # the output count, and when it last grew
            while True:
                if not alive():
                    codes = [p.returncode for p in procs]
                    raise RuntimeError(f"exited with {codes} (see {log.name})")
                now = time.monotonic()
                out = observer.count
                if out != seen:
                    seen, moved = out, now
                stalled = out < n and now - moved > STALL_S  # (a stalled peer: fail it now)
                if now - started > within or stalled:
                    observer.judge()
                    _, why = observer.oracle.check(n, run.guarantee)
                    why = why or "answers right, input not committed"
                    what = (
                        f"no output for {STALL_S:.0f} s"
                        if stalled
                        else f"not done within {within:.0f} s"
                    )
                    raise RuntimeError(f"{what} ({out} out; {why})")
                if paced:  # a few outputs a poll: judged as they come
                    observer.judge()
                if (out >= n or observer.complete_at is not None) and (
                    sending is None or sending.done()
                ):
                    ends = ends or await cluster.end_offsets(source)
                    committed = await cluster.committed(group, source)
                    if all(committed.get(p, -1) >= end for p, end in ends.items()):
                        # the processes' CPU now, before the outputs are judged (that takes
                        # seconds at millions of outputs; the time each was read is kept)
                        cpu, rss = proc_usage([p.pid for p in procs])
                        broker_cpu_end = proc_usage(brokers)[0]
                        committed_at = committed_at or time.monotonic()
                        observer.judge()
                        if observer.complete_at is not None:
                            done = max(committed_at, observer.complete_at)
                            break
                        # all input committed, N outputs read, yet some answer is wrong: give
                        # late outputs a few seconds, then judge the run instead of waiting
                        settled = settled or time.monotonic()
                        if time.monotonic() - settled > 5.0:
                            why = observer.oracle.check(n, run.guarantee)[1]
                            raise RuntimeError(f"wrong output: {why}")
                await asyncio.sleep(0.05)
            broker_cpu = broker_cpu_end - broker_cpu
            await asyncio.sleep(1.0)  # any duplicate would show up now
            observer.judge()
            run.ok, run.error = observer.oracle.check(n, run.guarantee)
            run.duplicates = observer.oracle.count - n
            run.startup_s = observer.series.startup()
            if run.ok and sending is not None:
                run.set_latency(*sending.result(), observer.seen_at)
            elif run.ok:
                steady = observer.series.steady_rate(args.commit_interval)
                spent = broker_cpu if brokers else None
                run.set_rates(len(work.values), done - started, steady, cpu, rss, spent)
                run.series = observer.series.sampled()
        except RuntimeError as exc:
            run.error = str(exc)
        finally:
            for task in (reading, sending):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await _stop(procs)
            log.close()
    print(f"{run.rep} {run.system} {work.pipeline} {run.mode} {run.guarantee}: {run.status()}")
    return run


async def warm_up(cluster: Cluster, plan: Plan, first: tuple[str, str, str], logs: Path) -> None:
    """One run that is not reported, before the measured ones: the first (system, pipeline,
    guarantee) over an input of its own, `args.warm_up` events. A broker JVM compiles its
    request paths under its first load: on a fresh broker the first run of an invocation
    cost the broker 4 times the CPU per event of the later ones (docs/benchmarks.md), a cost the
    rotation of the repetitions gave to whichever system ran first."""
    system, pipeline, guarantee = first
    args = plan.args
    work = workload(pipeline, args.warm_up, args.keys)
    topic = f"peer-warm-{pipeline}-{uuid.uuid4().hex[:8]}"
    await cluster.create_topics([topic])
    await preload(topic, work.values, timestamps=work.timestamps)
    saved = plan.sources[pipeline], plan.ends[pipeline]
    plan.sources[pipeline], plan.ends[pipeline] = topic, await cluster.end_offsets(topic)
    try:
        await run_one(
            cluster,
            plan,
            Run(system, pipeline, "warm-up", guarantee, 0, keys=args.keys),
            work,
            logs,
        )
    finally:
        plan.sources[pipeline], plan.ends[pipeline] = saved


async def run_all(
    plan: Plan, runs_of: list[tuple[str, str, str]]
) -> tuple[list[Run], dict[str, float]]:
    """Every (system, pipeline, guarantee) of `runs_of`, args.reps times in rotated order, then
    the paced runs; and the hardware ceiling unless args.no_hardware."""
    args = plan.args
    logs = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    print(f"logs in {logs}", flush=True)
    runs: list[Run] = []
    async with Cluster() as cluster:
        await cluster.warm_up_groups()
        hardware = {} if args.no_hardware else await hardware_ceiling(cluster, args.events)
        works = {p: workload(p, args.events, args.keys) for p in args.pipelines}
        for p, work in works.items():
            plan.sources[p] = f"peer-in-{p}-{uuid.uuid4().hex[:8]}"
            await cluster.create_topics([plan.sources[p]])
            await preload(plan.sources[p], work.values, timestamps=work.timestamps)
            plan.ends[p] = await cluster.end_offsets(plan.sources[p])
        if args.warm_up and runs_of:
            await warm_up(cluster, plan, runs_of[0], logs)
        for rep in range(1, args.reps + 1):
            turn = (rep - 1) % len(runs_of)
            for system, p, g in runs_of[turn:] + runs_of[:turn]:
                run = Run(system, p, "throughput", g, rep, keys=args.keys)
                runs.append(await run_one(cluster, plan, run, works[p], logs))
        if args.paced_events:
            for p in args.pipelines:
                work = workload(p, args.paced_events)
                for system, q, g in runs_of:
                    if q == p:
                        run = Run(system, p, "paced", g, 1)
                        runs.append(await run_one(cluster, plan, run, work, logs))
    return runs, hardware
