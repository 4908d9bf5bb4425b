"""The first agent: read orders, flag the big ones, write them to a sink topic.

streamkit worker apps.hello:app
echo '{"id": 1, "amount": 250.0}' | streamkit send apps.hello:app orders
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel

import streamkit as sk


class Order(BaseModel):
    id: int
    amount: float


app = sk.App("hello")
orders = app.topic("orders", value_type=Order, partitions=4)
big_orders = app.topic("big-orders", partitions=4)


@app.agent(orders, sink=big_orders)
async def flag_big(stream: sk.Stream[Order]) -> AsyncIterator[dict[str, object]]:
    async for order in stream:
        if order.amount >= 100:
            yield {"id": order.id, "amount": order.amount, "flag": "big"}
