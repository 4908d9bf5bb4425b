"""Pipelines A, B and C in streamkit (our virtualenv): `python -m bench.peers.streamkit_app`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import streamkit as sk
from streamkit.cli_common import setup_logging
from streamkit.runtime.worker import Worker

env = os.environ

# C: the join holds its window and grace of rows (4,200 s of event time, ~53,000 a partition
# at this input's density) plus the skew between its upstream tasks: up to ~170,000 a
# partition in the two-worker runs, past the default 100,000, where its rows would spill to
# SQLite (the worker warns; docs/joins.md, "Sizing state_cache_entries for a join").
# BENCH_CACHE_ENTRIES: another bound ("": the default; bench.join_memory measures that one)
cache = env.get("BENCH_CACHE_ENTRIES", "250000" if env.get("BENCH_PIPELINE") == "C" else "")
app = sk.App(
    env["BENCH_GROUP"],
    broker=env["BENCH_BOOTSTRAP"],
    processing_guarantee=env["BENCH_GUARANTEE"],
    commit_interval=float(env["BENCH_COMMIT_INTERVAL"]),
    workdir=env["BENCH_STATE_DIR"],
    log_level=env.get("BENCH_LOG_LEVEL", "WARNING"),
    **({"state_cache_entries": int(cache)} if cache else {}),
)
pipeline = env.get("BENCH_PIPELINE", "A")
# C: each input partition is in event-time order, and the join's own grace covers the skew
# between the upstream tasks; B keeps an hour of out-of-orderness
purchases = app.topic(
    env["BENCH_INPUT"], partitions=4, out_of_orderness=0 if pipeline == "C" else 3600
)
out = app.topic(env["BENCH_OUTPUT"], partitions=4)

by_user = app.stream(purchases).key_by("user_id", name="by-user")

if pipeline == "C":  # clicks ⋈ purchases of a user within 10 minutes (inner)
    events = app.stream(purchases)
    clicks = events.filter(lambda e: e["kind"] == "click").key_by("user_id", name="clicks")
    bought = events.filter(lambda e: e["kind"] == "purchase").key_by("user_id", name="bought")
    clicks.join(
        bought,
        within=600,
        grace=3600,  # as Kafka Streams needs (its stream time is the newest record's)
        joiner=lambda c, p: {"click": c["id"], "purchase": p["id"]},
        name="clicks-purchases",
    ).to(out)

elif pipeline == "A":
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
    setup_logging(app.settings.log_level)  # as `streamkit worker` does (BENCH_LOG_LEVEL)
    asyncio.run(Worker(app).run())
