"""An app with a table behind a key_by, for the operator-tool tests (HTTP, status, reset).

SKTEST_ID names the app and its topics, so each test has its own group and topics."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")

app = sk.App(f"ops-{ID}", commit_interval=0.3)
purchases = app.topic(f"ops-in-{ID}", partitions=4)
totals_out = app.topic(f"ops-out-{ID}", partitions=2)
totals = app.table("totals", default=int)


by_user = app.stream(purchases).key_by("user", partitions=4, name="by-user")


@app.agent(by_user, sink=totals_out, state=[totals])
async def total(stream: sk.Stream[Any]) -> AsyncIterator[Any]:
    async for p in stream:
        totals[p["user"]] += p["amount"]
        yield {"user": p["user"], "total": totals[p["user"]]}
