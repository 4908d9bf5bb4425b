"""Timers for the restart test, exactly-once: each purchase sets an event-time timer at its
time + 5 s and a processing-time timer 4 s later; both callbacks write to `tm-out-<id>`.
Names come from SKTEST_ID."""

from __future__ import annotations

import os
from typing import Any

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")

app = sk.App(f"tm-{ID}", processing_guarantee="exactly_once", commit_interval=0.2)
events = app.topic(f"tm-in-{ID}", partitions=2, timestamp="ts", key_type=str)
out = app.topic(f"tm-out-{ID}", partitions=1)
reminders = app.timer_set("reminders")
nudges = app.timer_set("nudges")


@reminders.on_fire
def remind(key: str, payload: Any) -> None:
    out.produce({"kind": "event", "key": key, "payload": payload})


@nudges.on_fire
def nudge(key: str, payload: Any) -> None:
    out.produce({"kind": "processing", "key": key, "payload": payload})


@app.agent(events, state=[reminders, nudges])
async def set_timers(stream: sk.Stream[Any]) -> None:
    async for e in stream:
        if e["user"] == "tick":
            continue  # only moves event time forward
        reminders.at(e["user"], e["ts"] + 5, payload=e["id"])
        nudges.after(e["user"], 4.0, payload=e["id"])
