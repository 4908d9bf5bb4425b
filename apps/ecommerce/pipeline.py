"""The e-commerce pipeline: `streamkit worker apps.ecommerce.pipeline:app`.

    clicks (2) ─parse, forward─▶ key_by user (4): session windows ─▶ sessions
                                       └─▶ clicks-valid (4) ─rebalance (8): join the catalog
                                           (global table) ─shuffle (3): log ─▶ enriched
    enriched (3) ─key_by product (4): join the catalog (co-partitioned table), top-k per
                                       hopping window ─▶ trending
    purchases (4) ─key_by user (4): running total ─▶ totals
    catalog (4, compacted): the product table, written by the generator

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
purchases = app.topic(f"{name}-purchases", value_type=Purchase, partitions=4)
catalog = app.topic(
    f"{name}-catalog", partitions=CATALOG_PARTITIONS, config={"cleanup.policy": "compact"}
)
clicks_valid = app.topic(f"{name}-clicks-valid", partitions=4)
sessions_out = app.topic(f"{name}-sessions", partitions=4)
# enriched events cross two spreading hops (rebalance, shuffle) and a sink: their event
# times are out of order by up to the pipeline's latency, more while a worker is replaced
enriched = app.topic(f"{name}-enriched", partitions=3, timestamp="ts", out_of_orderness=1800)
trending_out = app.topic(f"{name}-trending", partitions=4)
totals = app.topic(f"{name}-totals", partitions=4)

products = app.table("products", source=catalog)  # co-partitioned with key_by product
products_everywhere = app.global_table("products-all", source=catalog)  # any key, any stage
spent = app.table("spent", default=int)  # cents
bought = app.table("bought", default=int)


def _session_sum(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {"pages": a["pages"] + b["pages"], "spend": a["spend"] + b["spend"]}


user_sessions = app.window(
    "user-sessions", sk.session(GAP), sk.reduce(_session_sum), output=sessions_out
)
trending = app.window(
    "trending", sk.hopping(WINDOW, every=HOP), sk.top_k(TOP), emit="update", output=trending_out
)


@app.agent(clicks, sink=clicks_valid)
async def sessions(stream: sk.Stream[Click]) -> AsyncIterator[dict[str, Any]]:
    """Parse (a record that is not a Click goes to the DLQ) → key_by user → sessions."""
    async for click in stream.forward().key_by("user_id", partitions=4, name="by-user"):
        user_sessions.add(click.user_id, {"pages": 1, "spend": click.cents})
        yield click.model_dump()


def join_catalog(click: dict[str, Any]) -> dict[str, Any]:
    """Stream-table join against the global copy of the catalog: any key, any partition."""
    product = products_everywhere.get(click["product_id"]) or {}
    return {
        **click,
        "name": product.get("name", "?"),
        "category": product.get("category", "?"),
        "price_cents": product.get("price_cents", 0),
    }


@app.agent(clicks_valid, sink=enriched)
async def enrich(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """rebalance over 8 (the join runs there) → shuffle over 3 → log to the enriched topic."""
    async for event in stream.rebalance(partitions=8).map(join_catalog).shuffle(partitions=3):
        yield event


@app.agent(enriched)
async def trending_products(stream: sk.Stream[dict[str, Any]]) -> None:
    """key_by product (co-partitioned with the catalog) → the top k per hopping window. Each
    partition holds whole products, so its top k is exact for them and the overall top k is
    in the union of the partitions' lists (`sk.merge_top`)."""
    by_product = stream.key_by("product_id", partitions=CATALOG_PARTITIONS, name="by-product")
    async for event in by_product:
        if event["product_id"] not in products:  # the co-partitioned table: a local lookup
            continue
        trending.add(f"p{stream.event.partition}", event["product_id"])


@app.agent(purchases, sink=totals)
async def spend(stream: sk.Stream[Purchase]) -> AsyncIterator[dict[str, Any]]:
    """The seed's example: purchases key_by user → running total (in cents)."""
    async for p in stream.key_by("user_id", name="by-user"):
        spent[p.user_id] += round(p.amount * 100)
        bought[p.user_id] += 1
        yield {"user_id": p.user_id, "total_cents": spent[p.user_id], "count": bought[p.user_id]}
