"""The agent contract against the real broker: the contract app (fan-out, a merge, a branch, a
helper that writes a table, a timer callback that reads one) run by real worker processes
under exactly-once with kill -9 gives, on every branch, what the testing kit gives: nothing
lost, nothing twice. And a list changed in place comes back whole after a restore from the
changelog, under both guarantees."""

from __future__ import annotations

import asyncio
import collections
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import streamkit as sk
from streamkit.testing import AsyncTestDriver
from tests.kafkahelp import WorkerProcess, produce, read_all, running, wait_until
from tests.test_contract import fresh_contract_app

T0 = 1_704_067_200
USERS = 6  # c0..c2 only click, o0..o2 only order: each user's events keep one order


def inputs(n: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(topic role, user, value): n clicks and n orders, event times one second apart."""
    rows = []
    for i in range(n):
        user = f"c{i % (USERS // 2)}"
        rows.append(
            ("clicks", user, {"user": user, "id": f"c{i}", "amount": i % 150, "ts": T0 + i})
        )
        user = f"o{i % (USERS // 2)}"
        rows.append(("orders", user, {"user": user, "id": f"o{i}", "amount": 1, "ts": T0 + i}))
    return rows


def flush(n: int) -> list[tuple[str, int, dict[str, Any]]]:
    """Far ahead in event time, on every partition of both topics: every timer fires."""
    late = T0 + n + 10_000
    return [
        (role, p, {"user": f"flush-{role}-{p}", "id": f"f-{role}-{p}", "amount": 0, "ts": late})
        for role in ("clicks", "orders")
        for p in (0, 1)
    ]


def values(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def branch_outputs(mod: Any, found: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What must be equal between the kit and a worker, per branch, order-free where the
    partitions interleave and in order where one partition holds a user."""
    counted: dict[str, list[tuple[str, int]]] = collections.defaultdict(list)
    for v in found["counted"]:
        if not v["user"].startswith("flush"):
            counted[v["user"]].append((v["id"], v["n"]))
    return {
        "counted": dict(counted),
        "echoed": sorted(v["id"] for v in found["echoed"]),
        "big": sorted(v["id"] for v in found["big"]),
        "small": sorted(v["id"] for v in found["small"]),
        "fired": sorted((v["user"], v["id"], v["seen"], v["kept"]) for v in found["fired"]),
    }


async def kit_outputs(mod: Any, n: int) -> dict[str, Any]:
    topics = {"clicks": mod.clicks, "orders": mod.orders}
    async with AsyncTestDriver(mod.app) as driver:
        for role, user, value in inputs(n):
            await driver.send(topics[role], value, key=user.encode())
        for role, p, value in flush(n):
            await driver.send(topics[role], value, partition=p)
        found = {
            name: driver.read_values(getattr(mod, name))
            for name in ("counted", "echoed", "big", "small", "fired")
        }
    return branch_outputs(mod, found)


async def test_fan_out_merge_branch_exactly_once_under_kill_9_equal_the_kit(
    uid: str, tmp_path: Path
) -> None:
    n = 150
    mod = fresh_contract_app(uid)
    expected = await kit_outputs(mod, n)
    assert len(expected["fired"]) == 2 * n and len(expected["echoed"]) == n + 2

    env = {"SKTEST_ID": uid, "SKTEST_GUARANTEE": "exactly_once"}

    def worker(name: str) -> WorkerProcess:
        return WorkerProcess(
            "tests.contractapp:app",
            {**env, "STREAMKIT_WORKDIR": str(tmp_path / name)},
            tmp_path / f"{name}.log",
        ).start()

    workers = [worker("w1"), worker("w2")]
    try:
        await wait_until(
            lambda: all("assigned" in w.log() for w in workers), within=90, what="workers"
        )
        rows = inputs(n)
        half = len(rows) // 2
        for start, end in ((0, half), (half, len(rows))):
            for role in ("clicks", "orders"):
                chunk = [(u, v) for r, u, v in rows[start:end] if r == role]
                await produce(
                    getattr(mod, role).name,
                    [orjson.dumps(v) for _, v in chunk],
                    keys=[u.encode() for u, _ in chunk],
                )
            if start == 0:
                await asyncio.sleep(0.5)  # let work be in flight when the kill lands
                workers[0].kill9()  # mid-run: uncommitted transactions left behind
                workers.append(worker("w3"))
        for role, p, value in flush(n):
            await produce(getattr(mod, role).name, [orjson.dumps(value)], partition=p)
        counts = {name: len(expected[name]) for name in ("echoed", "big", "small", "fired")}
        counts["counted"] = 2 * n + len(flush(n))
        found = {
            name: values(await read_all(getattr(mod, name).name, expect=count, within=120))
            for name, count in counts.items()
        }
    finally:
        for w in workers:
            w.stop()
    got = branch_outputs(mod, found)
    for name in ("echoed", "big", "small", "fired"):
        assert got[name] == expected[name], name
    assert got["counted"] == expected["counted"], _diff(got["counted"], expected["counted"])


def _diff(got: dict[str, Any], expected: dict[str, Any]) -> str:
    lines = []
    for user in sorted(set(got) | set(expected)):
        g, e = got.get(user, []), expected.get(user, [])
        if g != e:
            at = next((i for i, (a, b) in enumerate(zip(g, e, strict=False)) if a != b), None)
            lines.append(
                f"{user}: {len(g)} outputs, expected {len(e)}; first difference at {at}: "
                f"{g[at - 1 : at + 2] if at else g[-2:]} vs {e[at - 1 : at + 2] if at else e[-2:]}"
            )
    return "\n".join(lines)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_a_list_changed_in_place_survives_a_restore_from_the_changelog(
    uid: str, tmp_path: Path, guarantee: str
) -> None:
    """Case 3 against the broker: `[1, 2, 3]` came back as `[1]`."""
    app = sk.App(
        f"inplace-{uid}",
        processing_guarantee=guarantee,
        commit_interval=0.2,
        workdir=str(tmp_path / "state"),
    )
    src = app.topic(f"inplace-in-{uid}", partitions=2, key_type=str)
    out = app.topic(f"inplace-out-{uid}", partitions=1)
    hist = app.table("hist", default=list)

    @app.agent(src, sink=out, state=[hist])
    async def keep(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for v in stream:
            hist[v["u"]].append(v["x"])
            yield {"u": v["u"], "hist": hist[v["u"]]}

    async with running(app):
        await produce(
            src.name, [orjson.dumps({"u": "a", "x": x}) for x in (1, 2, 3)], keys=[b"a"] * 3
        )
        await read_all(out.name, expect=3, within=60)
    shutil.rmtree(tmp_path / "state")  # restored from the changelog alone
    async with running(app):
        await produce(src.name, [orjson.dumps({"u": "a", "x": 4})], keys=[b"a"])
        records = values(await read_all(out.name, expect=4, within=60))
    assert records[-1] == {"u": "a", "hist": [1, 2, 3, 4]}
