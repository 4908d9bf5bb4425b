"""Tables read from topics, against the broker: a co-partitioned table (`app.table(source=)`)
and a global table (`app.global_table`), joined with a stream, with known answers: every
order carries the catalog's value of its product, updates and deletes of the catalog reach
running workers, a restarted worker resumes from its stored offsets, and a table that is not
co-partitioned with its stage is refused at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import streamkit as sk
from streamkit.state.global_table import GlobalTableNotReady
from tests.kafkahelp import produce, read_all, running, wait_until

N_PRODUCTS = 40


def make_app(uid: str, workdir: Path, by_product_partitions: int = 4) -> dict[str, Any]:
    app = sk.App(f"tsrc-{uid}", workdir=str(workdir), commit_interval=0.2)
    catalog = app.topic(f"tsrc-{uid}-catalog", partitions=4, config={"cleanup.policy": "compact"})
    orders = app.topic(f"tsrc-{uid}-orders", partitions=2)
    joined = app.topic(f"tsrc-{uid}-joined", partitions=2)
    spread = app.topic(f"tsrc-{uid}-spread", partitions=2)
    spread_out = app.topic(f"tsrc-{uid}-spread-out", partitions=3)
    local = app.table("products", source=catalog)
    everywhere = app.global_table("products-all", source=catalog)

    by_product = app.stream(orders).key_by("product", partitions=by_product_partitions)

    @app.agent(by_product, sink=joined, state=[local])
    async def join(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for order in stream:
            row = local.get(order["product"])
            yield {
                "order": order["order"],
                "product": order["product"],
                "local": None if row is None else row["name"],
                "global": (everywhere.get(order["product"]) or {}).get("name"),
            }

    def lookup(order: dict[str, Any]) -> dict[str, Any]:
        row = everywhere.get(order["product"])
        return {**order, "name": None if row is None else row["name"]}

    spread_looked_up = app.stream(spread).rebalance(partitions=8).map(lookup).shuffle(partitions=3)

    @app.agent(spread_looked_up, sink=spread_out)
    async def enrich(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for order in stream:
            yield order

    return {
        "app": app,
        "catalog": catalog,
        "orders": orders,
        "joined": joined,
        "spread": spread,
        "spread_out": spread_out,
        "local": local,
        "everywhere": everywhere,
    }


def catalog_rows(version: str) -> list[tuple[bytes, bytes]]:
    return [
        (f"p{i}".encode(), orjson.dumps({"name": f"product {i} {version}"}))
        for i in range(N_PRODUCTS)
    ]


def order_rows(start: int, n: int) -> tuple[list[bytes], list[bytes]]:
    values = [orjson.dumps({"order": i, "product": f"p{i % N_PRODUCTS}"}) for i in range(start, n)]
    return values, [f"o{i}".encode() for i in range(start, n)]


async def test_stream_table_join_co_partitioned_and_global(uid: str, workdir: Path) -> None:
    t = make_app(uid, workdir)
    app = t["app"]
    from streamkit.runtime.admin import ensure_app_topics

    await ensure_app_topics(app, client_id="test")
    keys, values = zip(*catalog_rows("v1"), strict=True)
    await produce(t["catalog"].name, [*values, b"{not json"], keys=[*keys, b"p-bad"])
    async with running(app) as worker:
        everywhere = t["everywhere"]
        # loaded before the agents start: all of it, on this worker, by any key
        assert len(everywhere) == N_PRODUCTS
        assert everywhere["p7"] == {"name": "product 7 v1"}
        assert everywhere.skipped == 1 and "p-bad" not in everywhere  # skipped, not fatal
        values_, okeys = order_rows(0, 200)
        await produce(t["orders"].name, values_, keys=okeys)
        await produce(t["spread"].name, values_, keys=okeys)
        out = [orjson.loads(r.value) for r in await read_all(t["joined"].name, expect=200)]
        assert sorted(o["order"] for o in out) == list(range(200))
        for o in out:
            i = int(o["product"][1:])
            assert o["local"] == o["global"] == f"product {i} v1", o
        spread = [orjson.loads(r.value) for r in await read_all(t["spread_out"].name, expect=200)]
        assert sorted(o["order"] for o in spread) == list(range(200))
        assert all(o["name"] == f"product {int(o['product'][1:])} v1" for o in spread)

        # the catalog changes while the worker runs: p3 renamed, p5 deleted
        await produce(
            t["catalog"].name,
            [orjson.dumps({"name": "product 3 v2"}), None],
            keys=[b"p3", b"p5"],
        )
        await wait_until(
            lambda: everywhere.get("p3") == {"name": "product 3 v2"} and "p5" not in everywhere,
            within=20,
            what="the global table to follow the catalog",
        )

        async def local_follows() -> bool:
            # each new order for p3/p5 shows what the co-partitioned table holds now
            n = len(await read_all(t["joined"].name))
            await produce(
                t["orders"].name,
                [orjson.dumps({"order": 1000 + n, "product": p}) for p in ("p3", "p5")],
            )
            rows = [orjson.loads(r.value) for r in await read_all(t["joined"].name, expect=n + 2)]
            latest = {r["product"]: r for r in rows if r["order"] >= 1000}
            return (
                latest.get("p3", {}).get("local") == "product 3 v2"
                and "p5" in latest
                and latest["p5"]["local"] is None
            )

        await wait_until(local_follows, within=30, what="the co-partitioned table to follow")
        assert worker.tasks is not None
    # the SQLite copies hold the followed rows with their offsets: a restart reads the
    # stored state and only what is new
    t2 = make_app(uid, workdir)
    async with running(t2["app"]):
        everywhere2 = t2["everywhere"]
        assert everywhere2.get("p3") == {"name": "product 3 v2"}
        assert "p5" not in everywhere2
        assert len(everywhere2) == N_PRODUCTS - 1
        # the stored rows (the bad one too: it is the topic's); nothing read twice
        assert everywhere2.applied == N_PRODUCTS
        await produce(t2["orders"].name, [orjson.dumps({"order": 5000, "product": "p3"})])
        rows = [orjson.loads(r.value) for r in await read_all(t2["joined"].name)]

        async def seen() -> bool:
            rows[:] = [orjson.loads(r.value) for r in await read_all(t2["joined"].name)]
            return any(r["order"] == 5000 for r in rows)

        await wait_until(seen, within=30, what="the order after the restart")
        (last,) = [r for r in rows if r["order"] == 5000]
        assert last["local"] == last["global"] == "product 3 v2"


async def test_table_source_must_be_co_partitioned(uid: str, workdir: Path) -> None:
    t = make_app(uid, workdir, by_product_partitions=3)
    with pytest.raises(sk.ConfigError, match="co-partitioned"):
        async with running(t["app"]):
            pass


def test_table_source_is_read_only_and_global_needs_a_worker(uid: str, workdir: Path) -> None:
    t = make_app(uid, workdir)
    with pytest.raises(GlobalTableNotReady):
        t["everywhere"].get("p1")
    with pytest.raises(TypeError, match="read-only"):
        t["local"]["p1"] = {"name": "x"}
