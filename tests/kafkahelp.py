"""Helpers the tests share: produce, read back under read_committed, wait on conditions,
run workers in-process or as real `streamkit worker` processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

import streamkit as sk
from streamkit.runtime.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


CHAOS_LONG = os.environ.get("CHAOS_LONG") == "1"  # `make chaos`: every variant, long forms


def chaos_only(*what: str) -> pytest.MarkDecorator | tuple[()]:
    """The marks of a variant that only `make chaos` runs (the suite's 20 minutes): skipped
    in `make test`, saying which."""
    return () if CHAOS_LONG else pytest.mark.skip(reason=f"make chaos: {'/'.join(what)}")


def bootstrap() -> str:
    return os.environ["KAFKA_BOOTSTRAP_SERVERS"]


async def wait_until(
    condition: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 30.0,
    what: str = "condition",
    every: float = 0.1,
    detail: Callable[[], str] | None = None,
) -> None:
    """Poll `condition` until true; fail with `what` after `within` seconds (and what
    `detail` returns then, e.g. the workers' logs)."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            more = "" if detail is None else "\n" + detail()
            raise AssertionError(f"timed out after {within}s waiting for {what}{more}")
        await asyncio.sleep(every)


async def create_topic(name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def produce(
    topic: str,
    values: Iterable[bytes | None],
    *,
    keys: Iterable[bytes | None] | None = None,
    partition: int | None = None,
) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5)
    await producer.start()
    n = 0
    try:
        key_iter = iter(keys) if keys is not None else None
        for value in values:
            key = next(key_iter) if key_iter is not None else None
            await producer.send(topic, value, key=key, partition=partition)
            n += 1
        await producer.flush()
    finally:
        await producer.stop()
    return n


async def end_offsets(topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap())
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p["partition"]) for p in meta["partitions"]]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def read_all(
    topic: str,
    *,
    expect: int | None = None,
    within: float = 30.0,
    isolation: str = "read_committed",
) -> list[Any]:
    """Every committed record of `topic` (or every record, `isolation="read_uncommitted"`).
    With `expect`, wait until that many are there, then read a little longer to catch any
    extra (duplicates); without, read to the end of every partition."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap(),
        auto_offset_reset="earliest",
        isolation_level=isolation,
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + within
        quiet_until: float | None = None
        ends: dict[Any, int] = {}
        if expect is None:  # everything up to the current end of every partition
            parts = consumer.partitions_for_topic(topic) or set()
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            now = time.monotonic()
            if expect is None:
                positions = [await consumer.position(tp) for tp in ends]
                if all(pos >= end for pos, end in zip(positions, ends.values(), strict=True)):
                    break
                if now > deadline:
                    raise AssertionError(f"{topic}: not read to its end in {within}s")
                continue
            if len(records) >= expect:
                quiet_until = quiet_until or now + 1.0
                if now >= quiet_until:
                    break
            elif now > deadline:
                raise AssertionError(f"{topic}: {len(records)} records, expected {expect}")
    finally:
        await consumer.stop()
    return records


async def committed(group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


@contextlib.asynccontextmanager
async def running(app: sk.App) -> AsyncIterator[Worker]:
    """Run a worker for `app` inside this event loop; stop it (gracefully) on exit."""
    worker = Worker(app)
    task = asyncio.create_task(worker.run(install_signal_handlers=False))
    try:
        await wait_until(
            lambda: task.done() or (worker.tasks is not None and bool(worker.tasks.tasks)),
            within=30,
            what="the worker to get partitions",
        )
        if task.done():
            task.result()
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 60)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]  # the worker failed while the body ran


class WorkerProcess:
    """A real `streamkit worker MODULE:APP` process with its output in a log file."""

    def __init__(self, spec: str, env: dict[str, str], log_path: Path) -> None:
        self.spec = spec
        # the broker's minimum session timeout: a killed worker's partitions move sooner
        self.env = {**os.environ, "STREAMKIT_SESSION_TIMEOUT_MS": "6000", **env}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamkit.cli", "worker", self.spec],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, within: float) -> int:
        assert self.proc is not None
        return self.proc.wait(within)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.alive:
            self.signal(signal.SIGTERM)
            try:
                self.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
