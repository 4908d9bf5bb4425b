"""Stream-stream joins against the real broker: every join kind end to end in a worker under
exactly-once (results and late records read to the end offsets, read_committed), and a kill -9
of a worker mid-join after which every join result is there exactly once."""

from __future__ import annotations

import collections
import random
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

import streamkit as sk
from streamkit.runtime.dlq import describe
from tests.kafkahelp import (
    WorkerProcess,
    bootstrap,
    chaos_only,
    create_topic,
    produce,
    read_all,
    running,
    wait_until,
)
from tests.test_purge import topic_configs

KEEP = {"retention.ms": "-1"}  # results carry old event times


def _ids(records: list[Any]) -> collections.Counter[tuple[Any, Any]]:
    pairs = (orjson.loads(r.value) for r in records)
    return collections.Counter(
        (left and left["id"], right and right["id"]) for left, right in pairs
    )


async def test_every_join_kind_end_to_end_under_exactly_once(uid: str, tmp_path: Path) -> None:
    app = sk.App(
        f"joins-{uid}",
        workdir=tmp_path,
        processing_guarantee="exactly_once",
        commit_interval=0.2,
        idle_timeout=1.0,
    )
    orders = app.topic(f"orders-{uid}", partitions=2, timestamp="ts")
    payments = app.topic(f"payments-{uid}", partitions=2, timestamp="ts")
    outs = {
        how: app.topic(f"paid-{how}-{uid}", partitions=2, config=KEEP)
        for how in ("inner", "left", "outer")
    }
    for how, out in outs.items():
        app.stream(orders).join(
            app.stream(payments), within=600, grace=60, how=how, name=f"paid-{how}"
        ).to(out)
    # 40 orders; the even ones paid 100 s later, the odd ones never; 10 payments of no order
    order_rows = [(f"o{i}", 1000 + i) for i in range(40)]
    pay_rows = [(f"o{i}", 1100 + i) for i in range(0, 40, 2)]
    pay_rows += [(f"x{i}", 1100 + i) for i in range(10)]
    async with running(app):
        await produce(
            orders.name,
            [orjson.dumps({"id": i, "ts": ts}) for i, ts in order_rows],
            keys=[i.encode() for i, _ in order_rows],
        )
        await produce(
            payments.name,
            [orjson.dumps({"id": i, "ts": ts}) for i, ts in pay_rows],
            keys=[i.encode() for i, _ in pay_rows],
        )
        await read_all(outs["inner"].name, expect=20, within=60)
        for partition in (0, 1):  # the watermark passes every record's last chance
            flush = orjson.dumps({"id": f"flush{partition}", "ts": 10_000})
            await produce(orders.name, [flush], keys=[b"fo"], partition=partition)
            await produce(payments.name, [flush], keys=[b"fp"], partition=partition)
        await read_all(outs["outer"].name, expect=20 + 20 + 10, within=60)
        late = orjson.dumps({"id": "late", "ts": 2000})  # 10,000 > 2000 + 60: late
        await produce(orders.name, [late], keys=[b"late"])
        late_name = f"joins-{uid}-paid-inner-late"
        await wait_until(lambda: _has_records(late_name), within=60, what="the late record routed")
        got = {how: _ids(await read_all(out.name)) for how, out in outs.items()}
        late_records = await read_all(late_name)
    pairs: dict[Any, int] = {(f"o{i}", f"o{i}"): 1 for i in range(0, 40, 2)}
    lefts: dict[Any, int] = {(f"o{i}", None): 1 for i in range(1, 40, 2)}
    rights: dict[Any, int] = {(None, f"x{i}"): 1 for i in range(10)}
    assert dict(got["inner"]) == pairs
    assert dict(got["left"]) == {**pairs, **lefts}
    assert dict(got["outer"]) == {**pairs, **lefts, **rights}
    assert len(late_records) == 1 and orjson.loads(late_records[0].value)["id"] == "late"
    assert "late for join paid-inner" in describe(late_records[0].headers)["streamkit.error"]
    changelog = f"joins-{uid}-paid-inner-changelog"
    config = (await topic_configs([changelog]))[changelog]
    # no tombstones: time retention of the window (1200 s) + grace (60 s) + a day
    assert config["cleanup.policy"] == "compact,delete"
    assert config["retention.ms"] == str(1_200_000 + 60_000 + 86_400_000)


async def _has_records(topic: str) -> bool:
    try:
        return bool(await read_all(topic, within=5))
    except AssertionError:
        return False


def _oracle(rows: list[tuple[str, str, int, int]], within_ms: int) -> collections.Counter[Any]:
    """Every result of an outer join of rows (side, user, id, ts ms) none of which is late."""
    clicks = [r for r in rows if r[0] == "click"]
    buys = [r for r in rows if r[0] == "buy"]
    out: collections.Counter[Any] = collections.Counter()
    matched = set()
    for _, cu, ci, ct in clicks:
        for _, bu, bi, bt in buys:
            if cu == bu and abs(ct - bt) <= within_ms:
                out[(ci, bi)] += 1
                matched |= {("click", ci), ("buy", bi)}
    out.update((ci, None) for _, _, ci, _ in clicks if ("click", ci) not in matched)
    out.update((None, bi) for _, _, bi, _ in buys if ("buy", bi) not in matched)
    return out


@pytest.mark.parametrize(
    "new_disk",
    [False, pytest.param(True, marks=chaos_only("new-disk"))],
    ids=["same-disk", "new-disk"],
)
async def test_a_kill_9_mid_join_gives_every_join_result_exactly_once(
    uid: str, tmp_path: Path, new_disk: bool
) -> None:
    """The worker is killed mid-join and another takes over: from the same state directory
    (its SQLite plus the changelog's tail), or from a new one (the changelog alone: the rows
    the last watermark row made final are dropped, an outer join's unmatched records emitted
    before it are not emitted again). The join writes no tombstone: its changelog holds
    records stamped with the wall clock, which its time retention counts from."""
    started = time.time() * 1000
    await create_topic(f"join-clicks-{uid}", 4)
    await create_topic(f"join-buys-{uid}", 4)
    rng = random.Random(uid)
    users = [f"user{i}" for i in range(30)]
    # event time moves forward 0.1 s per record, so none is ever late; within 1 s a user's
    # clicks and purchases pair now and then, and many stay unmatched (an outer join)
    rows = [
        (rng.choice(["click", "buy"]), rng.choice(users), i, 1_000_000 + i * 100)
        for i in range(1200)
    ]
    env = {"SKTEST_ID": uid, "STREAMKIT_WORKDIR": str(tmp_path / "state")}
    worker = WorkerProcess("tests.joinapp:app", env, tmp_path / "w1.log").start()
    out = f"join-out-{uid}"
    try:
        await _send(uid, rows[:600])
        await read_all(out, expect=50, within=60)  # the join is under way
        worker.signal(signal.SIGKILL)
        worker.wait(10)
        if new_disk:
            env["STREAMKIT_WORKDIR"] = str(tmp_path / "state2")
        worker = WorkerProcess("tests.joinapp:app", env, tmp_path / "w2.log").start()
        await _send(uid, rows[600:])
        for partition in range(4):  # the watermark passes every record's last chance
            for side in ("click", "buy"):
                flush = orjson.dumps({"id": -1, "ts": 100_000, "user": f"flush-{side}"})
                topic = f"join-{'clicks' if side == 'click' else 'buys'}-{uid}"
                await produce(topic, [flush], keys=[b"flush-" + side.encode()], partition=partition)
        expected = _oracle(rows, 1000)
        await read_all(out, expect=sum(expected.values()), within=120)
        got = _ids(await read_all(out))  # to the end offsets, read_committed
        late = await read_all(f"join-{uid}-clicks-buys-late")
        changelog = await read_all(f"join-{uid}-clicks-buys-changelog")
    finally:
        worker.stop()
    assert late == []
    assert got == expected
    assert changelog and all(r.value is not None for r in changelog), "a tombstone"
    assert all(started - 1000 <= r.timestamp <= time.time() * 1000 for r in changelog)


async def _send(uid: str, rows: list[tuple[str, str, int, int]]) -> None:
    """Both topics in event-time order (one producer), so no record is ever late."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5)
    await producer.start()
    try:
        for side, user, i, ts in rows:
            topic = f"join-{'clicks' if side == 'click' else 'buys'}-{uid}"
            value = orjson.dumps({"id": i, "ts": ts / 1000, "user": user})
            await producer.send(topic, value, key=user.encode())
        await producer.flush()
    finally:
        await producer.stop()
