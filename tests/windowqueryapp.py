"""Window tables of every kind and a timer set behind one key_by, for the query tests: clicks
(4 partitions, event time from `ts`) → key_by user → hourly tumbling windows (several
aggregations), sessions (a bounded collect), count windows of three, and a reminder timer per
click. Names come from SKTEST_ID."""

from __future__ import annotations

import os
from typing import Any

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")

app = sk.App(f"wq-{ID}", commit_interval=0.3)
clicks = app.topic(f"wq-in-{ID}", partitions=4, timestamp="ts")
hourly = app.window(
    "hourly",
    sk.tumbling(3600),
    {"count": sk.count(), "spent": sk.sum_of("cents"), "avg": sk.mean_of("cents")},
)
visits = app.window("visits", sk.session(600), sk.collect("page", limit=5))
threes = app.window("threes", sk.tumbling_count(3), [sk.count(), sk.last_of("page")])
reminders = app.timer_set("reminders")


@reminders.on_fire
def remind(key: str, payload: Any) -> None:
    pass  # never due in the test: the watermark stays hours before


by_user = app.stream(clicks).key_by("user", partitions=4, name="by-user")


@app.agent(by_user, state=[hourly, visits, threes, reminders])
async def track(stream: sk.Stream[Any]) -> None:
    async for c in stream:
        hourly.add(c["user"], c)
        visits.add(c["user"], c)
        threes.add(c["user"], c)
        reminders.at(c["user"], c["ts"] + 86_400, {"page": c["page"]})
