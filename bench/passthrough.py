"""Pass-through benchmark: raw aiokafka consume → produce → commit loops (the ceiling) against
a streamkit agent that yields every value unchanged, and the same agent behind one key_by hop
(the cost of a repartition), on the same pre-loaded input topic.

Raw loops: "raw aiokafka (batch)" builds one aiokafka BatchBuilder per output partition per
fetch, as streamkit does (the real ceiling, and the baseline of the ratios); "raw aiokafka
(send)" calls `producer.send()` per record, as most hand-written loops do.

    python -m bench.passthrough [--events N] [--reps R] [--json PATH] [--smoke]

Needs KAFKA_BOOTSTRAP_SERVERS (`scripts/localkafka.py run -- ...` starts a broker). Runs
alternate raw, streamkit, raw, streamkit...; each has a fresh consumer group and a fresh
4-partition output topic, created before its clock starts. A run whose output does not hold
exactly N records is reported as FAILED and not timed. `--smoke` (N=2000, one rep) exits 1 when
a run fails; the test suite uses it to keep this harness working.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

import streamkit as sk
from bench.common import (
    PARTITIONS,
    Cluster,
    Launch,
    RunResult,
    Target,
    bootstrap,
    make_events,
    markdown,
    preload,
    summarize,
    timed_run,
    write_json,
)
from streamkit.runtime.worker import Worker

RAW_BATCH = "raw aiokafka (batch)"
RAW = "raw aiokafka (send)"
STREAMKIT = "streamkit"
STREAMKIT_KEY_BY = "streamkit + key_by hop"
SYSTEMS = (RAW_BATCH, RAW, STREAMKIT, STREAMKIT_KEY_BY)
COMMIT_EVERY = 1.0  # seconds, for both systems
SMOKE_EVENTS = 2000

Launchers = tuple[Launch, Callable[[], None]]  # start the system; ask it to stop


@dataclass
class Plan:
    events: int
    reps: int
    json_path: Path | None
    smoke: bool

    @property
    def within(self) -> float:
        """Seconds a run may take before it counts as failed."""
        return 20.0 + self.events / 5000


def parse_args(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(prog="python -m bench.passthrough", description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="input events (300000)")
    parser.add_argument("--reps", type=int, default=2, help="runs per system (2)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write JSON")
    parser.add_argument(
        "--smoke", action="store_true", help=f"N={SMOKE_EVENTS}, 1 rep, exit 1 on a failure"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.events, args.reps = SMOKE_EVENTS, 1
    if args.events < 1 or args.reps < 1:
        parser.error("--events and --reps must be at least 1")
    return Plan(args.events, args.reps, args.json, args.smoke)


# -- the raw aiokafka loop ----------------------------------------------------------------------


def raw_clients(target: Target) -> tuple[Any, Any]:
    consumer = AIOKafkaConsumer(
        target.source,
        bootstrap_servers=bootstrap(),
        group_id=target.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=2000,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap(),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=262144,
    )
    return consumer, producer


async def flush_and_commit(consumer: Any, producer: Any) -> None:
    await producer.flush()
    await consumer.commit()


async def relay(producer: Any, output: str, batches: dict[Any, list[Any]]) -> int:
    """Decode and re-encode each value, send it on with its key; how many records."""
    count = 0
    for records in batches.values():
        for rec in records:
            value = orjson.dumps(orjson.loads(rec.value))
            await producer.send(output, value, key=rec.key)
        count += len(records)
    return count


async def relay_batched(producer: Any, output: str, batches: dict[Any, list[Any]]) -> int:
    """The same, with one BatchBuilder per output partition (round-robin) per fetch."""
    builders: dict[int, Any] = {}
    count, nxt = 0, 0
    for records in batches.values():
        for rec in records:
            value = orjson.dumps(orjson.loads(rec.value))
            nxt = (nxt + 1) % PARTITIONS
            builder = builders.get(nxt)
            if builder is None:
                builder = builders[nxt] = producer.create_batch()
            if builder.append(timestamp=None, key=rec.key, value=value, headers=[]) is None:
                await producer.send_batch(builder, output, partition=nxt)
                builder = builders[nxt] = producer.create_batch()
                builder.append(timestamp=None, key=rec.key, value=value, headers=[])
        count += len(records)
    for partition, builder in builders.items():
        await producer.send_batch(builder, output, partition=partition)
    return count


async def consume_until_done(
    consumer: Any, producer: Any, target: Target, stopping: asyncio.Event
) -> None:
    """getmany → relay; every COMMIT_EVERY s flush then commit; a last commit at N."""
    processed, next_commit = 0, time.monotonic() + COMMIT_EVERY
    step = relay_batched if target.system == RAW_BATCH else relay
    while processed < target.events and not stopping.is_set():
        processed += await step(producer, target.output, await consumer.getmany(timeout_ms=100))
        if time.monotonic() >= next_commit:
            await flush_and_commit(consumer, producer)
            next_commit = time.monotonic() + COMMIT_EVERY
    await flush_and_commit(consumer, producer)


async def raw_passthrough(target: Target, stopping: asyncio.Event) -> None:
    consumer, producer = raw_clients(target)
    await producer.start()
    try:
        await consumer.start()
        try:
            await consume_until_done(consumer, producer, target, stopping)
        finally:
            await consumer.stop()
    finally:
        await producer.stop()


def launch_raw(target: Target, workdir: Path) -> Launchers:
    stopping = asyncio.Event()
    return (lambda: raw_passthrough(target, stopping)), stopping.set


# -- the streamkit agent ------------------------------------------------------------------------


def streamkit_app(target: Target, workdir: Path) -> sk.App:
    app = sk.App(target.group, commit_interval=COMMIT_EVERY, workdir=workdir)
    src = app.topic(target.source, partitions=PARTITIONS)
    out = app.topic(target.output, partitions=PARTITIONS)

    if target.system == STREAMKIT_KEY_BY:

        @app.agent(app.stream(src).key_by("user_id", name="keyed"), sink=out)
        async def keyed(stream: sk.Stream[Any]) -> Any:
            async for value in stream:
                yield value

    else:

        @app.agent(src, sink=out)
        async def passthrough(stream: sk.Stream[Any]) -> Any:
            async for value in stream:
                yield value

    return app


def launch_streamkit(target: Target, workdir: Path) -> Launchers:
    worker = Worker(streamkit_app(target, workdir))
    return (lambda: worker.run(install_signal_handlers=False)), worker.request_stop


# -- the benchmark ------------------------------------------------------------------------------


async def prepare_input(cluster: Cluster, name: str, events: int) -> dict[int, int]:
    """Create and fill the input topic; its end offsets (checked to sum to `events`)."""
    await cluster.create_topics([name])
    await cluster.warm_up_groups()
    started = time.monotonic()
    await preload(name, make_events(events))
    ends = await cluster.end_offsets(name)
    if sum(ends.values()) != events:
        raise SystemExit(f"pre-load wrote {sum(ends.values())} records, expected {events}")
    print(f"pre-loaded {events:,} events into {name} in {time.monotonic() - started:.1f} s")
    return ends


async def run_one(
    cluster: Cluster, plan: Plan, system: str, rep: int, source: str, ends: dict[int, int]
) -> RunResult:
    uid = uuid.uuid4().hex[:8]
    group = f"bench-{uid}"
    target = Target(system, rep, source, ends, f"bench-out-{uid}", group, plan.events)
    await cluster.create_topics([target.output])
    if system.startswith(STREAMKIT):  # its internal topics too: no run pays for creating them
        await cluster.create_topics([f"{group}-dlq"], partitions=1)
        if system == STREAMKIT_KEY_BY:
            await cluster.create_topics([f"{group}-keyed-repartition"])
    launcher = launch_streamkit if system.startswith(STREAMKIT) else launch_raw
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        launch, stop = launcher(target, Path(workdir))
        result = await timed_run(cluster, target, launch, stop, plan.within)
    status = f"ok, {result.total_s or 0:.2f} s" if result.ok else f"FAILED: {result.error}"
    print(f"rep {rep} {system}: {status}", flush=True)
    return result


async def run_all(plan: Plan) -> list[RunResult]:
    results = []
    async with Cluster() as cluster:
        source = f"bench-in-{uuid.uuid4().hex[:8]}"
        ends = await prepare_input(cluster, source, plan.events)
        for rep in range(1, plan.reps + 1):
            turn = (rep - 1) % len(SYSTEMS)  # rotate the order: no system always runs first
            for system in SYSTEMS[turn:] + SYSTEMS[:turn]:
                results.append(await run_one(cluster, plan, system, rep, source, ends))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse_args(argv)
    started = time.monotonic()
    results = asyncio.run(run_all(plan))
    summary = summarize(results, SYSTEMS)
    title = f"Pass-through, {plan.events:,} events, {PARTITIONS} partitions, {plan.reps} reps"
    print(markdown(title, results, summary))
    print(f"\n(benchmark took {time.monotonic() - started:.1f} s)")
    if plan.json_path is not None:
        meta = {"benchmark": "passthrough", "events": plan.events, "reps": plan.reps}
        write_json(plan.json_path, {**meta, "summary": summary}, results)
    return 1 if plan.smoke and not all(r.ok for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
