"""The other raw ceiling: a plain confluent-kafka (librdkafka) consume → produce loop, pipeline A
only, at-least-once, in the bench virtualenv: `consume` batches of up to 2000, orjson
decode/encode, running sums in a dict, the output partition by murmur2 (librdkafka's
`murmur2_random`, Java's), flush + synchronous commit every BENCH_COMMIT_INTERVAL. Like the
aiokafka loop it has no repartition hop and no durable state."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

env = os.environ


def main() -> None:
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer = Consumer(
        {
            "bootstrap.servers": env["BENCH_BOOTSTRAP"],
            "group.id": env["BENCH_GROUP"],
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": env["BENCH_BOOTSTRAP"],
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
        }
    )
    consumer.subscribe([env["BENCH_INPUT"]])
    output, every = env["BENCH_OUTPUT"], float(env["BENCH_COMMIT_INTERVAL"])
    totals: dict[str, float] = {}
    last, dirty = time.monotonic(), False
    try:
        while not stopping:
            for msg in consumer.consume(num_messages=2000, timeout=0.1):
                if msg.error():
                    continue
                p = orjson.loads(msg.value())
                user = p["user_id"]
                total = totals[user] = totals.get(user, 0.0) + p["amount"]
                value = orjson.dumps({"user_id": user, "total": total})
                while True:
                    try:
                        producer.produce(output, value, user.encode())
                        break
                    except BufferError:  # the local queue is full: let deliveries drain
                        producer.poll(0.05)
                dirty = True
            producer.poll(0)
            if dirty and time.monotonic() - last >= every:
                producer.flush()
                consumer.commit(asynchronous=False)
                last, dirty = time.monotonic(), False
    finally:
        producer.flush()
        if dirty:
            consumer.commit(asynchronous=False)
        consumer.close()


if __name__ == "__main__":
    main()
