"""An app for process tests, named by environment so each test gets its own topics and group.

SKTEST_ID names the app and topics; SKTEST_PARTITIONS the input's partition count;
SKTEST_SLOW (seconds) makes each event take that long, so a kill lands mid-stream."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")
SLOW = float(os.environ.get("SKTEST_SLOW", "0"))

app = sk.App(f"proc-{ID}", commit_interval=0.3)
source = app.topic(f"proc-in-{ID}", partitions=int(os.environ.get("SKTEST_PARTITIONS", "4")))
sink = app.topic(f"proc-out-{ID}", partitions=2)


@app.agent(source, sink=sink)
async def echo(stream: sk.Stream[Any]) -> AsyncIterator[Any]:
    async for value in stream:
        if SLOW:
            await asyncio.sleep(SLOW)
        event = stream.event
        yield {
            "value": value,
            "partition": event.partition,
            "offset": event.offset,
            "pid": os.getpid(),
        }
