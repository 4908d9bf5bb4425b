"""Versioned tables and joins with tables in the testing kit (the runtime's real tasks, no
broker): as-of joins with out-of-order events and deletes, the retention's refusals and purge
(tombstones of purged versions in the changelog), stream-table joins with a table read from a
topic, table-table joins (inner, left, outer) with tombstones, what `topology` shows, bad
declarations, and a task's hold on a virtual clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

import streamkit as sk
from streamkit.context import WALL_CLOCK
from streamkit.runtime.table_sync import TableSync
from streamkit.state.table import FollowStatus
from streamkit.testing import TestDriver
from streamkit.testing.memory import VirtualClock
from streamkit.versions import split_row_key


def priced_app() -> tuple[sk.App, Any]:
    app = sk.App("vt-kit")
    prices = app.topic("prices", partitions=2)
    trades = app.topic("trades", partitions=2)
    out = app.topic("priced", partitions=2)
    table = app.table("prices", source=prices, versioned=sk.Versioned(retention=3600))
    app.stream(trades).join_table(
        table, how="left", joiner=lambda t, p: {"trade": t["id"], "price": p}
    ).to(out)
    return app, table


def test_as_of_join_gives_the_value_that_held_at_each_event_time() -> None:
    app, _ = priced_app()
    text = app.topology()
    assert "join_table(prices)" in text
    assert "versioned table prices <- prices (versions at record times), history 3600s" in text
    with TestDriver(app) as driver:
        driver.send("prices", 10, key="X", timestamp=100)
        driver.send("prices", 20, key="X", timestamp=200)
        driver.send("prices", None, key="X", timestamp=300)  # a delete
        driver.send("prices", 30, key="X", timestamp=400)
        driver.send("prices", 15, key="X", timestamp=150)  # out of order: history changes
        sent = [(1, 50), (2, 100), (3, 160), (4, 250), (5, 120), (6, 300), (7, 999), (8, 149)]
        for trade, ts in sent:
            driver.send("trades", {"id": trade}, key="X", timestamp=ts)
        got = {v["trade"]: v["price"] for v in driver.read_values("priced")}
        view = driver.versioned("prices")
        assert view.as_of("X", 250_000) == 20 and view.get("X") == 30
        assert view.history("X") == [
            (100_000, 10),
            (150_000, 15),
            (200_000, 20),
            (300_000, None),
            (400_000, 30),
        ]
    assert got == {1: None, 2: 10, 3: 15, 4: 20, 5: 10, 6: None, 7: 30, 8: 10}


def test_inner_join_drops_what_the_table_lacks_and_a_bad_joiner_dead_letters() -> None:
    app = sk.App("vt-kit-inner")
    prices = app.topic("prices", partitions=1)
    trades = app.topic("trades", partitions=1)
    out = app.topic("priced", partitions=1)
    table = app.table("prices", source=prices, versioned=sk.Versioned(retention=3600))
    app.stream(trades).join_table(table, joiner=lambda t, p: t["id"] / p).to(out)
    with TestDriver(app) as driver:
        driver.send("prices", 2, key="X", timestamp=100)
        driver.send("prices", 0, key="Y", timestamp=100)
        driver.send("trades", {"id": 8}, key="X", timestamp=99)  # before any price: dropped
        driver.send("trades", {"id": 8}, key="X", timestamp=101)
        driver.send("trades", {"id": 8}, key="Z", timestamp=101)  # no such key: dropped
        driver.send("trades", {"id": 8}, key="Y", timestamp=101)  # joiner raises
        assert driver.read_values("priced") == [4.0]
        dead = driver.read(app.dlq)
    assert len(dead) == 1 and dead[0].header("streamkit.error.type") == b"ZeroDivisionError"


def test_retention_refuses_old_puts_and_purges_with_tombstones() -> None:
    app = sk.App("vt-kit-ret")
    updates = app.topic("updates", partitions=1)
    out = app.topic("seen", partitions=1)
    hist = app.table("hist", versioned=sk.Versioned(retention=10))

    @app.agent(updates, sink=out, state=[hist])
    async def keep(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for u in stream:
            key = stream.event.key
            ok = hist.put(key, u["v"]) if "v" in u else None
            yield {
                "ok": ok,
                "latest": hist.get(key),
                "then": hist.as_of(key, u["ask"] * 1000),
                "history": [t // 1000 for t, _ in hist.history(key)],
            }

    with TestDriver(app) as driver:
        for v, ask, ts in [("a", 0, 0), ("b", 5, 5), ("c", 12, 20), ("late", 9, 5), ("d", 29, 30)]:
            # observed 20 s, cutoff 10 s: the put at 5 s is older than the retention keeps
            driver.send("updates", {"v": v, "ask": ask}, key="k", timestamp=ts)
            driver.checkpoint()
        driver.restart(lose_state=True)  # rebuilt from the changelog alone
        driver.send("updates", {"ask": 25}, key="k", timestamp=31)
        seen = driver.read_values("seen")
        changelog = driver.read("vt-kit-ret-hist-changelog")
    assert [s["ok"] for s in seen] == [True, True, True, False, True, None]
    assert [s["latest"] for s in seen] == ["a", "b", "c", "c", "d", "d"]
    # as_of 12 s after the put at 20 s: "b" held (5 s to 20 s); 9 s is before the cutoff
    assert [s["then"] for s in seen] == ["a", "b", "b", None, "c", "c"]
    assert [s["history"] for s in seen] == [[0], [0, 5], [5, 20], [5, 20], [20, 30], [20, 30]]
    purged = sorted(
        split_row_key(r.raw_key)[1] // 1000
        for r in changelog
        if r.raw_value is None and r.raw_key is not None and len(r.raw_key) > 8
    )
    assert purged == [0, 5]  # each purged version got a tombstone of its row


def test_a_source_table_join_and_topology_shows_the_joins() -> None:
    app = sk.App("tt-kit")
    orders = app.topic("orders", partitions=2)
    payments = app.topic("payments", partitions=2)
    customers = app.topic("customers", partitions=2)
    out = app.topic("paid", partitions=2)
    both = app.topic("order-customer", partitions=2)
    order_table = app.table("orders", source=orders)
    app.stream(payments).join_table(order_table).to(out)
    app.join_tables(orders, customers, how="outer", name="oc").to(both)
    text = app.topology()
    assert "join_table(orders)" in text and "join_tables(oc-left, oc-right)" in text
    assert "table orders <- orders (read-only)" in text
    with TestDriver(app) as driver:
        driver.send("orders", {"amount": 5}, key="o1")
        driver.send("payments", {"paid": 5}, key="o1")
        driver.send("payments", {"paid": 1}, key="o2")  # no such order: inner drops it
        assert driver.read_values("paid") == [[{"paid": 5}, {"amount": 5}]]


@pytest.mark.parametrize(
    ("how", "want"),
    [
        ("inner", [["o", "c"], None, ["o2", "c"], None]),
        ("left", [["o", None], ["o", "c"], ["o", None], ["o2", None], ["o2", "c"], None]),
        (
            "outer",
            [["o", None], ["o", "c"], ["o", None], ["o2", None], ["o2", "c"], [None, "c"], None],
        ),
    ],
)
def test_table_table_join_emits_on_either_side_and_tombstones(how: str, want: list[Any]) -> None:
    app = sk.App(f"tt-kit-{how}")
    left = app.topic("left", partitions=1)
    right = app.topic("right", partitions=1)
    out = app.topic("joined", partitions=1)
    app.join_tables(left, right, how=how, joiner=lambda a, b: [a, b]).to(out)
    with TestDriver(app) as driver:
        driver.send("left", "o", key="k")  # left only
        driver.send("right", "c", key="k")  # both
        driver.send("right", None, key="k")  # right deleted
        driver.send("left", "o2", key="k")  # left changed
        driver.send("right", "c", key="k")  # both again
        driver.send("left", None, key="k")  # left deleted
        driver.send("right", None, key="k")  # right deleted: nothing left
        driver.send("right", None, key="other")  # a delete of nothing: no output
        got = [r.raw_value for r in driver.read("joined")]
    decoded = [None if v is None else orjson.loads(v) for v in got]
    assert decoded == want


def test_bad_joins_are_refused_at_declaration() -> None:
    app = sk.App("tj-bad")
    src = app.topic("src", partitions=1)
    other = app.topic("other", partitions=1)
    table = app.table("t")
    window = app.window("w", sk.tumbling(60), sk.count())
    with pytest.raises(sk.ConfigError, match="how='outer' is not one of inner, left"):
        app.stream(src).join_table(table, how="outer")
    with pytest.raises(sk.ConfigError, match="a window table or timer set cannot be joined"):
        app.stream(src).join_table(window)
    with pytest.raises(sk.ConfigError, match="the two sides are one topic"):
        app.join_tables(src, src)
    with pytest.raises(sk.ConfigError, match="how='right' is not one of"):
        app.join_tables(src, other, how="right")
    with pytest.raises(sk.ConfigError, match="a versioned table has no default="):
        app.table("v", versioned=sk.Versioned(retention=1), default=int)  # type: ignore[call-overload]


def test_a_versioned_table_fed_from_a_topic_must_be_co_partitioned() -> None:
    app = sk.App("tj-copart")
    prices = app.topic("prices", partitions=2)
    trades = app.topic("trades", partitions=1)
    table = app.table("prices", source=prices, versioned=sk.Versioned(retention=60))
    app.stream(trades).join_table(table).to(app.topic("out", partitions=1))
    with (
        pytest.raises(sk.ConfigError, match=r"table prices reads prices \(2 partitions\)"),
        TestDriver(app),
    ):
        pass


def test_table_sync_holds_until_caught_up_or_the_bound_and_says_when_it_gave_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = VirtualClock(0.0)
    token = WALL_CLOCK.set(clock)
    try:
        status = FollowStatus()
        status.poke = asyncio.Event()
        sync = TableSync([status], max_wait=2.0)
        rec = SimpleNamespace(topic="pay", partition=0, offset=5, timestamp=1000)
        sync.arrived("pay", 9)  # a batch up to offset 9 arrives at 0 s
        assert sync.hold(rec) == 2.0 and status.poke.is_set()
        clock.advance(0.5)
        status.caught_up_at = 0.1  # a fetch that started after the record arrived
        assert sync.hold(rec) == 0 and sync.timeouts == 0
        sync.arrived("pay", 20)  # the next batch at 0.5 s: that fetch is too old for it
        later = SimpleNamespace(topic="pay", partition=0, offset=12, timestamp=1000)
        assert sync.hold(later) == 2.0
        status.table_time = 1000  # the table was read up to the record's time
        assert sync.hold(later) == 0
        status.table_time = 999
        clock.advance(2.0)  # nothing more from the table: the bound passed
        with caplog.at_level(logging.WARNING):
            assert sync.hold(later) == 0
        assert sync.timeouts == 1 and "did not catch up within table_sync_max_wait" in caplog.text
    finally:
        WALL_CLOCK.reset(token)


def test_as_of_uses_the_event_time_of_the_stream_a_value_field_here() -> None:
    app = sk.App("vt-kit-field")
    prices = app.topic("prices", partitions=1)
    trades = app.topic("trades", partitions=1, timestamp="at")  # seconds, in the value
    out = app.topic("priced", partitions=1)
    table = app.table("prices", source=prices, versioned=sk.Versioned(retention=3600))
    app.stream(trades).join_table(table, how="left", joiner=lambda t, p: [t["id"], p]).to(out)
    with TestDriver(app) as driver:
        driver.send("prices", 1, key="X", timestamp=100)
        driver.send("prices", 2, key="X", timestamp=200)
        # record timestamps all after both prices; the event times in the value decide
        driver.send("trades", {"id": "a", "at": 150}, key="X", timestamp=999)
        driver.send("trades", {"id": "b", "at": 250}, key="X", timestamp=999)
        driver.send("trades", {"id": "c", "at": 50}, key="X", timestamp=999)
        assert driver.read_values("priced") == [["a", 1], ["b", 2], ["c", None]]
