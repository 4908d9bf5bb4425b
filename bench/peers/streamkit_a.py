"""Pipeline A in streamkit (our virtualenv): `python -m bench.peers.streamkit_a`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import streamkit as sk
from streamkit.runtime.worker import Worker

env = os.environ

app = sk.App(
    env["BENCH_GROUP"],
    broker=env["BENCH_BOOTSTRAP"],
    processing_guarantee=env["BENCH_GUARANTEE"],
    commit_interval=float(env["BENCH_COMMIT_INTERVAL"]),
    workdir=env["BENCH_STATE_DIR"],
    log_level="WARNING",
)
purchases = app.topic(env["BENCH_INPUT"], partitions=4)
totals_out = app.topic(env["BENCH_OUTPUT"], partitions=4)
totals = app.table("totals", default=float)


@app.agent(purchases, sink=totals_out)
async def running_sum(stream: sk.Stream[Any]) -> AsyncIterator[dict[str, Any]]:
    async for p in stream.key_by("user_id", name="by-user"):
        user = p["user_id"]
        total = totals[user] + p["amount"]
        totals[user] = total
        yield {"user_id": user, "total": total}


if __name__ == "__main__":
    asyncio.run(Worker(app).run())
