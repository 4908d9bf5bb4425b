"""A benchmark's load in a process of its own: an optional paced feeder and a read_committed
reader of the output, so that the worker under test has its process and its event loop to
itself (the reader's consumer over hundreds of partitions costs as much CPU as the worker's
checkpoint, and in one process each delays the other).

    load = LoadProcess(output, feed=Feed(source, partitions, rate, seconds))
    load.start()              # the reader starts reading at once
    load.go()                 # the feeder starts (the worker holds its partitions)
    while load.count < n: ...
    result = load.stop()      # the latencies (s) of every output read, when fed

Latency = the wall clock when a read_committed reader got the output minus the `ts` the feeder put
in its input event (both processes read the same clock).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.common import make_events
from bench.exactly_once import Reader


@dataclass(frozen=True)
class Feed:
    """RATE events/s for SECONDS into `source`'s partitions, round robin, each stamped."""

    source: str
    partitions: int
    rate: int
    seconds: float

    @property
    def events(self) -> int:
        return int(self.rate * self.seconds)


class LoadProcess:
    def __init__(self, output: str, feed: Feed | None = None, latency: bool = True) -> None:
        """`latency` False: the outputs carry no `ts` (Kafka Streams' pipeline A): count
        them only."""
        ctx = multiprocessing.get_context("spawn")
        self._count: Any = ctx.Value("q", 0, lock=False)
        self._go = ctx.Event()
        self._stop = ctx.Event()
        self._parent, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_main,
            args=(os.environ["KAFKA_BOOTSTRAP_SERVERS"], output, feed, self._count, self._go,
                  self._stop, child, latency),
            daemon=True,
        )  # fmt: skip

    def start(self) -> None:
        self._process.start()

    def go(self) -> None:
        self._go.set()

    @property
    def count(self) -> int:
        """Outputs a read_committed reader has seen so far."""
        return int(self._count.value)

    def check(self) -> None:
        if not self._process.is_alive():
            raise RuntimeError(f"the load process ended early ({self._process.exitcode})")

    def stop(self) -> list[float]:
        self._stop.set()
        latencies: list[float] = self._parent.recv() if self._parent.poll(60) else []
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
        return latencies


def _main(
    servers: str,
    output: str,
    feed: Feed | None,
    count: Any,
    go: Any,
    stop: Any,
    conn: Connection,
    latency: bool,
) -> None:
    latencies = asyncio.run(_run(servers, output, feed, count, go, stop, latency))
    conn.send(latencies)


async def _run(
    servers: str, output: str, feed: Feed | None, count: Any, go: Any, stop: Any, latency: bool
) -> list[float]:
    reader = Reader(output)  # (its consumer reads KAFKA_BOOTSTRAP_SERVERS: this process's too)
    reading = asyncio.create_task(reader.run(latency=latency and feed is not None))
    feeding: asyncio.Task[None] | None = None
    try:
        while not stop.is_set():
            if feed is not None and feeding is None and go.is_set():
                feeding = asyncio.create_task(_feed(servers, feed))
            for task in (reading, feeding):
                if task is not None and task.done():
                    task.result()  # an error ends the process
            count.value = reader.count
            await asyncio.sleep(0.02)
    finally:
        for task in (reading, feeding):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    return reader.latencies


async def _feed(servers: str, feed: Feed) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=5)
    await producer.start()
    try:
        template = [orjson.loads(e) for e in make_events(min(feed.events, 10_000))]
        tick, sent = 0.02, 0
        per_tick = max(1, int(feed.rate * tick))
        next_at = time.monotonic()
        while sent < feed.events:
            for _ in range(min(per_tick, feed.events - sent)):
                event = dict(template[sent % len(template)], ts=time.time())
                value = orjson.dumps(event)
                await producer.send(feed.source, value, partition=sent % feed.partitions)
                sent += 1
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
