"""Stream-stream joins in the testing kit (the real tasks, in-memory topics, virtual time):
each join kind over the same inputs, results after the join as events of their own (agents,
key_by), late records on either side, a join over key_by (`on=`), a restart from the store and
from the changelog, and the co-partitioning check at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import streamkit as sk
from streamkit.runtime.dlq import describe
from streamkit.testing import AsyncTestDriver


def shop(how: str, tmp_path: Path, **join: Any) -> tuple[sk.App, sk.Topic, sk.Topic, sk.Topic]:
    app = sk.App(f"joins-{how}", workdir=tmp_path)
    orders = app.topic("orders", partitions=1, timestamp="ts")
    payments = app.topic("payments", partitions=1, timestamp="ts")
    out = app.topic("paid", partitions=1)
    joined = app.stream(orders).join(
        app.stream(payments), within=600, grace=60, how=how, name="paid", **join
    )
    joined.to(out)
    return app, orders, payments, out


# (topic, key, event time s): A pairs; B (left) and C (right) have no partner; at 5000 the
# watermark (5000) has passed B's last chance (2000 + 600 + 60) and C's (2100 + 600 + 60);
# F at 4000 is later than the grace (watermark 5000 > 4000 + 60): late
EVENTS = [
    ("orders", "A", 1000),
    ("payments", "A", 1300),
    ("orders", "B", 2000),
    ("payments", "C", 2100),
    ("orders", "D", 5000),
    ("payments", "E", 5000),
    ("orders", "F", 4000),
]
EXPECTED: dict[str, list[tuple[str, Any, Any, int]]] = {
    "inner": [("A", ["A", 1000], ["A", 1300], 1_300_000)],
    "left": [("A", ["A", 1000], ["A", 1300], 1_300_000), ("B", ["B", 2000], None, 2_000_000)],
    "outer": [
        ("A", ["A", 1000], ["A", 1300], 1_300_000),
        ("B", ["B", 2000], None, 2_000_000),
        ("C", None, ["C", 2100], 2_100_000),
    ],
}


@pytest.mark.parametrize("how", ["inner", "left", "outer"])
async def test_each_join_kind_emits_its_pairs_and_unmatched_records_once_final(
    how: str, tmp_path: Path
) -> None:
    app, _, _, out = shop(how, tmp_path)
    async with AsyncTestDriver(app) as driver:
        for topic, key, ts in EVENTS:
            await driver.send(topic, {"id": key, "ts": ts}, key=key)
        got = [
            (
                r.key,
                r.value[0] and [r.value[0]["id"], r.value[0]["ts"]],
                r.value[1] and [r.value[1]["id"], r.value[1]["ts"]],
                r.timestamp_ms,
            )
            for r in driver.read(out)
        ]
        assert sorted(got, key=lambda g: g[3]) == EXPECTED[how]
        late = driver.read(f"joins-{how}-paid-late")
        assert [describe(r.headers)["streamkit.source.offset"] for r in late] == ["3"]
        assert (
            "late for join paid: a left record at event time 4000000"
            in (describe(late[0].headers)["streamkit.error"])
        )
        # D and E (5000) are still buffered: neither is final before the watermark passes
        # 5660; then the left/outer join emits them, unmatched
        await driver.advance_watermark(5660)
        assert driver.read(out) == []
        await driver.advance_watermark(5661)
        rest = sorted(r.key for r in driver.read(out))
        assert rest == {"inner": [], "left": ["D"], "outer": ["D", "E"]}[how]


async def test_results_after_a_join_are_events_of_their_own_for_agents_and_key_by(
    tmp_path: Path,
) -> None:
    app = sk.App("joins-after", workdir=tmp_path)
    views = app.topic("views", partitions=2, timestamp="ts")
    buys = app.topic("buys", partitions=2, timestamp="ts")
    per_product = app.topic("per-product", partitions=3)
    seen = app.topic("seen", partitions=2)
    conversions = app.stream(views).join(
        app.stream(buys),
        within=1800,
        how="left",
        joiner=lambda v, b: {"product": v["product"], "bought": b is not None, "ts": v["ts"]},
        name="conversion",
    )
    conversions.key_by("product", name="by-product").to(per_product)

    @app.agent(conversions, sink=seen)
    async def note(stream: sk.Stream[Any]) -> AsyncIterator[Any]:
        async for value in stream:
            event = stream.event
            yield {"key": event.key, "topic": event.topic, "at": event.timestamp_ms, **value}

    async with AsyncTestDriver(app) as driver:
        await driver.send(views, {"product": "p1", "ts": 100}, key="u1")
        await driver.send(buys, {"product": "p1", "ts": 200}, key="u1")
        await driver.send(views, {"product": "p2", "ts": 300}, key="u2")
        await driver.advance_watermark(10_000)
        agent_saw = sorted(
            (r.value["key"], r.value["topic"], r.value["at"], r.value["bought"])
            for r in driver.read(seen)
        )
        assert agent_saw == [
            ("u1", "conversion", 200_000, True),
            ("u2", "conversion", 300_000, False),
        ]
        keyed = sorted((r.key, r.value["bought"], r.timestamp_ms) for r in driver.read(per_product))
        assert keyed == [("p1", True, 200_000), ("p2", False, 300_000)]


async def test_a_join_on_fields_repartitions_both_sides_and_survives_restarts(
    tmp_path: Path,
) -> None:
    app = sk.App("joins-on", workdir=tmp_path)
    clicks = app.topic("clicks", partitions=3, timestamp="ts")
    buys = app.topic("purchases", partitions=2, timestamp="ts")
    out = app.topic("click-buys", partitions=2)
    app.stream(clicks).join(
        app.stream(buys), between=(0, 600), on="user", partitions=2, name="cb"
    ).to(out)
    assert "join cb" in app.topology()
    async with AsyncTestDriver(app) as driver:
        for user in ("u1", "u2", "u3"):
            await driver.send(clicks, {"user": user, "ts": 1000})
        await driver.checkpoint()
        await driver.restart()  # from the SQLite files
        await driver.send(buys, {"user": "u1", "ts": 1600})  # the upper end: included
        await driver.send(buys, {"user": "u2", "ts": 999})  # before the click: no match
        await driver.restart(lose_state=True)  # from the changelogs alone
        await driver.send(buys, {"user": "u3", "ts": 1000})  # the lower end: included
        got = sorted((r.key, r.value[1]["ts"]) for r in driver.read(out))
        assert got == [("u1", 1600), ("u3", 1000)]


async def test_a_join_of_inputs_that_are_not_co_partitioned_fails_at_start(
    tmp_path: Path,
) -> None:
    app = sk.App("joins-parts", workdir=tmp_path)
    a = app.topic("a", partitions=2)
    b = app.topic("b", partitions=3)
    app.stream(a).join(app.stream(b), within=1, name="ab").to(app.topic("ab-out"))
    with pytest.raises(sk.ConfigError, match=r"join ab reads inputs that are not co-partitioned"):
        async with AsyncTestDriver(app):
            pass


def test_a_join_declared_wrong_says_what_to_change() -> None:
    app = sk.App("joins-bad")
    a, b = app.stream(app.topic("a")), app.stream(app.topic("b"))
    with pytest.raises(sk.ConfigError, match=r"within=seconds .* or between"):
        a.join(b)
    with pytest.raises(sk.ConfigError, match="lower must be <= upper"):
        a.join(b, between=(5, -5))
    with pytest.raises(sk.ConfigError, match="how must be one of inner, left, outer"):
        a.join(b, within=5, how="right")
    with pytest.raises(sk.ConfigError, match="changelog_extra must be a non-negative"):
        a.join(b, within=5, changelog_extra=-1)
    a.join(b, within=5, name="j")
    with pytest.raises(sk.ConfigError, match="join j: a join or table of that name exists"):
        a.join(b, within=5, name="j")
    # no tombstones: the changelog's time retention is the window + grace + changelog_extra
    a.join(b, between=(0, 10), grace=2, changelog_extra=3600, name="k")
    assert app.joins["k"].table.changelog.config == {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(10_000 + 2_000 + 3_600_000),
    }


def test_the_topology_shows_a_join_its_sides_bounds_state_and_late_topic(tmp_path: Path) -> None:
    app, _, _, _ = shop("left", tmp_path)
    text = app.topology()
    assert "stage orders  x1 tasks  <- orders (1 partition), payments (1 partition)" in text
    assert "    left side of join paid\n      join paid\n        to paid (1 partition)" in text
    assert "    right side of join paid\n      join paid (join: continued above)" in text
    assert (
        "  join paid: left join between -600s and +600s, grace 60s; both sides buffered <-> "
        "joins-left-paid-changelog; late -> joins-left-paid-late"
    ) in text
    graph = orjson.loads(app.topology("json"))
    labels = {n["id"]: n["label"] for n in graph["nodes"]}
    assert {"id": "table:paid", "kind": "join", "label": "paid", "stage": "orders"} in (
        graph["nodes"]
    )
    into_join = sorted(
        labels[e["from"]] for e in graph["edges"] if labels.get(e["to"]) == "join paid"
    )
    assert into_join == ["left side of join paid", "right side of join paid"]
    mermaid = app.topology("mermaid")
    assert 'table_paid[("join paid")]' in mermaid


async def test_a_record_without_a_key_and_a_joiner_that_raises_are_dead_letters(
    tmp_path: Path,
) -> None:
    app = sk.App("joins-bad-input", workdir=tmp_path)
    a = app.topic("a", partitions=1, timestamp="ts")
    b = app.topic("b", partitions=1, timestamp="ts")
    out = app.topic("ab", partitions=1)

    def joiner(left: Any, right: Any) -> Any:
        if right["n"] == 0:
            raise ZeroDivisionError("n is 0")
        return left["n"] / right["n"]

    app.stream(a).join(app.stream(b), within=10, joiner=joiner, name="ab").to(out)
    async with AsyncTestDriver(app) as driver:
        await driver.send(a, {"n": 1, "ts": 100})  # no key
        await driver.send(a, {"n": 6, "ts": 100}, key="k")
        await driver.send(b, {"n": 0, "ts": 101}, key="k")
        await driver.send(b, {"n": 3, "ts": 102}, key="k")
        assert driver.read_values(out) == [2.0]
        dead = [describe(r.headers) for r in driver.read("joins-bad-input-dlq")]
        assert [(d["streamkit.source.topic"], d["streamkit.error.type"]) for d in dead] == [
            ("a", "ValueError"),
            ("ab", "ZeroDivisionError"),
        ]
        assert "a record without a key joins nothing: key_by" in dead[0]["streamkit.error"]
        assert dead[1]["streamkit.source.offset"] == "0"  # b's record that made the pair


async def test_a_side_that_goes_idle_does_not_hold_back_the_other_sides_results(
    tmp_path: Path,
) -> None:
    app = sk.App("joins-idle", workdir=tmp_path, idle_timeout=5.0)
    views = app.topic("views", partitions=2, timestamp="ts")
    buys = app.topic("buys", partitions=2, timestamp="ts")
    out = app.topic("converted", partitions=2)
    app.stream(views).join(
        app.stream(buys), between=(0, 1800), how="left", on="user", name="conv"
    ).to(out)
    async with AsyncTestDriver(app) as driver:
        await driver.send(views, {"user": "a", "ts": 100})
        await driver.send(buys, {"user": "a", "ts": 160})
        await driver.send(views, {"user": "b", "ts": 200})
        assert [r.key for r in driver.read(out)] == ["a"]
        await driver.advance_time(10)  # no purchase for longer than idle_timeout
        for partition in (0, 1):  # views move on, on both partitions
            await driver.send(views, {"user": "c", "ts": 5000}, partition=partition)
        got = [(r.key, r.value[1]) for r in driver.read(out)]
        assert got == [("b", None)]  # the buys side, idle, no longer holds the watermark


async def test_the_last_idle_flag_of_a_side_frees_the_other_sides_results_at_once(
    tmp_path: Path,
) -> None:
    app = sk.App("joins-idle-flag", workdir=tmp_path, idle_timeout=5.0)
    views = app.topic("views", partitions=1, timestamp="ts")
    buys = app.topic("buys", partitions=1, timestamp="ts")
    out = app.topic("converted", partitions=1)
    app.stream(views).join(
        app.stream(buys), between=(0, 1800), how="left", on="user", name="conv"
    ).to(out)
    async with AsyncTestDriver(app) as driver:
        await driver.send(buys, {"user": "a", "ts": 100})
        await driver.send(views, {"user": "b", "ts": 200})
        await driver.advance_time(3)
        await driver.send(views, {"user": "c", "ts": 5000})  # the last view for now
        assert driver.read(out) == []  # the buys side (at 100) holds the watermark
        await driver.advance_time(3)  # buys quiet for 6 s (idle), views for 3 s (not)
        got = [(r.key, r.value[1]) for r in driver.read(out)]
        assert got == [("b", None)]  # freed by the buys side's idle flag, no view needed
