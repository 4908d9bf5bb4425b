"""State TTL on tables, over the testing kit (the real tasks, SQLite stores and checkpoints on
a virtual clock): in event time and in processing time a key expires after its last write,
reads as absent at once, is purged with a tombstone in the changelog, and a restore from the
changelog alone does not bring it back; then the same on the broker across a kill -9."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.context import CURRENT_TASK
from streamkit.state.store import open_store
from streamkit.state.table import TablePartition
from streamkit.testing import TestDriver
from tests.kafkahelp import WorkerProcess, create_topic, produce, read_all, wait_until
from tests.test_ops import get, http_endpoint

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def counting_app(name: str, **ttl: Any) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App(name)
    visits = app.topic("visits", partitions=1, timestamp="ts")
    out = app.topic("counts")
    seen = app.table("seen", default=int, **ttl)

    @app.agent(visits, sink=out, state=[seen])
    async def count(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for v in stream:
            seen[v["user"]] += 1
            yield {"user": v["user"], "n": seen[v["user"]]}

    return app, visits, out


def tombstones(driver: TestDriver, table: str) -> list[str]:
    log = driver.records(f"{driver.app.id}-{table}-changelog")
    last = {r.key: r.value for r in log}
    return sorted(k.decode() for k, v in last.items() if v is None)


def test_event_time_ttl_expires_purges_and_survives_a_restore_from_the_changelog() -> None:
    app, visits, out = counting_app("kit-ttl", ttl=60)
    with TestDriver(app) as driver:

        def visit(user: str, at: int) -> None:
            driver.send(visits, {"user": user, "ts": T0 + at}, key=user)

        for user, at in (("ann", 0), ("dan", 10), ("bob", 50), ("ann", 59)):
            visit(user, at)
        assert [v["n"] for v in driver.read_values(out)] == [1, 1, 1, 2]
        visit("cy", 115)  # watermark T0+115: dan (10 + 60) and bob (50 + 60) expired
        assert driver.table("seen").to_dict() == {"ann": 2, "cy": 1}
        visit("bob", 116)  # bob starts again from the default
        assert driver.read_values(out)[-1] == {"user": "bob", "n": 1}
        driver.checkpoint()
        assert tombstones(driver, "seen") == ["dan"]
        driver.restart(lose_state=True)  # from the changelog alone: dan stays gone
        assert driver.table("seen").to_dict() == {"ann": 2, "bob": 1, "cy": 1}
        visit("ann", 200)  # ann's write time (59) came back with her: expired at 119
        assert driver.read_values(out)[-1] == {"user": "ann", "n": 1}
        driver.checkpoint()
        # bob (116 + 60) and cy (115 + 60) purged as the watermark passed; ann written anew
        assert tombstones(driver, "seen") == ["bob", "cy", "dan"]
        assert driver.table("seen").to_dict() == {"ann": 1}


def test_processing_time_ttl_follows_the_wall_clock() -> None:
    app, visits, out = counting_app("kit-ttl-proc", ttl=30, ttl_time="processing")
    with TestDriver(app) as driver:
        driver.send(visits, {"user": "ann", "ts": T0}, key="ann")
        driver.advance_time(20)
        driver.send(visits, {"user": "bob", "ts": T0}, key="bob")
        driver.advance_time(15)  # ann written 35 s ago: expired; bob 15 s ago
        assert driver.table("seen").to_dict() == {"bob": 1}
        driver.checkpoint()
        assert tombstones(driver, "seen") == ["ann"]
        driver.restart(lose_state=True)
        assert driver.table("seen").to_dict() == {"bob": 1}
        driver.advance_time(15)
        assert driver.table("seen").to_dict() == {}
        driver.checkpoint()
        assert tombstones(driver, "seen") == ["ann", "bob"]
        driver.send(visits, {"user": "ann", "ts": T0}, key="ann")
        assert [v["n"] for v in driver.read_values(out)] == [1, 1, 1]


def test_a_bad_ttl_fails_at_declaration_saying_what_to_change() -> None:
    app = sk.App("ttl-bad")
    with pytest.raises(sk.ConfigError, match="ttl must be a positive number of seconds"):
        app.table("a", ttl=0)
    with pytest.raises(sk.ConfigError, match="ttl_time must be 'event' or 'processing'"):
        app.table("b", ttl=5, ttl_time="wall")
    catalog = app.topic("catalog")
    with pytest.raises(sk.ConfigError, match="give the topic a retention"):
        app.table("c", source=catalog, ttl=5)


async def test_expired_keys_stay_gone_after_a_kill_9_and_a_restore_from_the_changelog(
    uid: str, tmp_path: Path
) -> None:
    """On the broker, exactly-once: old keys (event time 1000 s) expire once the watermark
    reaches 1100 s, their tombstones commit to the changelog; a worker killed with -9 and
    replaced on an empty workdir restores the table from the changelog alone: the old keys
    stay gone, the new ones come back with their write times (and expire in their turn)."""
    topic = f"ttl-in-{uid}"
    await create_topic(topic, 1)
    changelog = f"ttl-{uid}-seen-changelog"

    async def visit(users: list[str], ts: int) -> None:
        rows = [orjson.dumps({"user": u, "ts": ts}) for u in users]
        await produce(topic, rows, keys=[u.encode() for u in users])

    def start(name: str) -> WorkerProcess:
        env = {"SKTEST_ID": uid, "STREAMKIT_WORKDIR": str(tmp_path / name)}
        return WorkerProcess("tests.ttlapp:app", env, tmp_path / f"{name}.log").start()

    async def found(endpoint: str, user: str) -> bool:
        code, _ = await get(endpoint, f"/tables/seen/{user}")
        return code == 200

    async def tombstoned() -> list[str]:
        last = {r.key: r.value for r in await read_all(changelog)}
        return sorted(k.decode() for k, v in last.items() if v is None)

    old, new = [f"old{i}" for i in range(5)], [f"new{i}" for i in range(5)]
    worker = start("a")
    try:
        endpoint = await http_endpoint(worker)
        assert endpoint, worker.log()
        await visit(old, 1000)
        await wait_until(lambda: found(endpoint, "old4"), within=60, what="old keys counted")
        await visit(new, 1150)  # the watermark passes 1000 + 100: the old keys expire
        await wait_until(lambda: found(endpoint, "new4"), within=30, what="new keys counted")
        assert not any([await found(endpoint, u) for u in old])
        await wait_until(
            lambda: _equal(tombstoned(), old), within=30, what="the old keys' tombstones"
        )
        worker.kill9()
        worker = start("b")  # an empty workdir: the table comes from its changelog alone
        endpoint = await http_endpoint(worker)
        assert endpoint, worker.log()
        await wait_until(lambda: found(endpoint, "new4"), within=60, what="the restore")
        assert [await found(endpoint, u) for u in old + new] == [False] * 5 + [True] * 5
        await visit(["tick"], 1300)  # new keys were written at 1150: expired at 1250
        await wait_until(lambda: found(endpoint, "tick"), within=30, what="the tick")
        assert not any([await found(endpoint, u) for u in new])
        await wait_until(
            lambda: _equal(tombstoned(), sorted(old + new)), within=30, what="tombstones"
        )
    finally:
        worker.stop()


async def _equal(got: Any, expected: list[str]) -> bool:
    return bool(await got == expected)


class Scope:
    """The running task as state code sees it: the event's time (and no key check)."""

    def __init__(self) -> None:
        self.ts = 0
        self.tables: dict[str, Any] = {}
        self.partition, self.partitions, self.stage_name = 0, 1, "ttl"

    def event_time(self) -> int:
        return self.ts

    def event_key(self) -> None:
        return None


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("write"), st.sampled_from("abcd"), st.integers(0, 20)),
            st.tuples(st.just("advance"), st.just(""), st.integers(0, 10)),
        ),
        max_size=40,
    )
)
def test_event_time_expiry_matches_a_brute_force_model(
    tmp_path_factory: Any, steps: list[tuple[str, str, int]]
) -> None:
    """Writes at any event time (out of order too), the watermark moving forward: a key is
    live while its last write's time + ttl is after the watermark, and once the watermark
    moves every expired key is gone from the store as well (purged)."""
    ttl = 10
    app = sk.App("ttl-model")
    seen = app.table("seen", default=int, ttl=ttl / 1000)
    store = open_store(tmp_path_factory.mktemp("t") / "0.sqlite", {"t": "1"}, ["seen"])
    scope = Scope()
    part = TablePartition(seen, 0, store, 1000, lambda: None, 1)
    scope.tables["seen"] = part
    token = CURRENT_TASK.set(scope)  # type: ignore[arg-type]
    try:
        assert part.expiry is not None
        last: dict[str, int] = {}
        watermark = 0
        part.expiry.advance(watermark)
        for op, key, n in steps:
            if op == "write":
                scope.ts = watermark + n - 10  # up to 10 ms behind the watermark
                seen[key] = n
                last[key] = scope.ts
            else:
                watermark += n
                part.expiry.advance(watermark)
                for k in "abcd":  # purged: not even in the store
                    if k in last and last[k] + ttl <= watermark:
                        assert part.peek(k) == (False, None), k
            live = {k for k, at in last.items() if at + ttl > watermark}
            assert {k for k in "abcd" if k in seen} == live
            assert sorted(seen) == sorted(live)
    finally:
        CURRENT_TASK.reset(token)
        store.close()
