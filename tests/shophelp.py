"""The `apps.shop` contract app run as real worker processes on private topics: helpers shared
by the state and exactly-once tests."""

from __future__ import annotations

import collections
import importlib
import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

import streamkit as sk
from streamkit.state import inspect as inspect_state
from tests.kafkahelp import WorkerProcess, produce, read_all, wait_until

USERS = 40


def shop_env(uid: str, workdir: Path) -> dict[str, str]:
    return {
        "SHOP_APP_ID": f"shop-{uid}",
        "SHOP_PURCHASES": f"purchases-{uid}",
        "SHOP_TOTALS": f"totals-{uid}",
        "STREAMKIT_WORKDIR": str(workdir),
    }


def shop_app(uid: str, workdir: Path) -> sk.App:
    """The same app the workers run, loaded here to read their local state."""
    os.environ.update(shop_env(uid, workdir))
    app: sk.App = importlib.reload(importlib.import_module("apps.shop")).app
    return app


def purchases(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"user_id": f"user_{rng.randrange(USERS)}", "amount": rng.randrange(1, 500) / 4, "ts": i}
        for i in range(n)
    ]


def oracle(rows: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, int]]:
    spent: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.Counter()
    for r in rows:
        spent[r["user_id"]] += r["amount"]
        count[r["user_id"]] += 1
    return dict(spent), dict(count)


def shop_worker(uid: str, workdir: Path, logs: Path, name: str) -> WorkerProcess:
    return WorkerProcess("apps.shop:app", shop_env(uid, workdir), logs / f"{name}.log")


async def send(uid: str, rows: list[dict[str, Any]]) -> None:
    await produce(f"purchases-{uid}", [orjson.dumps(r) for r in rows])


async def finish(
    worker: WorkerProcess, uid: str, rest: list[dict[str, Any]], expect: int, within: float
) -> list[Any]:
    """Start `worker`, send it `rest` once it holds its partitions, read the totals topic
    until it has `expect` records, and stop the worker (also on failure)."""
    worker.start()
    try:
        await holding(worker)
        await send(uid, rest)
        return await read_all(f"totals-{uid}", expect=expect, within=within)
    finally:
        worker.stop()


async def holding(*workers: WorkerProcess) -> None:
    await wait_until(
        lambda: all("assigned" in w.log().rsplit("revoked", 1)[-1] for w in workers),
        within=90,
        what="workers holding partitions",
    )


def last_totals(records: list[Any]) -> dict[str, dict[str, Any]]:
    last = {}
    for r in records:  # per key, totals arrive in order (one partition per user)
        value = orjson.loads(r.value)
        last[value["user_id"]] = value
    return last


def assert_state(app: sk.App, rows: list[dict[str, Any]]) -> None:
    spent, count = oracle(rows)
    assert inspect_state.read_all(app, "count") == count
    assert inspect_state.read_all(app, "spent") == pytest.approx(spent)


def assert_exactly_once(records: list[Any], rows: list[dict[str, Any]]) -> None:
    """One output per input: each user's counts run 1, 2, ... n with no gap and no repeat, and
    the last total is the sum of that user's purchases."""
    spent, count = oracle(rows)
    seen: dict[str, list[int]] = collections.defaultdict(list)
    for r in records:
        value = orjson.loads(r.value)
        seen[value["user_id"]].append(value["count"])
    for user, counts in seen.items():
        assert counts == list(range(1, len(counts) + 1)), f"{user}: counts {counts}"
    assert {u: len(c) for u, c in seen.items()} == count
    assert len(records) == len(rows)
    last = last_totals(records)
    assert {u: v["total"] for u, v in last.items()} == pytest.approx(spent)
