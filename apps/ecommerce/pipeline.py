"""The e-commerce pipeline: `streamkit worker apps.ecommerce.pipeline:app`.

    clicks (2) ─forward─▶ key_by user (4) ─┬─▶ sessions: session windows ─▶ sessions
                                           └─▶ rebalance (8): join the catalog (global table)
                                               ─▶ shuffle (3) ─┬─▶ enriched (a sink topic)
                                                               └─▶ key_by product (4): the
                                               co-partitioned catalog table, top-k per
                                               hopping window ─▶ trending
    purchases (4) ─key_by user (4): running total ─▶ totals
    clicks' views ⋈ purchases, key_by (user, product) (4): a left join within 30 minutes after
    the view ─▶ conversions (one per view and purchase, or the view alone)
    catalog (4, compacted): the product table, written by the generator

One declared graph: the clicks are fetched once and fan out at the by-user stage (sessions and
enrichment) and at the shuffled stage (the enriched sink and the trending count); no topic
between stages is declared by hand. `streamkit topology apps.ecommerce.pipeline:app` draws it.
Names come from `ECOM_RUN` (a fresh set of topics per demo run) and the knobs from `ECOM_*`
variables, so that the demo driver and its worker processes agree.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

import streamkit as sk


class Click(BaseModel):
    id: str
    user_id: str
    kind: str  # view | cart | purchase
    product_id: str
    ts: float  # event time, epoch seconds
    cents: int = 0  # purchases only


class Purchase(BaseModel):
    user_id: str
    product_id: str
    amount: float
    ts: float


RUN = os.environ.get("ECOM_RUN", "local")
GAP = float(os.environ.get("ECOM_GAP", "30"))  # session gap, seconds of event time
WINDOW = float(os.environ.get("ECOM_WINDOW", "300"))  # trending: window size ...
HOP = float(os.environ.get("ECOM_HOP", "60"))  # ... and hop, seconds of event time
TOP = int(os.environ.get("ECOM_TOP", "5"))
CATALOG_PARTITIONS = 4

app = sk.App(f"ecom-{RUN}", processing_guarantee="exactly_once", commit_interval=0.5)
name = f"ecom-{RUN}"
clicks = app.topic(
    f"{name}-clicks", value_type=Click, partitions=2, timestamp="ts", out_of_orderness=30
)
purchases = app.topic(
    f"{name}-purchases", value_type=Purchase, partitions=4, timestamp="ts", out_of_orderness=30
)
catalog = app.topic(
    f"{name}-catalog", partitions=CATALOG_PARTITIONS, config={"cleanup.policy": "compact"}
)
sessions_out = app.topic(f"{name}-sessions", partitions=4)
enriched = app.topic(f"{name}-enriched", partitions=3)
trending_out = app.topic(f"{name}-trending", partitions=4)
totals = app.topic(f"{name}-totals", partitions=4)
conversions = app.topic(f"{name}-conversions", partitions=4)
CONVERSION_S = 1800  # a purchase at most 30 minutes after the view converts it

products = app.table("products", source=catalog)  # co-partitioned with key_by product
products_everywhere = app.global_table("products-all", source=catalog)  # any key, any stage
spent = app.table("spent", default=int)  # cents
bought = app.table("bought", default=int)


def _session_sum(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {"pages": a["pages"] + b["pages"], "spend": a["spend"] + b["spend"]}


user_sessions = app.window(
    "user-sessions", sk.session(GAP), sk.reduce(_session_sum), output=sessions_out
)
# Keyed by the task's partition ("p0".."p3"): each task keeps the top k of its own products,
# and the overall top k is in the union of the partitions' lists (`sk.merge_top`).
trending = app.window(
    "trending",
    sk.hopping(WINDOW, every=HOP),
    sk.top_k(TOP),
    emit="update",
    output=trending_out,
    local_keys=True,
)


def join_catalog(click: Click) -> dict[str, Any]:
    """Stream-table join against the global copy of the catalog: any key, any partition."""
    product = products_everywhere.get(click.product_id) or {}
    return {
        **click.model_dump(),
        "name": product.get("name", "?"),
        "category": product.get("category", "?"),
        "price_cents": product.get("price_cents", 0),
    }


# Parse (a record that is not a Click goes to the DLQ) → key_by user.
by_user = app.stream(clicks).forward().key_by("user_id", partitions=4, name="by-user")


@app.agent(by_user, state=[user_sessions])
async def sessions(stream: sk.Stream[Click]) -> None:
    """A session window per user: pages seen and cents spent."""
    async for click in stream:
        user_sessions.add(click.user_id, {"pages": 1, "spend": click.cents})


# rebalance over 8 (the join runs there) → shuffle over 3 → the enriched topic, and on to
# the trending count keyed by product (co-partitioned with the catalog).
logged = by_user.rebalance(partitions=8).map(join_catalog).shuffle(partitions=3, name="log")
logged.to(enriched)
by_product = logged.key_by("product_id", partitions=CATALOG_PARTITIONS, name="by-product")


@app.agent(by_product, state=[products, trending])
async def trending_products(stream: sk.Stream[dict[str, Any]]) -> None:
    """The top k products per hopping window, per partition."""
    async for event in stream:
        if event["product_id"] not in products:  # the co-partitioned table: a local lookup
            continue
        trending.add(f"p{stream.event.partition}", event["product_id"])


@app.agent(
    app.stream(purchases).key_by("user_id", name="by-user-purchases"),
    sink=totals,
    state=[spent, bought],
)
async def spend(stream: sk.Stream[Purchase]) -> AsyncIterator[dict[str, Any]]:
    """The seed's example: purchases key_by user → running total (in cents)."""
    async for p in stream:
        spent[p.user_id] += round(p.amount * 100)
        bought[p.user_id] += 1
        yield {"user_id": p.user_id, "total_cents": spent[p.user_id], "count": bought[p.user_id]}


def _user_product(event: Click | Purchase) -> str:
    return f"{event.user_id}|{event.product_id}"


def _converted(view: Click, purchase: Purchase | None) -> dict[str, Any]:
    return {"view": view.id, "product_id": view.product_id, "bought": purchase is not None}


# Conversion: each view ⋈ the purchases of the same user and product within 30 minutes after
# it; a left join, so a view no purchase followed is emitted too, once its 30 minutes (and
# the grace) have passed the watermark.
app.stream(clicks).filter(lambda c: c.kind == "view").join(
    app.stream(purchases),
    between=(0, CONVERSION_S),
    grace=60,
    how="left",
    on=_user_product,
    partitions=4,
    joiner=_converted,
    name="conversion",
).to(conversions)
