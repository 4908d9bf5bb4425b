"""The app of the agent-contract tests (tests/test_contract.py, tests/test_contract_broker.py):
fan-out, a merge, a branch, a helper that writes a table, a timer callback that reads one, and
a body with code before its `async for` that records when it runs. Names come from SKTEST_ID.

    clicks (2) ─┬─ merge with orders (2) ─▶ key_by user (2): agent `count_events`
                │     (helper writes `seen`, list table `hist`, timers `reminders`)
                ├─ agent `echo` ─▶ echoed
                └─ branch by amount ─▶ big | small
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")
GUARANTEE = os.environ.get("SKTEST_GUARANTEE", "exactly_once")
STARTS: list[str] = []  # what ran of the bodies' code before `async for` (this process)

app = sk.App(f"contract-{ID}", processing_guarantee=GUARANTEE, commit_interval=0.2)
clicks = app.topic(f"contract-clicks-{ID}", partitions=2, timestamp="ts")
orders = app.topic(f"contract-orders-{ID}", partitions=2, timestamp="ts")
# counted records carry their event's (2024) time: no time retention, or the broker's 7-day
# retention deletes them before the test reads them
counted = app.topic(f"contract-counted-{ID}", partitions=2, config={"retention.ms": "-1"})
echoed = app.topic(f"contract-echoed-{ID}", partitions=1)
big = app.topic(f"contract-big-{ID}", partitions=1)
small = app.topic(f"contract-small-{ID}", partitions=1)
fired = app.topic(f"contract-fired-{ID}", partitions=1)

seen = app.table("seen", default=int)
hist = app.table("hist", default=list)
reminders = app.timer_set("reminders")


def note(event: dict[str, Any]) -> int:
    """A helper that writes a table: state works from any code of the stage's tasks."""
    seen[event["user"]] += 1
    count: int = seen[event["user"]]
    return count


@reminders.on_fire
def remind(user: str, payload: Any) -> None:
    """Reads both tables when the watermark passes the event's time + 60 s (what it writes
    does not depend on when that happens, so the kit and a worker agree)."""
    fired.produce(
        {"user": user, "id": payload, "seen": seen[user] > 0, "kept": payload in hist[user]}
    )


by_user = app.stream(clicks, orders).key_by("user", name="by-user")


@app.agent(by_user, sink=counted, state=[seen, hist, reminders])
async def count_events(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    STARTS.append("count_events")
    async for event in stream:
        n = note(event)
        hist[event["user"]].append(event["id"])  # in place: persisted at the checkpoint
        reminders.at(event["user"], event["ts"] + 60, payload=event["id"])
        yield {"user": event["user"], "id": event["id"], "n": n}


@app.agent(clicks, sink=echoed)
async def echo(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    STARTS.append("echo")
    async for event in stream:
        yield {"id": event["id"]}


large, rest = app.stream(clicks).branch(lambda e: e["amount"] >= 100, default=True)
large.to(big)
rest.map(lambda e: {"id": e["id"]}).to(small)
