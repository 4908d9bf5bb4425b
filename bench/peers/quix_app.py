"""Pipelines A, B and C in Quix Streams (quixstreams 3.x, RocksDB state). Runs in .venv-bench.

C uses `join_interval` (quixstreams >= 3.15): a record looks for the other side's records of
its key at most 10 minutes *before* its own timestamp (backward_ms for a click, forward_ms for a
purchase), both ends included; so a pair is found when its later record (in event time)
arrives after the earlier one, and missed when the two repartition topics deliver them the
other way round. Its grace is per key and side: a key's records older than its newest record
there minus grace_ms are expired at each checkpoint. See docs/benchmarks.md, pipeline C.
"""

from __future__ import annotations

import os
from typing import Any

from quixstreams import Application, State

env = os.environ

app = Application(
    broker_address=env["BENCH_BOOTSTRAP"],
    consumer_group=env["BENCH_GROUP"],
    auto_offset_reset="earliest",
    processing_guarantee=env["BENCH_GUARANTEE"].replace("_", "-"),
    commit_interval=float(env["BENCH_COMMIT_INTERVAL"]),
    state_dir=env["BENCH_STATE_DIR"],
    loglevel=env.get("BENCH_LOG_LEVEL", "WARNING"),
)
purchases = app.topic(env["BENCH_INPUT"], value_deserializer="json")
out = app.topic(env["BENCH_OUTPUT"], key_serializer="str", value_serializer="json")


def add(p: dict[str, Any], state: State) -> dict[str, Any]:
    total = state.get("total", 0.0) + p["amount"]
    state.set("total", total)
    return {"user_id": p["user_id"], "total": total}


def labelled(window: dict[str, Any], key: Any, timestamp: int, headers: Any) -> dict[str, Any]:
    user = key.decode() if isinstance(key, bytes) else key
    return {"user_id": user, "start": window["start"], "count": window["value"]}


pipeline = env.get("BENCH_PIPELINE", "A")
if pipeline == "C":  # clicks ⋈ purchases of a user within 10 minutes (inner), grace 1 h
    events = app.dataframe(purchases)
    clicks = events.filter(lambda e: e["kind"] == "click").group_by("user_id", name="clicks")
    bought = events.filter(lambda e: e["kind"] == "purchase").group_by("user_id", name="bought")
    sdf = clicks.join_interval(
        bought,
        how="inner",
        on_merge=lambda c, p: {"click": c["id"], "purchase": p["id"]},
        grace_ms=3_600_000,
        backward_ms=600_000,
        forward_ms=600_000,
        name="clicks-purchases",
    )
elif pipeline == "A":
    sdf = app.dataframe(purchases).group_by("user_id", name="by-user").apply(add, stateful=True)
else:  # B, event time: the record's timestamp (Quix Streams' default)
    sdf = app.dataframe(purchases).group_by("user_id", name="by-user")
    sdf = sdf.tumbling_window(60_000, grace_ms=3_600_000).count().current()
    sdf = sdf.apply(labelled, metadata=True)
sdf.to_topic(out)

if __name__ == "__main__":
    app.run()
