"""Pipelines A and B in Quix Streams (quixstreams 3.x, RocksDB state). Runs in .venv-bench."""

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


sdf = app.dataframe(purchases).group_by("user_id", name="by-user")
if env.get("BENCH_PIPELINE", "A") == "A":
    sdf = sdf.apply(add, stateful=True)
else:  # event time: the record's timestamp (Quix Streams' default)
    sdf = sdf.tumbling_window(60_000, grace_ms=3_600_000).count().current()
    sdf = sdf.apply(labelled, metadata=True)
sdf.to_topic(out)

if __name__ == "__main__":
    app.run()
