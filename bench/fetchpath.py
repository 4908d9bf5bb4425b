"""The input fetch path alone: N pre-loaded records of pipeline A's input (one partition), read
from the broker to its end by aiokafka's consumer (`getmany`, read_committed, the
`ConsumerRecord`s the task got with `fetch_path=consumer`) and by the raw fetch
(`RawClient.fetch_input` in an incremental fetch session, then `input_records`: the
`InputRecord`s of `fetch_path=raw`), alternately, R times each. Reported: this process's CPU
µs per record (the broker runs in its own process) and records/s, best and median.

    python -m bench.fetchpath [--records N] [--reps R]     (under scripts/localkafka.py run --)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from bench.common import Cluster, bootstrap, make_events, preload
from streamkit.aiokafka_internals import FetchSession, RawClient, input_records


async def consumer_pass(tp: TopicPartition, end: int) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(), isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    n = 0
    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500, max_records=2000)
            n += sum(len(records) for records in batch.values())
    finally:
        await consumer.stop()
    return n


async def raw_pass(tp: TopicPartition, end: int) -> int:
    client = RawClient({"bootstrap_servers": bootstrap()}, "bench-fetchpath")
    session = FetchSession()
    position, n = 0, 0
    try:
        while position < end:
            ((node, _),) = (await client.leaders([tp])).items()
            answer = await client.fetch_input(
                node, session, {tp: position}, 500, 1, 4 << 20, 32 << 20
            )
            got = None if answer is None else answer.get(tp)
            if got is None:
                continue
            while got.batches:
                n += len(input_records(tp.topic, tp.partition, got.batches, got.start, 2000))
            position = got.next_offset
    finally:
        await client.close()
    return n


async def run(records: int, reps: int) -> dict[str, Any]:
    topic = f"bench-fetchpath-{uuid.uuid4().hex[:6]}"
    async with Cluster() as cluster:
        await cluster.create_topics([topic], partitions=1)
    await preload(topic, make_events(records), partitions=1)
    tp = TopicPartition(topic, 0)
    passes = {"consumer": consumer_pass, "raw": raw_pass}
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in passes}
    for rep in range(reps):
        for name in list(passes) if rep % 2 == 0 else list(reversed(passes)):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            n = await passes[name](tp, records)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            assert n == records, (name, n)
            figures[name].append((cpu / n * 1e6, n / wall))
            print(f"{name}: {cpu / n * 1e6:.3f} µs/record CPU, {n / wall:,.0f} records/s")
    return {
        name: {
            "cpu_us_per_record_best": round(min(c for c, _ in rows), 3),
            "cpu_us_per_record_median": round(statistics.median(c for c, _ in rows), 3),
            "records_per_s_median": round(statistics.median(r for _, r in rows)),
        }
        for name, rows in figures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    print(asyncio.run(run(args.records, args.reps)))


if __name__ == "__main__":
    main()
