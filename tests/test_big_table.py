"""A table far larger than its cache: 250,000 keys through a 2,000-entry cache bound in `make
test`, 1,000,000 in `make chaos` (CHAOS_LONG=1; SKTEST_BIG_KEYS sets any other count)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import streamkit as sk
from streamkit.state import inspect as inspect_state
from tests.kafkahelp import committed, create_topic, end_offsets, running, wait_until

N_KEYS = int(
    os.environ.get(
        "SKTEST_BIG_KEYS", "1000000" if os.environ.get("CHAOS_LONG") == "1" else "250000"
    )
)
PARTITIONS = 4


async def preload_keys(topic: str) -> None:
    """Each key twice (so every key is read back after eviction), as raw bytes, fast."""
    from aiokafka import AIOKafkaProducer

    from streamkit.keys import partition_for_key
    from tests.kafkahelp import bootstrap

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=20)
    await producer.start()
    try:
        builders: dict[int, Any] = {}
        for key in _keys():
            p = partition_for_key(key, PARTITIONS)
            builder = builders.get(p) or builders.setdefault(p, producer.create_batch())
            if builder.append(timestamp=None, key=key, value=b"1", headers=[]) is None:
                await (await producer.send_batch(builder, topic, partition=p))
                builders[p] = producer.create_batch()
                builders[p].append(timestamp=None, key=key, value=b"1", headers=[])
        for p, builder in builders.items():
            await (await producer.send_batch(builder, topic, partition=p))
    finally:
        await producer.stop()


def _keys() -> Iterator[bytes]:
    for round_ in range(2):
        step = 1 if round_ == 0 else 7919  # second pass in another order: cold reads
        for i in range(N_KEYS):
            yield b"k%d" % ((i * step) % N_KEYS)


async def test_a_table_far_larger_than_its_cache(uid: str, workdir: Path) -> None:
    app = sk.App(f"big-{uid}", workdir=workdir, commit_interval=1.0, state_cache_entries=2000)
    src = app.topic(f"big-in-{uid}", key_type=str, value_type=int, partitions=PARTITIONS)
    seen = app.table("seen", default=int)

    @app.agent(src, state=[seen])
    async def count(stream: sk.Stream[int]) -> None:
        async for n in stream:  # the input is keyed already: the table lives in stage 0
            key = stream.event.key
            seen[key] += n

    await create_topic(src.name, PARTITIONS)
    await preload_keys(src.name)
    ends = await end_offsets(src.name)
    async with running(app) as worker:

        async def done() -> bool:
            assert not worker.stopping, "the worker stopped"
            return await committed(app.id, src.name) == ends

        await wait_until(
            done,
            within=400,
            what=f"all {2 * N_KEYS} events committed",
            every=1.0,
        )
    parts = inspect_state.local_partitions(app)
    assert sum(p.keys for p in parts if p.table == "seen") == N_KEYS
    total = 0
    for part in parts:
        db = sqlite3.connect(f"file:{part.path}?mode=ro", uri=True)
        try:
            values = {v for (v,) in db.execute('SELECT DISTINCT v FROM "t:seen"')}
            total += db.execute('SELECT count(*) FROM "t:seen"').fetchone()[0]
        finally:
            db.close()
        assert values == {b"2"}, "every key counted exactly twice"
    assert total == N_KEYS
