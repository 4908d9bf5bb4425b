"""Pipelines A and B in streamkit (our virtualenv): `python -m bench.peers.streamkit_app`."""

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
    log_level=env.get("BENCH_LOG_LEVEL", "WARNING"),
)
purchases = app.topic(env["BENCH_INPUT"], partitions=4, out_of_orderness=3600)
out = app.topic(env["BENCH_OUTPUT"], partitions=4)

by_user = app.stream(purchases).key_by("user_id", name="by-user")

if env.get("BENCH_PIPELINE", "A") == "A":
    totals = app.table("totals", default=float)

    @app.agent(by_user, sink=out, state=[totals])
    async def running_sum(stream: sk.Stream[Any]) -> AsyncIterator[dict[str, Any]]:
        async for p in stream:
            user = p["user_id"]
            total = totals[user] + p["amount"]
            totals[user] = total
            yield {"user_id": user, "total": total}

else:
    counts = app.window("per-user", sk.tumbling(60), sk.count(), emit="update", output=out)

    @app.agent(by_user, state=[counts])
    async def count_per_user(stream: sk.Stream[Any]) -> None:
        async for p in stream:
            counts.add(p["user_id"])


if __name__ == "__main__":
    asyncio.run(Worker(app).run())
