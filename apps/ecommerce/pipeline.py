"""The e-commerce pipeline: `streamkit worker apps.ecommerce.pipeline:app`.

    clicks (2) ─forward─▶ key_by user (4) ─┬─▶ sessions: session windows ─▶ sessions
                                           └─▶ rebalance (8): join the catalog (global table)
                                               ─▶ shuffle (3) ─┬─▶ enriched (a sink topic)
                                                               ├─▶ the local sink: SQLite,
                                                               │   JSON lines (PostgreSQL)
                                                               └─▶ key_by product (4): the
                                               co-partitioned catalog table, top-k per
                                               hopping window ─▶ trending
    purchases (4) ─key_by user (4): running total ─▶ totals
    by user: purchase clicks, sliding minute per user ─▶ purchase-bursts ─filter─▶ fraud-alerts
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
from pathlib import Path
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
FRAUD = int(os.environ.get("ECOM_FRAUD", "4"))  # purchases by one user within a minute: alert
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
bursts_out = app.topic(f"{name}-purchase-bursts", partitions=4)
fraud_alerts = app.topic(f"{name}-fraud-alerts", partitions=4)
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

# The fraud rule: each purchase's sliding minute [t - 60 s, t] of its user's purchases (count
# and cents), and those with FRAUD or more purchases to the alert topic.
purchase_bursts = app.window(
    "purchase-bursts",
    sk.sliding(60),
    sk.aggregate(sk.count(), cents=sk.sum_of()),
    output=bursts_out,
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


def is_purchase(click: Click) -> bool:
    return click.kind == "purchase"


@app.agent(by_user.filter(is_purchase), state=[purchase_bursts])
async def purchases_per_minute(stream: sk.Stream[Click]) -> None:
    async for click in stream:
        purchase_bursts.add(click.user_id, click.cents)


def too_many(burst: dict[str, Any]) -> bool:
    return int(burst["count"]) >= FRAUD


app.stream(bursts_out).filter(too_many).to(fraud_alerts)


# rebalance over 8 (the join runs there) → shuffle over 3 → the enriched topic, and on to
# the trending count keyed by product (co-partitioned with the catalog).
logged = by_user.rebalance(partitions=8).map(join_catalog).shuffle(partitions=3, name="log")
logged.to(enriched)

# The local sink: the same events as rows of a SQLite table and as JSON lines, written by the
# `log` stage itself, exactly once (rows and input offsets in one transaction, docs/sinks.md).
SINK_DIR = Path(os.environ.get("ECOM_SINK_DIR", f"/tmp/streamkit-ecommerce-{RUN}/sink"))
SINK_COLUMNS = [
    "id", "user_id", "kind", "product_id", "name", "category", "price_cents", "cents", "ts",
    "source_partition", "source_offset",
]  # fmt: skip


def sink_row(event: dict[str, Any]) -> dict[str, Any]:
    """An enriched event with where the sink stage read it (its repartition record)."""
    at = sk.current_event()
    return {**event, "source_partition": at.partition, "source_offset": at.offset}


SINK_DDL = (
    "CREATE TABLE IF NOT EXISTS {} (id TEXT, user_id TEXT, kind TEXT, product_id TEXT, "
    "name TEXT, category TEXT, price_cents INTEGER, cents INTEGER, ts DOUBLE PRECISION, "
    "source_partition INTEGER, source_offset INTEGER)"
)
sink_rows = logged.map(sink_row)
sink_rows.to(
    sk.SqliteSink(
        SINK_DIR / "enriched.sqlite",
        "enriched",
        columns=SINK_COLUMNS,
        create=SINK_DDL.format("enriched"),
    )
)
# With a PostgreSQL server (`make demo` starts one, or STREAMKIT_POSTGRES_DSN names yours),
# the same rows go to its table `enriched_{run}` too.
PG_TABLE = f"enriched_{RUN}"
if os.environ.get("STREAMKIT_POSTGRES_DSN"):
    sink_rows.to(sk.PostgresSink(PG_TABLE, columns=SINK_COLUMNS, create=SINK_DDL.format(PG_TABLE)))
logged.to(sk.JsonLinesSink(SINK_DIR / "enriched"))
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
