"""An app for the sink tests, named by environment so each test gets its own topics, group and
table (SKTEST_ID). SKTEST_SINK: `postgres` (the default; STREAMKIT_POSTGRES_DSN names the
server) or `sqlite:PATH`; SKTEST_MODE: `exactly_once` (the default) or `upsert`;
SKTEST_COMMIT_INTERVAL: seconds between checkpoints (0.3).

    orders (4) ─key_by user (4)─▶ running total per user (a table) ─▶ the sink
    one row per order: id, user_id, amount, total (the user's total after it)

In upsert mode the stage is stateless (at-least-once replays would count a total twice): the
row's total is the amount. The table refuses a negative amount (a CHECK constraint): those
orders go to the dead-letter topic."""

from __future__ import annotations

import os
from typing import Any

import streamkit as sk

ID = os.environ.get("SKTEST_ID", "unset")
MODE = os.environ.get("SKTEST_MODE", "exactly_once")
SINK = os.environ.get("SKTEST_SINK", "postgres")
TABLE = f"orders_{ID}"
COLUMNS = ["id", "user_id", "amount", "total"]


def ddl(table: str, upsert: bool) -> str:
    key = "PRIMARY KEY" if upsert else "NOT NULL"
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (id BIGINT {key}, user_id TEXT NOT NULL, "
        "amount BIGINT NOT NULL CHECK (amount >= 0), total BIGINT NOT NULL)"
    )


def make_sink() -> Any:
    upsert = MODE == "upsert"
    options: dict[str, Any] = {
        "columns": COLUMNS,
        "mode": MODE,
        "key": ["id"] if upsert else [],
        "create": ddl(TABLE, upsert),
        "batch_rows": 50,
    }
    if SINK.startswith("sqlite:"):
        return sk.SqliteSink(SINK.removeprefix("sqlite:"), TABLE, **options)
    return sk.PostgresSink(TABLE, **options)


app = sk.App(f"sinks-{ID}", commit_interval=float(os.environ.get("SKTEST_COMMIT_INTERVAL", "0.3")))
orders = app.topic(f"sink-orders-{ID}", partitions=4)
spent = app.table("spent", default=int)


def add(order: dict[str, Any]) -> dict[str, Any]:
    spent[order["user_id"]] += order["amount"]
    return {**order, "total": spent[order["user_id"]]}


def alone(order: dict[str, Any]) -> dict[str, Any]:
    return {**order, "total": order["amount"]}


by_user = app.stream(orders).key_by("user_id", name="by-user")
if MODE == "upsert":
    by_user.map(alone).to(make_sink())
else:
    by_user.with_state(spent).map(add).to(make_sink())


def oracle(rows: list[dict[str, Any]], stateful: bool = True) -> set[tuple[Any, ...]]:
    """The table's rows for `rows` sent in order: every non-negative order with the user's
    running total (over every amount, the refused ones too) after it."""
    totals: dict[str, int] = {}
    out = set()
    for r in rows:
        totals[r["user_id"]] = totals.get(r["user_id"], 0) + r["amount"]
        if r["amount"] >= 0:
            total = totals[r["user_id"]] if stateful else r["amount"]
            out.add((r["id"], r["user_id"], r["amount"], total))
    return out
