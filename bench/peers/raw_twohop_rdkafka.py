"""The raw two-hop loop on librdkafka: pipeline A in plain confluent-kafka, shaped like
`raw_twohop.py` (our virtualenv), to measure what a native Kafka client's data path is worth
beside aiokafka's. Hop 1 consumes the input and re-keys each record by user into the
4-partition repartition topic `{BENCH_OUTPUT}-by-user`; hop 2 consumes that topic, keeps the
running sums in a dict and produces the totals. One thread takes turns between the two
consumers (`consume` batches of up to 2,000); librdkafka fetches, batches and sends in its own
threads.

- at-least-once: every BENCH_COMMIT_INTERVAL, flush the producer, then commit both consumers;
- exactly-once: one transactional producer; every BENCH_COMMIT_INTERVAL, both consumers'
  positions go into the transaction (`send_offsets_to_transaction`, KIP-447 group metadata)
  and it commits. No durable state beyond the transaction, as the aiokafka loop."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.peers.raw_aiokafka import running_sum

env = os.environ
PARTITIONS = 4
BATCH = 2000


def consumer(topic: str, group: str) -> Consumer:
    c = Consumer(
        {
            "bootstrap.servers": env["BENCH_BOOTSTRAP"],
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.max.bytes": 16 * 1024 * 1024,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
        }
    )
    c.subscribe([topic])
    return c


def create_topic(name: str) -> None:
    admin = AdminClient({"bootstrap.servers": env["BENCH_BOOTSTRAP"]})
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        future.result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until every partition has a leader
        meta = admin.list_topics(name, timeout=10).topics.get(name)
        parts = meta.partitions if meta and meta.error is None else {}
        if len(parts) == PARTITIONS and all(p.leader >= 0 for p in parts.values()):
            return
        time.sleep(0.05)
    raise SystemExit(f"topic {name} has no leaders after 30 s")


def positions(c: Consumer) -> list[TopicPartition]:
    return [tp for tp in c.position(c.assignment()) if tp.offset >= 0]


def main() -> None:
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    exactly_once = env["BENCH_GUARANTEE"] == "exactly_once"
    middle = f"{env['BENCH_OUTPUT']}-by-user"
    create_topic(middle)
    config: dict[str, Any] = {
        "bootstrap.servers": env["BENCH_BOOTSTRAP"],
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 256 * 1024,
        "queue.buffering.max.messages": 1_000_000,
        "partitioner": "murmur2_random",
    }
    if exactly_once:
        config["transactional.id"] = f"raw-rdkafka-{uuid.uuid4()}"
    producer = Producer(config)
    first = consumer(env["BENCH_INPUT"], env["BENCH_GROUP"])
    second = consumer(middle, f"{env['BENCH_GROUP']}-by-user")
    output, every = env["BENCH_OUTPUT"], float(env["BENCH_COMMIT_INTERVAL"])
    total = running_sum()
    if exactly_once:
        producer.init_transactions(30)
        producer.begin_transaction()

    def send(topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                producer.produce(topic, value, key)
                return
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.01)

    def checkpoint() -> None:
        if exactly_once:
            for c in (first, second):
                if offsets := positions(c):
                    producer.send_offsets_to_transaction(offsets, c.consumer_group_metadata())
            producer.commit_transaction()
            producer.begin_transaction()
        else:
            producer.flush()
            for c in (first, second):
                with contextlib.suppress(KafkaException):  # nothing consumed yet
                    c.commit(asynchronous=False)

    last, dirty = time.monotonic(), False
    try:
        while not stopping:
            got = 0
            for msg in first.consume(num_messages=BATCH, timeout=0):
                if msg.error() is None:
                    value = msg.value()
                    send(middle, orjson.loads(value)["user_id"].encode(), value)
                    got += 1
            for msg in second.consume(num_messages=BATCH, timeout=0 if got else 0.01):
                if msg.error() is None:
                    key, value = total(msg.value())
                    send(output, key, value)
                    got += 1
            producer.poll(0)
            dirty = dirty or got > 0
            if dirty and time.monotonic() - last >= every:
                checkpoint()
                last, dirty = time.monotonic(), False
    finally:
        if dirty:
            checkpoint()
        if exactly_once:
            producer.abort_transaction()  # the empty one begun by the last checkpoint
        producer.flush()
        first.close()
        second.close()


if __name__ == "__main__":
    main()
