"""A stream-stream outer join, exactly-once, for the crash test: clicks ⋈ purchases (4
partitions each, event time from the value's `ts`, keyed by user) within 1 s, grace 0.5 s,
results to `join-out-<id>`. Names come from SKTEST_ID."""

from __future__ import annotations

import os

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")

app = sk.App(
    f"join-{ID}", processing_guarantee="exactly_once", commit_interval=0.2, idle_timeout=1.0
)
clicks = app.topic(f"join-clicks-{ID}", partitions=4, timestamp="ts")
purchases = app.topic(f"join-buys-{ID}", partitions=4, timestamp="ts")
# results carry 2024 event times: no time retention, or the broker deletes them at once
results = app.topic(f"join-out-{ID}", partitions=4, config={"retention.ms": "-1"})
app.stream(clicks).join(
    app.stream(purchases), within=1, grace=0.5, how="outer", name="clicks-buys"
).to(results)
