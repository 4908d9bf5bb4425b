"""A table with an event-time TTL of 100 s, for the restart test: visits (1 partition, event
time from `ts`) → a count per user in `seen`. Names come from SKTEST_ID."""

from __future__ import annotations

import os
from typing import Any

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")

app = sk.App(f"ttl-{ID}", processing_guarantee="exactly_once", commit_interval=0.3)
visits = app.topic(f"ttl-in-{ID}", partitions=1, timestamp="ts")
seen = app.table("seen", default=int, ttl=100)


@app.agent(visits, state=[seen])
async def count(stream: sk.Stream[Any]) -> None:
    async for v in stream:
        seen[v["user"]] += 1
