"""The flagship's shape for tests: input x2 -> key_by x4 -> rebalance x8 -> shuffle x3.

Each stage's map records the partition it ran on (via `current_event()`), so the output says
which task handled each event at every hop. Names come from SKTEST_ID."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")

app = sk.App(f"pipe-{ID}", commit_interval=0.3)
clicks = app.topic(f"pipe-clicks-{ID}", partitions=2)
out = app.topic(f"pipe-out-{ID}", partitions=1)


def hop(name: str) -> Any:
    def record(value: dict[str, Any]) -> dict[str, Any]:
        event = sk.current_event()
        assert event is not None
        return {**value, name: event.partition, f"{name}_pid": os.getpid()}

    record.__name__ = f"note_{name}"
    return record


chain = (
    app.stream(clicks)
    .map(hop("parse"))
    .forward()
    .key_by("user", partitions=4, name="by-user")
    .map(hop("session"))
    .rebalance(partitions=8)
    .map(hop("enrich"))
    .shuffle(partitions=3, seed=7)
)


@app.agent(chain, sink=out)
async def sessions(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async for value in stream:
        event = stream.event
        yield {**hop("log")(value), "key": event.key}
