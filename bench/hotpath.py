"""The task's hot path alone, in process, no broker: pipeline A's two stages (decode → key_by
→ encode; decode → an agent's running sum in a dict → encode) over N pre-built consumer
records, into a real `RecordCollector` whose producer is an unstarted aiokafka producer (its
batches are built, never sent). CPU µs per event of the two passes, best of R.

    python -m bench.hotpath [--events N] [--reps R] [--setup-only]

Its CPU figures move with the machine's load; for a change's effect count instructions
instead: `valgrind --tool=callgrind` over N and 3N events, and over `--setup-only` (the
records built, no task run), gives the instructions per event of the two passes alone.

Isolates what `runtime/task.py`, `collector.py`, `agent_run.py`, `operators.py` and
`serde.py` cost per event from the fetch path and the broker (bench/compare.py measures the
whole)."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

import streamkit as sk
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.task import Task


def _app() -> tuple[sk.App, Any, Any]:
    app = sk.App("hotpath")
    source = app.topic("hp-in", partitions=1)
    out = app.topic("hp-out", partitions=4)
    by_user = app.stream(source).key_by("user_id", name="by-user")
    totals: dict[str, float] = {}

    @app.agent(by_user, sink=out)
    async def running_sum(stream: sk.Stream[Any]) -> AsyncIterator[dict[str, Any]]:
        async for p in stream:
            user = p["user_id"]
            total = totals[user] = totals.get(user, 0.0) + p["amount"]
            yield {"user_id": user, "total": total}

    return app, source, out


def _records(topic: str, values: list[bytes], keys: list[bytes | None]) -> list[Any]:
    return [
        ConsumerRecord(topic, 0, i, 1_700_000_000_000 + i, 0, k, v, None, 0, len(v), ())
        for i, (k, v) in enumerate(zip(keys, values, strict=True))
    ]


async def _pass(task: Task, records: list[Any], chunk: int = 500) -> float:
    """CPU seconds for `task` to process `records` fed in fetch-sized chunks."""
    start = time.process_time()
    for i in range(0, len(records), chunk):
        task.put(records[i : i + chunk])
        last = records[min(i + chunk, len(records)) - 1].offset
        # spinning, not waiting: the task runs in between (CPU is what is measured)
        while task.committable != last + 1:  # noqa: ASYNC110
            await asyncio.sleep(0)
    return time.process_time() - start


async def run(events: int, setup_only: bool = False) -> float:
    app, source, out = _app()
    first, second = app.stages
    rng = random.Random(7)
    values = [
        orjson.dumps({"id": i, "user_id": f"user-{rng.randrange(10_000)}",
                      "amount": rng.randrange(1, 10_000) / 100, "kind": "purchase"})
        for i in range(events)
    ]  # fmt: skip
    producer = AIOKafkaProducer(max_batch_size=256 * 1024)
    counts = {source.name: 1, "hotpath-by-user-repartition": 4, out.name: 4}
    counts.update({t.name: 4 for t in second.topics})
    cpu = 0.0
    produced: list[Any] = []
    for stage, recs in ((first, _records(source.name, values, [None] * events)), (second, None)):
        collector = RecordCollector(producer, counts)

        async def keep(builder: Any, topic: str, partition: int | None = None) -> Any:
            produced.append((topic, builder))
            return asyncio.get_running_loop().create_future()

        producer.send_batch = keep
        task = Task(stage, 0, collector, dlq_topic="dlq", on_agent_error="dlq",
                    on_room=lambda: None)  # fmt: skip
        if recs is None:  # the second stage reads what the first wrote, in order
            topic = second.topics[0].name
            keys = [orjson.loads(v)["user_id"].encode() for v in values]
            recs = _records(topic, values, keys)
        if setup_only:
            continue
        task.start()
        while not task.accepting:  # noqa: ASYNC110 (it opens its stage meanwhile)
            await asyncio.sleep(0)
        cpu += await _pass(task, recs)
        await collector.submit()
        await task.close(1)
    return cpu / events * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--setup-only", action="store_true", help="build the records only (what to subtract)"
    )
    args = parser.parse_args(argv)
    runs = [asyncio.run(run(args.events, args.setup_only)) for _ in range(args.reps)]
    print(f"hot path: {min(runs):.2f} µs CPU per event (best of {args.reps}; "
          f"all {', '.join(f'{r:.2f}' for r in runs)})")  # fmt: skip


if __name__ == "__main__":
    main()
