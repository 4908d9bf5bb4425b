"""Pipeline A in Faust (faust-streaming 0.15.x, rocksdict store). Runs in .venv-bench."""

from __future__ import annotations

import os
import sys
from typing import Any

import faust

env = os.environ
GUARANTEE = env["BENCH_GUARANTEE"]

app = faust.App(
    env["BENCH_GROUP"],
    broker=f"kafka://{env['BENCH_BOOTSTRAP']}",
    store="rocksdb://",  # backed by rocksdict (python-rocksdb does not build here)
    datadir=env["BENCH_STATE_DIR"],
    processing_guarantee="exactly_once" if GUARANTEE == "exactly_once" else "at_least_once",
    broker_commit_interval=float(env["BENCH_COMMIT_INTERVAL"]),
    consumer_auto_offset_reset="earliest",
    topic_partitions=4,
    topic_replication_factor=1,
    web_enabled=False,
)
purchases = app.topic(env["BENCH_INPUT"], value_serializer="json", partitions=4)
totals_out = app.topic(env["BENCH_OUTPUT"], key_serializer="raw", value_serializer="json")
totals = app.Table("totals", default=float, partitions=4)


@app.agent(purchases)  # type: ignore[untyped-decorator]
async def running_sum(stream: Any) -> None:
    async for p in stream.group_by(lambda p: p["user_id"], name="by-user"):
        user = p["user_id"]
        totals[user] += p["amount"]
        await totals_out.send(key=user.encode(), value={"user_id": user, "total": totals[user]})


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()
