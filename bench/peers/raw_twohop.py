"""The raw two-hop ceiling: pipeline A in plain aiokafka, shaped like the frameworks' (our
virtualenv). Hop 1 consumes the input and re-keys each record by user into a 4-partition
repartition topic; hop 2 consumes that topic, keeps the running sums in a dict and produces
the totals. Both hops are bench/peers/raw_loop.py's relay (flush + commit every
BENCH_COMMIT_INTERVAL), run concurrently in one process with one producer; no durable state,
at-least-once only. The repartition topic is `{BENCH_OUTPUT}-by-user`, created here."""

from __future__ import annotations

import asyncio
import signal

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.peers.raw_aiokafka import running_sum
from bench.peers.raw_loop import PARTITIONS, consumer, env, producer, relay


def by_user(value: bytes) -> tuple[bytes, bytes]:
    """Hop 1: the record unchanged, keyed by its user."""
    return orjson.loads(value)["user_id"].encode(), value


async def create_topic(name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=env["BENCH_BOOTSTRAP"])
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
        while True:  # until the metadata shows every partition with a leader
            (meta,) = await admin.describe_topics([name])
            parts = meta["partitions"]
            full = meta["error_code"] == 0 and len(parts) == PARTITIONS
            if full and all(p["leader"] >= 0 for p in parts):
                return
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def main() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    middle = f"{env['BENCH_OUTPUT']}-by-user"
    await create_topic(middle)
    first = consumer(env["BENCH_INPUT"], env["BENCH_GROUP"])
    second = consumer(middle, f"{env['BENCH_GROUP']}-by-user")
    sink = producer()
    for client in (first, second, sink):
        await client.start()
    try:
        await asyncio.gather(
            relay(first, sink, middle, by_user, stop),
            relay(second, sink, env["BENCH_OUTPUT"], running_sum(), stop),
        )
    finally:
        for client in (first, second, sink):
            await client.stop()


if __name__ == "__main__":
    asyncio.run(main())
