"""Pipelines A and B in Faust (faust-streaming 0.15.x, rocksdict store). Runs in .venv-bench."""

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
out = app.topic(env["BENCH_OUTPUT"], key_serializer="raw", value_serializer="json")

if env.get("BENCH_PIPELINE", "A") == "A":
    totals = app.Table("totals", default=float, partitions=4)

    @app.agent(purchases)  # type: ignore[untyped-decorator]
    async def running_sum(stream: Any) -> None:
        async for p in stream.group_by(lambda p: p["user_id"], name="by-user"):
            user = p["user_id"]
            totals[user] += p["amount"]
            await out.send(key=user.encode(), value={"user_id": user, "total": totals[user]})

else:
    # Event time from the value's `ts` field (seconds): Faust's group_by does not carry the
    # source record's timestamp to the repartition topic, so relative_to_stream() would count
    # in processing time.

    class Purchase(faust.Record, serializer="json"):  # type: ignore[misc,call-arg]
        user_id: str
        item: str
        amount: float
        qty: int
        ts: float

    typed = app.topic(env["BENCH_INPUT"], value_type=Purchase, partitions=4)
    counts = (
        app.Table("counts", default=int, partitions=4)
        .tumbling(60, expires=3600)
        .relative_to_field(Purchase.ts)
    )

    @app.agent(typed)  # type: ignore[untyped-decorator]
    async def count_per_user(stream: Any) -> None:
        async for p in stream.group_by(Purchase.user_id, name="by-user"):
            counts[p.user_id] += 1
            ts_ms = round(p.ts * 1000)
            value = {"user_id": p.user_id, "start": ts_ms - ts_ms % 60_000}
            value["count"] = counts[p.user_id].value()
            await out.send(key=p.user_id.encode(), value=value)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()
