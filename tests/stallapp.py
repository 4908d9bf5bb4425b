"""An app for the cut-short test (tests/test_cut_short.py): under exactly-once, each event adds
one to a table and produces one output carrying the new count; the event whose value is
"stall" then, when STALL_FILE is set, touches that file and blocks far past
`shutdown_timeout`, so that a SIGTERM cancels it mid-event (its output and its table change
already made). STALL_ID names the app and topics."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import streamkit as sk

ID = os.environ.get("STALL_ID", "unset")
STALL_FILE = os.environ.get("STALL_FILE")

app = sk.App(
    f"stall-{ID}",
    processing_guarantee="exactly_once",
    commit_interval=0.3,
    shutdown_timeout=1.0,
)
source = app.topic(f"stall-in-{ID}", partitions=2)
out = app.topic(f"stall-out-{ID}", partitions=2)
counts = app.table("counts", default=int, local_keys=True)


def stalled(path: str) -> None:
    """Tell the test this event has started to stall."""
    Path(path).touch()


@app.agent(source, state=[counts])
async def tally(stream: sk.Stream[Any]) -> None:
    async for value in stream:
        key = f"p{stream.event.partition}"
        counts[key] += 1
        await out.send({"value": value, "n": counts[key]}, key=key)
        if value == "stall" and STALL_FILE:
            stalled(STALL_FILE)
            await asyncio.sleep(3600)  # far past shutdown_timeout: cancelled mid-event
