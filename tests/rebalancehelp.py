"""Helpers of the rebalance tests and benchmarks (tests/test_cooperative.py,
tests/test_exactly_once.py, bench/rebalance.py, bench/rebalance_state.py): a paced feed of
counters, who processed which partition (from `tests.procapp` outputs), what a worker holds
(from its log), and the teardown they share."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaProducer

from tests.chaoshelp import OutputWatch
from tests.kafkahelp import WorkerProcess, bootstrap

ANY_PARTITION = r"(\S+\[\d+\])"


async def feed(
    topic: str,
    partitions: int,
    rate: int,
    stop: asyncio.Event,
    sent: list[int] | None = None,
    total: int | None = None,
) -> None:
    """Send 0, 1, 2, ... round-robin over the partitions at `rate` events/s until `stop` (or
    `total`); each number sent is appended to `sent`."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5)
    await producer.start()
    try:
        i, started = 0, time.monotonic()
        while not stop.is_set() and (total is None or i < total):
            await producer.send(topic, orjson.dumps(i), partition=i % partitions)
            if sent is not None:
                sent.append(i)
            i += 1
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()


def owners(watch: OutputWatch, since: float, until: float) -> dict[int, set[int]]:
    """input partition → the pids whose outputs for it arrived in [since, until)."""
    found: dict[int, set[int]] = {}
    for at, record in zip(watch.times, watch.records, strict=True):
        if since <= at < until:
            value = orjson.loads(record.value)
            found.setdefault(value["partition"], set()).add(value["pid"])
    return found


def held(log: str, pattern: str = ANY_PARTITION) -> set[str]:
    """What a worker holds at the end of `log`, under either protocol: its `assigned` lines
    (each says all it holds) and `revoked` lines folded in order; `pattern`'s group picks
    the partitions (by default every `topic[p]`)."""
    found: set[str] = set()
    for line in log.splitlines():
        for verb in ("assigned", "revoked"):
            if f"task_manager: {verb} " in line:
                parts = set(re.findall(pattern, line))
                found = found | parts if verb == "assigned" else found - parts
    return found


def revoked_tasks(log: str) -> int:
    """How many partitions a worker's log says it revoked, in all."""
    return sum(
        len(re.findall(r"\[\d+\]", line))
        for line in log.splitlines()
        if "task_manager: revoked" in line
    )


async def teardown(
    stop: asyncio.Event,
    feeding: asyncio.Task[None] | None,
    watch: OutputWatch | None,
    workers: Iterable[WorkerProcess],
) -> None:
    """Stop the feed, the output watch and the workers (SIGTERM, then wait)."""
    stop.set()
    if feeding is not None:
        await asyncio.gather(feeding, return_exceptions=True)
    if watch is not None:
        await watch.stop()
    for w in workers:
        w.stop()
