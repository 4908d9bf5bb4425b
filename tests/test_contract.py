"""The agent contract (issue 15), broker-free: the eleven cases a new user met, each now a
right result or an error at start that says what to do; fan-out, merge, branch; state from any
code of its task; lifecycle of a body. The same app against the broker, under kill -9, is in
tests/test_contract_broker.py."""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import streamkit as sk
from streamkit.testing import AsyncTestDriver, DriverFailed

T0 = 1_704_067_200


def fresh_contract_app(uid: str) -> Any:
    os.environ["SKTEST_ID"] = uid
    sys.modules.pop("tests.contractapp", None)
    return importlib.import_module("tests.contractapp")


# -- 1. no user code at import -------------------------------------------------------------


def test_importing_an_app_runs_no_agent_code(uid: str) -> None:
    mod = fresh_contract_app(uid)
    assert mod.STARTS == []
    mod.app.topology()  # building the graph runs none either
    assert mod.STARTS == []
    assert [st.name for st in mod.app.stages] == [
        f"contract-clicks-{uid}",
        "by-user",
    ]


async def test_code_before_the_loop_runs_once_per_task_and_again_after_an_agent_error() -> None:
    app = sk.App("life")
    src = app.topic("life-in", partitions=2)
    out = app.topic("life-out", partitions=1)
    starts: list[int] = []

    @app.agent(src, sink=out)
    async def body(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        starts.append(1)
        async for v in stream:
            if v.get("boom"):
                raise ValueError("boom")
            yield v

    assert starts == []
    async with AsyncTestDriver(app) as driver:
        assert len(starts) == 2  # one task per partition
        await driver.send(src, {"boom": True}, partition=0)
        assert len(starts) == 3  # the failed task's body was made anew
        await driver.send(src, {"ok": 1}, partition=0)
        assert driver.read_values(out) == [{"ok": 1}]
        assert len(driver.records(app.dlq)) == 1


async def test_a_body_that_awaits_holds_its_task_and_keeps_the_order() -> None:
    """A real await in a body (I/O, a sleep) passes through to the event loop; the task's
    next event waits for it, so outputs keep the input order."""
    app = sk.App("awaits")
    src = app.topic("awaits-in", partitions=1)
    out = app.topic("awaits-out", partitions=1)
    side = app.topic("awaits-side", partitions=1)

    async def lookup(n: int) -> int:
        await asyncio.sleep(0.002 * (5 - n % 5))  # later events answer sooner
        return n * 10

    @app.agent(src, sink=out)
    async def enrich(stream: sk.Stream[int]) -> AsyncIterator[int]:
        async for n in stream:
            yield await lookup(n)

    @app.agent(src)
    async def also(stream: sk.Stream[int]) -> None:
        async for n in stream:
            await asyncio.sleep(0)
            await side.send(n)

    async with AsyncTestDriver(app) as driver:
        await driver.send_many(src, list(range(10)))
        assert driver.read_values(out) == [n * 10 for n in range(10)]
        assert driver.read_values(side) == list(range(10))


# -- 2. state from any code of its task ----------------------------------------------------


async def test_fan_out_merge_branch_helper_and_timer_callback(uid: str) -> None:
    mod = fresh_contract_app(uid)
    async with AsyncTestDriver(mod.app) as driver:
        for i in range(3):
            await driver.send(
                mod.clicks, {"user": "u1", "id": f"c{i}", "amount": 50 * i, "ts": T0 + i}
            )
            await driver.send(mod.orders, {"user": "u1", "id": f"o{i}", "amount": 1, "ts": T0 + i})
        assert [v["n"] for v in driver.read_values(mod.counted)] == [1, 2, 3, 4, 5, 6]
        assert sorted(v["id"] for v in driver.read_values(mod.echoed)) == ["c0", "c1", "c2"]
        assert [v["id"] for v in driver.read_values(mod.big)] == ["c2"]
        assert sorted(v["id"] for v in driver.read_values(mod.small)) == ["c0", "c1"]
        assert driver.table("hist")["u1"] == ["c0", "o0", "c1", "o1", "c2", "o2"]
        # the merged watermark is the minimum of both topics': clicks alone do not fire
        late = {"user": "u2", "amount": 1, "ts": T0 + 500}
        for p in (0, 1):
            await driver.send(mod.clicks, {**late, "id": f"c9{p}"}, partition=p)
        assert driver.read_values(mod.fired) == []
        for p in (0, 1):
            await driver.send(mod.orders, {**late, "id": f"o9{p}"}, partition=p)
        fired = driver.read_values(mod.fired)
        # one timer per key and time: each order replaced its click's (same user, same ts)
        assert sorted(f["id"] for f in fired) == ["o0", "o1", "o2"]
        assert all(f["seen"] and f["kept"] for f in fired)
        # every branch of a partition has processed what is committed
        await driver.checkpoint()
        assert sum(driver.committed(mod.clicks).values()) == 5
        assert sum(driver.committed(mod.orders).values()) == 5


async def test_in_place_mutation_and_a_list_default_survive_a_restore() -> None:
    app = sk.App("hist")
    src = app.topic("hist-in", partitions=1, key_type=str)
    hist = app.table("hist", default=list)
    tags = app.table("tags")

    @app.agent(src, state=[hist, tags])
    async def keep(stream: sk.Stream[dict[str, Any]]) -> None:
        async for v in stream:
            hist[v["u"]].append(v["x"])  # case 7: the default is stored, then mutated
            if v["u"] not in tags:
                tags[v["u"]] = {"first": v["x"], "all": []}
            tags[v["u"]]["all"].append(v["x"])  # case 3: a stored value changed in place

    async with AsyncTestDriver(app) as driver:
        for x in (1, 2, 3):
            await driver.send(src, {"u": "a", "x": x}, key="a")
        await driver.restart(lose_state=True)  # from the changelog alone
        assert driver.table("hist")["a"] == [1, 2, 3]
        assert driver.table("tags")["a"] == {"first": 1, "all": [1, 2, 3]}


async def test_a_table_used_by_a_stage_that_does_not_declare_it_fails_naming_both() -> None:
    app = sk.App("undeclared")
    src = app.topic("und-in", partitions=1)
    spent = app.table("spent", default=float)

    @app.agent(src)
    async def add(stream: sk.Stream[dict[str, Any]]) -> None:
        async for v in stream:
            spent[v["u"]] += 1

    async with AsyncTestDriver(app) as driver:
        with pytest.raises(sk.TableNotBound, match=r"table spent .*stage und-in.*state=\["):
            await driver.send(src, {"u": "a"})
        with pytest.raises(DriverFailed):
            await driver.send(src, {"u": "b"})


def test_names_in_the_code_bind_nothing() -> None:
    """Case 2c: `text.count(" ")` next to a global table named `count` is just str.count."""
    app = sk.App("names")
    lines = app.topic("names-in", partitions=1)
    words = app.topic("names-out", partitions=1)
    catalog = app.topic("names-catalog", partitions=1, config={"cleanup.policy": "compact"})
    app.global_table("count", source=catalog)

    @app.agent(lines, sink=words)
    async def count_words(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[int]:
        async for line in stream:
            yield line["text"].count(" ") + 1

    assert [st.tables for st in app.stages] == [[]]


async def test_a_write_under_a_key_of_another_partition_fails_naming_the_key_by() -> None:
    """Case 10: a window keyed by page on a stream partitioned by user."""
    app = sk.App("keys")
    views = app.topic("keys-views", partitions=4, timestamp="ts")
    per_page = app.window("per-page", sk.tumbling(60), sk.count())
    by_user = app.stream(views).key_by("user", name="by-user")

    @app.agent(by_user, state=[per_page])
    async def count_pages(stream: sk.Stream[dict[str, Any]]) -> None:
        async for v in stream:
            per_page.add(v["page"])

    async with AsyncTestDriver(app) as driver:
        failed = None
        for i in range(20):  # some page hashes elsewhere than its user
            try:
                await driver.send(views, {"user": f"u{i}", "page": f"p{i * 7}", "ts": T0})
            except sk.KeyNotInPartition as exc:
                failed = str(exc)
                break
        assert failed is not None
        assert "per-page: key 'p" in failed and "key_by(<this key>)" in failed


async def test_the_kit_follows_source_and_global_tables_as_a_worker_does() -> None:
    """Case 11."""
    app = sk.App("follow")
    catalog = app.topic("follow-catalog", partitions=2, key_type=str)
    orders = app.topic("follow-orders", partitions=2, key_type=str)
    out = app.topic("follow-out", partitions=1)
    products = app.table("products", source=catalog)
    everywhere = app.global_table("everywhere", source=catalog)

    @app.agent(orders, sink=out, state=[products])
    async def join(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for o in stream:
            yield {"local": products.get(o["p"]), "global": everywhere.get(o["p"])}

    async with AsyncTestDriver(app) as driver:
        await driver.send(catalog, {"name": "cup"}, key="p1")
        await driver.send(orders, {"p": "p1"}, key="p1")
        assert driver.read_values(out) == [{"local": {"name": "cup"}, "global": {"name": "cup"}}]


# -- 3. declarations are checked -----------------------------------------------------------


def test_declarations_that_cannot_be_right_are_refused_at_declaration() -> None:
    app = sk.App("refused")
    src = app.topic("refused-in", partitions=1)
    timers = app.timer_set("t")

    with pytest.raises(sk.ConfigError, match="must be a plain def"):

        @timers.on_fire  # type: ignore[arg-type]
        async def fire(key: Any, payload: Any) -> None:  # case 8
            pass

    with pytest.raises(sk.ConfigError, match="yields values but has no sink"):

        @app.agent(src)
        async def no_sink(stream: sk.Stream[Any]) -> AsyncIterator[Any]:  # case 9
            async for v in stream:
                yield v

    with pytest.raises(sk.ConfigError, match=r"reads a topic .* not 'refused-in'"):
        app.agent("refused-in")  # type: ignore[arg-type]

    with pytest.raises(sk.ConfigError, match="not a table, window table or timer set"):
        app.agent(src, state=["spent"])


def test_two_agents_on_one_topic_and_an_agent_on_a_list_of_topics() -> None:
    """Case 5: both were refused (or crashed) before."""
    app = sk.App("many")
    a = app.topic("many-a", partitions=2)
    b = app.topic("many-b", partitions=2)

    @app.agent(a)
    async def one(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            pass

    @app.agent(a)
    async def two(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            pass

    @app.agent([a, b])
    async def both(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            pass

    (stage,) = app.stages
    assert [t.name for t in stage.topics] == ["many-a", "many-b"]
    assert [ag.name for ag in stage.agents] == ["one", "two", "both"]


def test_one_table_on_two_differently_keyed_stages_is_refused() -> None:
    app = sk.App("twice")
    src = app.topic("twice-in", partitions=2)
    spent = app.table("spent", default=float)

    @app.agent(app.stream(src).key_by("user", name="by-user"), state=[spent])
    async def a(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            pass

    @app.agent(app.stream(src).key_by("shop", name="by-shop"), state=[spent])
    async def b(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            pass

    with pytest.raises(
        sk.ConfigError, match="table spent is declared by stages by-user and by-shop"
    ):
        _ = app.stages


async def test_a_keyed_merge_of_streams_that_are_not_co_partitioned_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the driver's folder goes
    app = sk.App("copart")
    a = app.topic("copart-a", partitions=2)
    b = app.topic("copart-b", partitions=3)
    spent = app.table("spent", default=float)

    @app.agent([a, b], state=[spent])
    async def both(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            pass

    with pytest.raises(sk.ConfigError, match=r"not co-partitioned: copart-a \(2\), copart-b \(3\)"):
        async with AsyncTestDriver(app):
            pass
    assert not os.listdir(tmp_path)  # the failed start removed its state folder


async def test_a_merge_of_key_by_streams_with_other_partition_counts_fails_at_start() -> None:
    app = sk.App("keyedmerge")
    a = app.topic("km-a", partitions=2)
    b = app.topic("km-b", partitions=2)
    left = app.stream(a).key_by("user", partitions=4, name="a-by-user")
    right = app.stream(b).key_by("user", partitions=3, name="b-by-user")

    @app.agent(left.merge(right))
    async def both(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            pass

    with pytest.raises(sk.ConfigError, match=r"merges keyed streams that are not co-partition"):
        async with AsyncTestDriver(app):
            pass


def test_state_after_a_rebalance_is_refused() -> None:
    app = sk.App("spread")
    src = app.topic("spread-in", partitions=2)
    spent = app.table("spent", default=float)

    @app.agent(app.stream(src).rebalance(), state=[spent])
    async def a(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            pass

    with pytest.raises(sk.ConfigError, match=r"spread by shuffle/rebalance.*key_by before it"):
        _ = app.stages


async def test_operators_inside_a_body_say_where_to_declare_them() -> None:
    app = sk.App("inside")
    src = app.topic("inside-in", partitions=1)

    @app.agent(src)
    async def old_style(stream: sk.Stream[dict[str, Any]]) -> None:
        async for _ in stream.key_by("user"):
            pass

    with pytest.raises(sk.ConfigError, match=r"declared before the agent.*app.stream\(topic\)"):
        async with AsyncTestDriver(app):
            pass
