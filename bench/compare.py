"""Side by side: pipelines A, B and C in streamkit, Faust, Quix Streams, Kafka Streams and the
raw aiokafka and confluent-kafka loops (C, a stream-stream join: streamkit and Kafka Streams),
with Kafka's perf tools as the hardware ceiling.

    python -m bench.compare [--events N] [--reps R] [--pipelines A,B] [--systems a,b]
                            [--guarantees g,h] [--commit-interval S] [--paced-rate R]
                            [--paced-events M] [--no-hardware] [--json F] [--plot F.png]

Throughput runs: the input (bench/pipelines.py) is pre-loaded before the clock starts; each
system is a separate process (bench/peers/*; Faust, Quix Streams and confluent-kafka from the
pinned bench virtualenv `.venv-bench`, Kafka Streams on the JDK) with a fresh group, state
directory and output topic per run and the same commit interval. The observer, a
read_committed consumer, times the run from launch until every key's latest output is the
oracle's and the input is committed, notes 10 % and 90 % of the output for the steady rate,
and checks every run against the oracle (exactly N outputs under exactly-once, every output
answering an input event, every key's last value right): a wrong run is reported as failed,
not timed. CPU seconds and peak RSS are the system process's own (/proc), read just before it
is stopped. Repetitions run in rotated order.

Paced runs (latency): once the system's group is stable, M events are produced at R events/s
into an empty input; each output is mapped back to the input event it answers, and its
latency is the time the observer read it minus the time that event was sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench import flink
from bench.common import PARTITIONS, Cluster, Timeline, bootstrap, preload
from bench.hardware import hardware_ceiling
from bench.pipelines import Oracle, Workload, workload
from bench.report import Run, markdown, summarize

ROOT = Path(__file__).resolve().parent.parent
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
KSTREAMS = Path.home() / ".cache" / "streamkit" / "kstreams-4.1.1"
BOTH = ("exactly_once", "at_least_once")
SYSTEMS = ("streamkit", "raw aiokafka", "raw confluent-kafka", "faust", "quix streams",
           "kafka streams", "flink")  # fmt: skip
RAW = {"raw aiokafka", "raw confluent-kafka"}  # pipeline A, at-least-once only
JOINING = {"streamkit", "kafka streams", "flink"}  # pipeline C (the stream-stream join)


def command(system: str) -> list[str]:
    if system == "raw aiokafka":
        return [sys.executable, "-m", "bench.peers.raw_aiokafka"]
    if system == "streamkit":
        return [sys.executable, "-m", "bench.peers.streamkit_app"]
    if system == "raw confluent-kafka":
        return [str(BENCH_PY), str(ROOT / "bench/peers/raw_confluent.py")]
    if system == "faust":
        return [str(BENCH_PY), str(ROOT / "bench/peers/faust_app.py")]
    if system == "quix streams":
        return [str(BENCH_PY), str(ROOT / "bench/peers/quix_app.py")]
    if system == "kafka streams":
        classpath = f"{KSTREAMS / 'classes'}:{KSTREAMS / 'lib'}/*"
        return ["java", "-Xmx1g", "-cp", classpath, "Pipelines"]
    if system == "flink":  # bench/flink: builds on first use
        return flink.command()
    raise SystemExit(f"unknown system {system!r}")


def supports(system: str, pipeline: str, guarantee: str) -> bool:
    if pipeline == "C":
        return system in JOINING
    return system not in RAW or (pipeline == "A" and guarantee == "at_least_once")


def prepare(systems: Sequence[str]) -> None:
    """The peers' software: the bench virtualenv, Kafka Streams' jars and classes."""
    python_peers = set(systems) - {"streamkit", "raw aiokafka", "kafka streams", "flink"}
    if python_peers and not BENCH_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_PY.parent.parent)], check=True)
    if python_peers:
        subprocess.run(
            [str(BENCH_PY), "-m", "pip", "install", "-q", "-r", str(ROOT / "bench/peers.txt")],
            check=True,
        )
    if "flink" in systems:
        flink.build()  # before any clock starts
    source = ROOT / "bench/kstreams/Pipelines.java"
    built = KSTREAMS / "classes" / "Pipelines.class"
    if "kafka streams" in systems and (
        not built.exists() or built.stat().st_mtime < source.stat().st_mtime
    ):
        (KSTREAMS / "classes").mkdir(parents=True, exist_ok=True)
        pom = str(ROOT / "bench/kstreams/pom.xml")
        lib = f"-DoutputDirectory={KSTREAMS / 'lib'}"
        subprocess.run(["mvn", "-q", "-f", pom, "dependency:copy-dependencies", lib], check=True)
        javac = ["javac", "-cp", f"{KSTREAMS / 'lib'}/*", "-d", str(KSTREAMS / "classes")]
        subprocess.run([*javac, str(source)], check=True)


class Observer:
    """Reads the output (read_committed) from the start into the oracle; notes when each
    input event's answer was read (for the paced runs' latency)."""

    def __init__(self, topic: str, work: Workload, n: int, started: float) -> None:
        self.oracle = Oracle(work)
        self.n = n
        self.complete_at: float | None = None
        self.seen_at: dict[int, float] = {}  # input index → first time its answer was read
        self.line = Timeline(started)
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap(),
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            group_id=None,
        )

    async def run(self) -> None:
        await self._consumer.start()
        previous = (self.line.started, 0)
        oracle, seen_at = self.oracle, self.seen_at
        try:
            while True:
                batch = await self._consumer.getmany(timeout_ms=50)
                now = time.monotonic()
                for records in batch.values():
                    for rec in records:
                        i = oracle.observe(orjson.loads(rec.value))
                        if i is not None and i not in seen_at:
                            seen_at[i] = now
                if self.complete_at is None and oracle.complete():
                    self.complete_at = now
                self.line.note_count(previous, (now, oracle.count), self.n)
                previous = (now, oracle.count)
        finally:
            await self._consumer.stop()


def proc_usage(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS (MB) of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024
    return cpu, rss


async def pace(topic: str, work: Workload, rate: float) -> list[float]:
    """Send the workload at `rate` events/s, round-robin over the partitions, in 10 ms ticks;
    return each event's send time (monotonic)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), acks="all", linger_ms=0)
    await producer.start()
    sent: list[float] = []
    try:
        start = time.monotonic()
        i, n = 0, len(work.values)
        while i < n:
            due = min(n, int((time.monotonic() - start) * rate) + 1)
            now = time.monotonic()
            futures = []
            for j in range(i, due):
                ts = None if work.timestamps is None else work.timestamps[j]
                futures.append(
                    await producer.send(
                        topic, work.values[j], partition=j % PARTITIONS, timestamp_ms=ts
                    )
                )
                sent.append(now)
            i = due
            await asyncio.gather(*futures)
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
    finally:
        await producer.stop()
    return sent


async def run_one(
    cluster: Cluster, run: Run, work: Workload, args: argparse.Namespace, logs: Path
) -> Run:
    uid = uuid.uuid4().hex[:8]
    group, output = f"peer-{uid}", f"peer-out-{uid}"
    paced = run.mode == "paced"
    source = f"peer-in-{uid}" if paced else args.sources[work.pipeline]
    await cluster.create_topics([output, source] if paced else [output])
    n = work.outputs  # outputs expected (A, B: one per input event)
    with tempfile.TemporaryDirectory(prefix="peer-") as state:
        env = {
            **os.environ,
            "BENCH_PIPELINE": work.pipeline,
            "BENCH_BOOTSTRAP": bootstrap(),
            "BENCH_INPUT": source,
            "BENCH_OUTPUT": output,
            "BENCH_GROUP": group,
            "BENCH_GUARANTEE": run.guarantee,
            "BENCH_COMMIT_INTERVAL": str(args.commit_interval),
            "BENCH_STATE_DIR": state,
        }
        name = f"{run.system.replace(' ', '-')}-{work.pipeline}-{run.mode}-{run.guarantee}"
        log = (logs / f"{name}-{run.rep}.log").open("wb")
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *command(run.system), env=env, cwd=ROOT, stdout=log, stderr=log
        )
        observer = Observer(output, work, n, started)
        reading = asyncio.create_task(observer.run())
        sending: asyncio.Task[list[float]] | None = None
        within = max(120.0, n / 150)  # Faust's correct runs: ~300 events/s
        try:
            if paced:
                await cluster.wait_stable(group, lambda: proc.returncode is None, within)
                sending = asyncio.create_task(pace(source, work, args.paced_rate))
            ends = None if paced else args.ends[work.pipeline]
            settled: float | None = None  # when the input was committed with answers wrong
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"exited with {proc.returncode} (see {log.name})")
                if time.monotonic() - started > within:
                    count = observer.oracle.count
                    _, why = observer.oracle.check(n, run.guarantee)
                    why = why or "answers right, input not committed"
                    raise RuntimeError(f"not done within {within:.0f} s ({count} out; {why})")
                oracle = observer.oracle
                if (oracle.count >= n or observer.complete_at is not None) and (
                    sending is None or sending.done()
                ):
                    ends = ends or await cluster.end_offsets(source)
                    committed = await cluster.committed(group, source)
                    if all(committed.get(p, -1) >= end for p, end in ends.items()):
                        if observer.complete_at is not None:
                            done = time.monotonic()
                            break
                        # all input committed, N outputs read, yet some answer is wrong: give
                        # late outputs a few seconds, then judge the run instead of waiting
                        settled = settled or time.monotonic()
                        if time.monotonic() - settled > 5.0:
                            raise RuntimeError(f"wrong output: {oracle.check(n, run.guarantee)[1]}")
                await asyncio.sleep(0.05)
            cpu, rss = proc_usage(proc.pid)
            await asyncio.sleep(1.0)  # any duplicate would show up now
            run.ok, run.error = observer.oracle.check(n, run.guarantee)
            run.duplicates = observer.oracle.count - n
            if run.ok and sending is not None:
                run.set_latency(sending.result(), observer.seen_at)
            elif run.ok:
                run.set_rates(len(work.values), done - started, observer.line, cpu, rss)
        except RuntimeError as exc:
            run.error = str(exc)
        finally:
            for task in (reading, sending):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.close()
    print(f"{run.rep} {run.system} {work.pipeline} {run.mode} {run.guarantee}: {run.status()}")
    return run


async def run_all(args: argparse.Namespace) -> tuple[list[Run], dict[str, float]]:
    logs = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    print(f"logs in {logs}", flush=True)
    runs: list[Run] = []
    async with Cluster() as cluster:
        await cluster.warm_up_groups()
        hardware = {} if args.no_hardware else await hardware_ceiling(cluster, args.events)
        works = {p: workload(p, args.events) for p in args.pipelines}
        args.sources, args.ends = {}, {}
        for p, work in works.items():
            args.sources[p] = f"peer-in-{p}-{uuid.uuid4().hex[:8]}"
            await cluster.create_topics([args.sources[p]])
            await preload(args.sources[p], work.values, timestamps=work.timestamps)
            args.ends[p] = await cluster.end_offsets(args.sources[p])
        plan = [
            (s, p, g)
            for p in args.pipelines
            for s in args.systems
            for g in args.guarantees
            if supports(s, p, g)
        ]
        for rep in range(1, args.reps + 1):
            turn = (rep - 1) % len(plan)
            for system, p, g in plan[turn:] + plan[:turn]:
                run = Run(system, p, "throughput", g, rep)
                runs.append(await run_one(cluster, run, works[p], args, logs))
        if args.paced_events:
            for p in args.pipelines:
                work = workload(p, args.paced_events)
                for system, q, g in plan:
                    if q == p:
                        run = Run(system, p, "paced", g, 1)
                        runs.append(await run_one(cluster, run, work, args, logs))
    return runs, hardware


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pipelines", type=lambda s: s.split(","), default=["A", "B"])
    parser.add_argument("--systems", type=lambda s: s.split(","), default=list(SYSTEMS))
    parser.add_argument("--guarantees", type=lambda s: s.split(","), default=list(BOTH))
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--paced-rate", type=float, default=1000.0)
    parser.add_argument("--paced-events", type=int, default=0, help="0: no latency runs")
    parser.add_argument("--no-hardware", action="store_true", help="skip Kafka's perf tools")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="a PNG (bench virtualenv)")
    args = parser.parse_args(argv)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a new topic's first fetches
    prepare(args.systems)
    runs, hardware = asyncio.run(run_all(args))
    rows = summarize(runs)
    print(markdown(rows, hardware, vars(args)))
    if args.json is not None:
        meta = {k: vars(args)[k] for k in ("events", "reps", "commit_interval", "paced_rate",
                                           "paced_events")}  # fmt: skip
        body = {**meta, "hardware": hardware, "summary": rows, "runs": [asdict(r) for r in runs]}
        args.json.write_text(json.dumps(body, indent=1))
        if args.plot is not None:
            plot = [str(BENCH_PY), "-m", "bench.report", str(args.json), str(args.plot)]
            subprocess.run(plot, check=True, cwd=ROOT)
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
