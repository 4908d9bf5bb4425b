"""An app for the as-of join's process tests: trades joined as of their time with a versioned
table of prices fed from a topic, under exactly-once. SKTEST_ID names the app and topics;
SKTEST_SLOW (seconds) makes each joined trade take that long, so a kill lands mid-stream."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")
SLOW = float(os.environ.get("SKTEST_SLOW", "0"))

app = sk.App(f"asofp-{ID}", processing_guarantee="exactly_once", commit_interval=0.2)
prices_topic = app.topic(f"asofp-{ID}-prices", partitions=2, config={"retention.ms": "-1"})
trades = app.topic(f"asofp-{ID}-trades", partitions=2, config={"retention.ms": "-1"})
priced = app.topic(f"asofp-{ID}-priced", partitions=2, config={"retention.ms": "-1"})
prices = app.table("prices", source=prices_topic, versioned=sk.Versioned(retention=86400))


def price_of(trade: dict[str, Any], price: Any) -> dict[str, Any]:
    return {"trade": trade["id"], "price": price}


@app.agent(app.stream(trades).join_table(prices, how="left", joiner=price_of), sink=priced)
async def emit(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async for value in stream:
        if SLOW:
            await asyncio.sleep(SLOW)
        yield value
