"""Pipeline A in Quix Streams (quixstreams 3.x, RocksDB state). Runs in .venv-bench."""

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
    loglevel="WARNING",
)
purchases = app.topic(env["BENCH_INPUT"], value_deserializer="json")
totals_out = app.topic(env["BENCH_OUTPUT"], key_serializer="str", value_serializer="json")


def add(p: dict[str, Any], state: State) -> dict[str, Any]:
    total = state.get("total", 0.0) + p["amount"]
    state.set("total", total)
    return {"user_id": p["user_id"], "total": total}


sdf = app.dataframe(purchases)
sdf = sdf.group_by("user_id", name="by-user")
sdf = sdf.apply(add, stateful=True)
sdf.to_topic(totals_out)

if __name__ == "__main__":
    app.run()
