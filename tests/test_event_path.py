"""The at-least-once event path through an in-process worker, against the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

import streamkit as sk
from streamkit.runtime.dlq import describe
from streamkit.runtime.worker import WorkerFailed
from tests.kafkahelp import committed, create_topic, end_offsets, produce, read_all, running


class Purchase(BaseModel):
    user_id: str
    amount: float


def make_app(uid: str, workdir: Path, **settings: Any) -> sk.App:
    return sk.App(f"t-{uid}", workdir=workdir, commit_interval=0.2, **settings)


async def test_round_trip_through_an_agent_to_its_sink(uid: str, workdir: Path) -> None:
    app = make_app(uid, workdir)
    src = app.topic(f"in-{uid}", partitions=3)
    out = app.topic(f"out-{uid}", partitions=2)

    @app.agent(src, sink=out)
    async def double(stream: sk.Stream[dict[str, int]]) -> AsyncIterator[Any]:
        async for value in stream:
            event = stream.event
            yield {"n": value["n"] * 2, "src": [event.partition, event.offset]}

    async with running(app):
        await produce(src.name, [orjson.dumps({"n": i}) for i in range(300)])
        records = await read_all(out.name, expect=300)

    doubled = sorted(orjson.loads(r.value)["n"] for r in records)
    assert doubled == [2 * i for i in range(300)]
    # Every source coordinate appears once: each event processed exactly once in a clean run.
    coords = {tuple(orjson.loads(r.value)["src"]) for r in records}
    assert len(coords) == 300
    # After the graceful stop the group has committed to the end of every partition.
    assert await committed(app.id, src.name) == await end_offsets(src.name)


async def test_pydantic_values_decode_and_bad_ones_go_to_the_dlq(uid: str, workdir: Path) -> None:
    app = make_app(uid, workdir)
    src = app.topic(f"purchases-{uid}", value_type=Purchase, partitions=1)
    out = app.topic(f"spent-{uid}", partitions=1)

    @app.agent(src, sink=out)
    async def spend(stream: sk.Stream[Purchase]) -> AsyncIterator[Any]:
        async for p in stream:
            assert isinstance(p, Purchase)
            yield {"user": p.user_id, "cents": round(p.amount * 100)}

    good = orjson.dumps({"user_id": "u1", "amount": 1.5})
    values = [
        good,
        b"\x00\x01 not json",
        orjson.dumps({"user_id": "u2", "amount": "lots"}),
        good,
        orjson.dumps({"user_id": "u3"}),
        good,
    ]
    keys = [b"k0", b"k1", b"k2", b"k3", b"k4", b"k5"]
    async with running(app):
        await produce(src.name, values, keys=keys)
        results = await read_all(out.name, expect=3)
        dead = await read_all(app.dlq.name, expect=3)

    assert [orjson.loads(r.value) for r in results] == [{"user": "u1", "cents": 150}] * 3
    # The dead letters keep their bytes and say why and where they came from.
    assert [(d.key, d.value) for d in dead] == [(keys[i], values[i]) for i in (1, 2, 4)]
    info = [describe(d.headers) for d in dead]
    assert [i["streamkit.source.offset"] for i in info] == ["1", "2", "4"]
    assert {i["streamkit.source.topic"] for i in info} == {src.name}
    assert {i["streamkit.source.partition"] for i in info} == {"0"}
    assert {i["streamkit.error.type"] for i in info} == {"DecodeError"}
    assert "Invalid JSON" in info[0]["streamkit.error"]
    assert "amount" in info[1]["streamkit.error"] and "amount" in info[2]["streamkit.error"]
    assert await committed(app.id, src.name) == {0: 6}


async def test_agent_exception_goes_to_the_dlq_and_the_stream_goes_on(
    uid: str, workdir: Path
) -> None:
    app = make_app(uid, workdir)
    src = app.topic(f"in-{uid}", partitions=2)
    out = app.topic(f"out-{uid}", partitions=1)

    @app.agent(src, sink=out)
    async def picky(stream: sk.Stream[int]) -> AsyncIterator[int]:
        async for n in stream:
            if n % 10 == 3:
                raise ValueError(f"I do not like {n}")
            yield n

    async with running(app):
        await produce(src.name, [str(i).encode() for i in range(100)])
        results = await read_all(out.name, expect=90)
        dead = await read_all(app.dlq.name, expect=10)

    assert sorted(orjson.loads(r.value) for r in results) == [i for i in range(100) if i % 10 != 3]
    assert sorted(int(d.value) for d in dead) == [i for i in range(100) if i % 10 == 3]
    info = describe(dead[0].headers)
    assert info["streamkit.error.type"] == "ValueError"
    assert info["streamkit.error"].startswith("I do not like")
    assert info["streamkit.agent"] == "picky"


async def test_on_agent_error_stop_stops_the_worker_before_the_failing_event(
    uid: str, workdir: Path
) -> None:
    app = make_app(uid, workdir, on_agent_error="stop")
    src = app.topic(f"in-{uid}", partitions=1)

    @app.agent(src)
    async def fragile(stream: sk.Stream[int]) -> None:
        async for n in stream:
            if n == 7:
                raise RuntimeError("seven")

    await create_topic(src.name, 1)
    await produce(src.name, [str(i).encode() for i in range(20)])
    with pytest.raises(WorkerFailed, match="seven"):
        async with running(app) as worker:
            await worker_stopped(worker)
    # Offsets 0..6 were processed and committed; 7 will be read again after a fix.
    assert await committed(app.id, src.name) == {0: 7}


async def worker_stopped(worker: Any) -> None:
    from tests.kafkahelp import wait_until

    await wait_until(lambda: worker._stopping.is_set(), within=30, what="the worker to stop")


async def test_existing_topic_with_other_partition_count_fails_at_start(
    uid: str, workdir: Path
) -> None:
    app = make_app(uid, workdir)
    src = app.topic(f"in-{uid}", partitions=4)

    @app.agent(src)
    async def noop(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            pass

    await create_topic(src.name, 2)
    with pytest.raises(
        sk.ConfigError, match=r"has 2 partitions on the broker but the app declares 4"
    ):
        async with running(app):
            pass


async def test_topic_send_from_an_agent_and_coroutine_agents(uid: str, workdir: Path) -> None:
    app = make_app(uid, workdir)
    src = app.topic(f"in-{uid}", key_type=str, partitions=2)
    evens = app.topic(f"evens-{uid}", key_type=str, value_type=int, partitions=1)

    @app.agent(src)
    async def route(stream: sk.Stream[int]) -> None:
        async for n in stream:
            if n % 2 == 0:
                await evens.send(n, key=stream.event.key)

    async with running(app):
        await produce(
            src.name,
            [str(i).encode() for i in range(50)],
            keys=[f"k{i}".encode() for i in range(50)],
        )
        records = await read_all(evens.name, expect=25)
    assert sorted((r.key, int(r.value)) for r in records) == sorted(
        (f"k{i}".encode(), i) for i in range(0, 50, 2)
    )
