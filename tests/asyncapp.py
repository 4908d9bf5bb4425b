"""An app for map_async process tests, named by environment so each test gets its own topics.

SKTEST_ID names the app and topics; the enrichment call sleeps a random 0-20 ms and notes
each call it starts in the file SKTEST_CALLS (`pid i` lines), so a test can tell which calls
a killed worker had started."""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")
CALLS = os.environ.get("SKTEST_CALLS")
_calls = os.open(CALLS, os.O_WRONLY | os.O_CREAT | os.O_APPEND) if CALLS else None

app = sk.App(f"amproc-{ID}", processing_guarantee="exactly_once", commit_interval=0.2)
source = app.topic(f"am-in-{ID}", partitions=3)
sink = app.topic(f"am-out-{ID}", partitions=3)


async def enrich(value: dict[str, Any]) -> dict[str, Any]:
    if _calls is not None:  # one write per line: a kill -9 leaves whole lines
        os.write(_calls, f"{os.getpid()} {value['i']}\n".encode())
    await asyncio.sleep(random.random() * 0.02)
    return {**value, "pid": os.getpid()}


app.stream(source).map_async(enrich, concurrency=16).to(sink)
