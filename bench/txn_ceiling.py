"""The broker's side of an exactly-once checkpoint at P partitions, without streamkit: the
baseline for `bench.partitions`' paced checkpoint.

    python -m bench.txn_ceiling [--partitions 8,256] [--rate 2000] [--seconds 10]

A loop in plain aiokafka makes, every `--interval` (0.1 s, streamkit's exactly-once commit
interval), the transaction pipeline A's worker makes for the events of that interval: per
event one record to a random partition of each of three topics of P/2 partitions (the
repartition topic, the table's changelog, the output) and the offsets of the input partitions
that moved (P/2 source partitions, P/2 repartition partitions), then the commit. The rest of
the paced run's traffic goes on beside it, from a process of its own (`bench/load_process.py`):
RATE events/s fed into a source topic of P/2 partitions, read_committed readers of the output
and of the repartition topic. A transaction's time is from its first record handed to the
producer until `commit_transaction` returned; when one outlasts the interval, the next starts
at once with the events that arrived meanwhile, as the worker's next checkpoint does.

What it shows: how the broker's cost of a transaction grows with the partitions it touches, on
this machine, with nothing of streamkit's in the way. `--client rdkafka` makes the same
transactions with confluent-kafka's producer (librdkafka: batching, requests and responses in
native threads) instead of aiokafka's, to tell the broker's share from the Python client's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from bench.common import Cluster, bootstrap
from bench.load_process import Feed, LoadProcess
from streamkit.runtime.txn_producers import RETRY_BACKOFF_MS

VALUE = b'{"user_id":"u12345","total":1234.56,"ts":1700000000.000}'


async def raw_paced(
    cluster: Cluster, half: int, rate: int, seconds: float, interval: float
) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:6]
    source, rep, log, out = (f"bt-{kind}-{uid}" for kind in ("in", "rep", "log", "out"))
    await cluster.create_topics([source, rep, log, out], partitions=half)
    loads = [LoadProcess(out, Feed(source, half, rate, seconds)), LoadProcess(rep)]
    for load in loads:
        load.start()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap(),
        transactional_id=f"bt-{uid}",
        linger_ms=0,
        retry_backoff_ms=RETRY_BACKOFF_MS,  # as streamkit's transactional producers retry
    )
    await producer.start()
    rng = random.Random(7)
    durations: list[float] = []
    group = f"bt-group-{uid}"
    offsets: dict[TopicPartition, int] = {}  # each input partition's offset so far
    try:
        loads[0].go()
        started = last = time.monotonic()
        cpu_started = time.process_time()
        done = 0
        n = int(rate * seconds)
        while done < n:
            await asyncio.sleep(max(0.0, last + interval - time.monotonic()))
            now = time.monotonic()
            events = min(n - done, int((now - started) * rate) - done)
            last = now
            if events <= 0:
                continue
            t = time.monotonic()
            await producer.begin_transaction()
            sends = []
            moved: dict[TopicPartition, int] = {}
            for i in range(events):
                for tp in (TopicPartition(source, (done + i) % half),
                           TopicPartition(rep, rng.randrange(half))):  # fmt: skip
                    moved[tp] = offsets[tp] = offsets.get(tp, 0) + 1
                for topic in (rep, log, out):
                    sends.append(await producer.send(topic, VALUE, partition=rng.randrange(half)))
            await asyncio.gather(
                asyncio.gather(*sends),
                producer.send_offsets_to_transaction(moved, group),
            )
            await producer.commit_transaction()
            durations.append(time.monotonic() - t)
            done += events
        elapsed = time.monotonic() - started
        cpu = time.process_time() - cpu_started
    finally:
        await producer.stop()
        for load in loads:
            load.stop()
    return paced_row("raw transactions", half, rate, durations, elapsed, cpu / n)


def paced_row(
    mode: str, half: int, rate: int, durations: list[float], elapsed: float, cpu_per_event: float
) -> dict[str, Any]:
    """One paced run's row: the transactions' mean, p50 and p95, their rate, CPU per event."""
    durations = sorted(durations)
    return {
        "partitions": 2 * half,
        "mode": mode,
        "paced_rate": rate,
        "paced_mean_checkpoint_ms": round(1000 * statistics.fmean(durations), 1),
        "paced_p50_checkpoint_ms": round(1000 * statistics.median(durations), 1),
        "paced_p95_checkpoint_ms": round(1000 * durations[int(len(durations) * 0.95)], 1),
        "paced_transactions_per_s": round(len(durations) / elapsed, 1),
        "paced_cpu_us_per_event": round(1e6 * cpu_per_event, 1),
    }


def rdkafka_transactions(
    topics: tuple[str, str, str, str], half: int, rate: int, seconds: float, interval: float
) -> tuple[list[float], float, float]:
    """`raw_paced`'s loop with librdkafka's transactional producer (blocking calls: this
    thread does nothing else meanwhile). Returns the durations, the elapsed and the CPU time
    of the whole process (librdkafka's threads included)."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka import TopicPartition as NativeTP

    source, rep, log, out = topics
    uid = uuid.uuid4().hex[:6]
    producer = Producer(
        {
            "bootstrap.servers": bootstrap(),
            "transactional.id": f"bt-rd-{uid}",
            "linger.ms": 0,
            "retry.backoff.ms": RETRY_BACKOFF_MS,
        }
    )
    # the group's metadata for the offsets (no member: generation -1, like aiokafka's v0)
    group = Consumer({"bootstrap.servers": bootstrap(), "group.id": f"bt-group-{uid}"})
    metadata = group.consumer_group_metadata()
    producer.init_transactions(30)
    rng = random.Random(7)
    durations: list[float] = []
    offsets: dict[tuple[str, int], int] = {}
    started = last = time.monotonic()
    cpu_started = time.process_time()
    done, n = 0, int(rate * seconds)
    try:
        while done < n:
            time.sleep(max(0.0, last + interval - time.monotonic()))
            now = time.monotonic()
            events = min(n - done, int((now - started) * rate) - done)
            last = now
            if events <= 0:
                continue
            t = time.monotonic()
            producer.begin_transaction()
            moved: dict[tuple[str, int], int] = {}
            for i in range(events):
                for tp in ((source, (done + i) % half), (rep, rng.randrange(half))):
                    moved[tp] = offsets[tp] = offsets.get(tp, 0) + 1
                for topic in (rep, log, out):
                    producer.produce(topic, VALUE, partition=rng.randrange(half))
            positions = [NativeTP(topic, p, o) for (topic, p), o in moved.items()]
            producer.send_offsets_to_transaction(positions, metadata)
            producer.commit_transaction()
            durations.append(time.monotonic() - t)
            done += events
        return durations, time.monotonic() - started, time.process_time() - cpu_started
    finally:
        group.close()
        producer.flush()


async def rdkafka_paced(
    cluster: Cluster, half: int, rate: int, seconds: float, interval: float
) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:6]
    topics = source, rep, log, out = tuple(
        f"bt-{kind}-{uid}" for kind in ("in", "rep", "log", "out")
    )
    await cluster.create_topics(list(topics), partitions=half)
    loads = [LoadProcess(out, Feed(source, half, rate, seconds)), LoadProcess(rep)]
    for load in loads:
        load.start()
    try:
        loads[0].go()
        durations, elapsed, cpu = await asyncio.to_thread(
            rdkafka_transactions, (source, rep, log, out), half, rate, seconds, interval
        )
    finally:
        for load in loads:
            load.stop()
    n = int(rate * seconds)
    return paced_row("raw transactions, librdkafka", half, rate, durations, elapsed, cpu / n)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    paced = rdkafka_paced if args.client == "rdkafka" else raw_paced
    async with Cluster() as cluster:
        await cluster.warm_up_groups()
        for total in args.partitions:
            row = await paced(cluster, total // 2, args.rate, args.seconds, args.interval)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--partitions", type=lambda s: [int(x) for x in s.split(",")], default=[8, 256]
    )
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--client", choices=("aiokafka", "rdkafka"), default="aiokafka")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
