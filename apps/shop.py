"""The seed's example, a stable contract other checks rely on.

App `shop`; input `purchases` (4 partitions, JSON `{"user_id", "amount", "ts"}`, key optional);
key_by user_id → tables `spent` (running total) and `count` → for every purchase, yield
`{"user_id", "total", "count"}` to `shop-totals`, keyed by user_id.

    streamkit worker apps.shop:app      (broker: KAFKA_BOOTSTRAP_SERVERS, state: STREAMKIT_WORKDIR)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

import streamkit as sk


class Purchase(BaseModel):
    user_id: str
    amount: float
    ts: float  # event time, epoch seconds


APP_ID = os.environ.get("SHOP_APP_ID", "shop")  # tests run private copies

app = sk.App(APP_ID, commit_interval=0.5, processing_guarantee="exactly_once")
purchases = app.topic(
    os.environ.get("SHOP_PURCHASES", "purchases"), value_type=Purchase, partitions=4
)
totals = app.topic(os.environ.get("SHOP_TOTALS", "shop-totals"), partitions=4)
spent = app.table("spent", default=float)
count = app.table("count", default=int)
by_user = app.stream(purchases).key_by("user_id", name="by-user")


@app.agent(by_user, sink=totals, state=[spent, count])
async def total_spent(stream: sk.Stream[Purchase]) -> AsyncIterator[dict[str, Any]]:
    async for p in stream:
        spent[p.user_id] += p.amount
        count[p.user_id] += 1
        yield {"user_id": p.user_id, "total": spent[p.user_id], "count": count[p.user_id]}
