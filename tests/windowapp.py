"""Windowed counts over event time, exactly-once, for the crash test: purchases (4 partitions,
event time from the value's `ts`) → key_by user → 10 s tumbling count and sum, final results
to `win-out-<id>`; late events to `win-late-<id>`; and count windows of ten purchases per user
(their ids) to `win-tens-<id>`. Names come from SKTEST_ID."""

from __future__ import annotations

import os
from typing import Any

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")

app = sk.App(
    f"win-{ID}", processing_guarantee="exactly_once", commit_interval=0.2, idle_timeout=1.0
)
purchases = app.topic(f"win-in-{ID}", partitions=4, timestamp="ts")
# results carry their window's (2024) end as timestamp: no time retention, or the broker's
# 7-day retention deletes them before the test reads them
KEEP = {"retention.ms": "-1"}
results = app.topic(f"win-out-{ID}", partitions=4, config=KEEP)
late = app.topic(f"win-late-{ID}", key_type=bytes, value_type=bytes, partitions=1, config=KEEP)
counts = app.window(
    "counts", sk.tumbling(10), sk.count(), allowed_lateness=20, output=results, late_topic=late
)

tens_out = app.topic(f"win-tens-{ID}", partitions=4, config=KEEP)
tens = app.window(
    "tens", sk.tumbling_count(10), [sk.count(), sk.collect("id", limit=10)], output=tens_out
)


by_user = app.stream(purchases).key_by("user", name="by-user")


@app.agent(by_user, state=[counts, tens])
async def per_user(stream: sk.Stream[Any]) -> None:
    async for p in stream:
        counts.add(p["user"])
        tens.add(p["user"], p)
