"""Event time against the real broker: window tables in a worker, watermarks across a key_by
hop (a slow upstream, an idle one), late events routed, a kill -9 in the middle of windows."""

from __future__ import annotations

import asyncio
import collections
import random
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

import streamkit as sk
from streamkit.runtime.dlq import describe
from tests.kafkahelp import (
    WorkerProcess,
    chaos_only,
    committed,
    create_topic,
    end_offsets,
    produce,
    read_all,
    running,
    wait_until,
)
from tests.test_purge import topic_configs


def finals(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def test_window_tables_in_a_worker_emit_final_and_update_results(
    uid: str, tmp_path: Path
) -> None:
    app = sk.App(f"wt-{uid}", workdir=tmp_path, commit_interval=0.2)
    clicks = app.topic(f"wt-clicks-{uid}", partitions=1, timestamp="ts", out_of_orderness=2)
    finals_topic = app.topic(f"wt-final-{uid}", partitions=1)
    updates_topic = app.topic(f"wt-upd-{uid}", partitions=1)
    counts = app.window(
        "counts", sk.tumbling(10), sk.count(), allowed_lateness=1, output=finals_topic
    )
    sums = app.window(
        "sums", sk.hopping(10, every=5), sk.sum_of("n"), emit="update", output=updates_topic
    )

    @app.agent(clicks, state=[counts, sums])
    async def count_clicks(stream: sk.Stream[Any]) -> None:
        async for c in stream:
            counts.add(c["user"])
            sums.add(c["user"], c)

    sequence = [1, 4, 12, 9.5, 14, 8, 25]  # seconds; 8 is late for [0, 10) once 14 is seen
    async with running(app) as worker:
        await produce(
            clicks.name,
            [orjson.dumps({"user": "u", "ts": ts, "n": 1}) for ts in sequence],
            keys=[b"u"] * len(sequence),
        )
        got = finals(await read_all(finals_topic.name, expect=2, within=30))
        late = await read_all(f"wt-{uid}-counts-late", expect=1, within=30)
        updates = finals(await read_all(updates_topic.name, expect=12, within=30))
        assert counts.late_events == 1 and worker.tasks is not None
        await produce(clicks.name, [b'{"user": "u", "n": 1}'], keys=[b"u"])  # no ts
        (no_time,) = await read_all(app.dlq.name, expect=1, within=30)
    assert describe(no_time.headers)["streamkit.error.type"] == "TimestampError"
    assert [(g["key"], g["start"], g["end"], g["count"]) for g in got] == [
        ("u", 0, 10_000, 3),
        ("u", 10_000, 20_000, 2),
    ]
    assert all(g["final"] for g in got)
    (dead,) = late
    info = describe(dead.headers)
    assert info["streamkit.error.type"] == "LateEvent"
    assert "late for window table counts" in info["streamkit.error"]
    assert info["streamkit.source.offset"] == "5" and orjson.loads(dead.value)["ts"] == 8
    # hopping 10 s every 5 s, no lateness, update mode: each event updates its open windows
    # (12 closes [0, 10), so 9.5 and 8 only count in [5, 15))
    by_window = collections.defaultdict(list)
    for u in updates:
        by_window[u["start"]].append(u["sum"])
    assert dict(by_window) == {
        -5_000: [1, 2],
        0: [1, 2],
        5_000: [1, 2, 3, 4],
        10_000: [1, 2],
        20_000: [1],
        25_000: [1],
    }
    assert not any(u["final"] for u in updates)


async def test_a_watermark_after_key_by_waits_for_the_slowest_upstream_but_not_an_idle_one(
    uid: str, tmp_path: Path
) -> None:
    app = sk.App(f"wm-{uid}", workdir=tmp_path, commit_interval=0.2, idle_timeout=2.0)
    clicks = app.topic(f"wm-in-{uid}", partitions=3, timestamp="ts")
    out = app.topic(f"wm-out-{uid}", partitions=1)
    counts = app.window("counts", sk.tumbling(10), sk.count(), output=out)

    @app.agent(app.stream(clicks).key_by("user"), state=[counts])
    async def per_user(stream: sk.Stream[Any]) -> None:
        async for c in stream:
            counts.add(c["user"])

    def events(partition: int, times: list[float]) -> Any:
        return produce(
            clicks.name,
            [orjson.dumps({"user": f"u{partition}", "ts": t}) for t in times],
            partition=partition,
        )

    async with running(app):
        await events(2, [3])  # partition 2 first: it is active, never idle, from the start
        await events(0, [1, 11, 21, 31])
        await events(1, [2, 12, 22, 32])
        # partition 2 is slow: still at 3 s while the others are at 31-32 s; all keep
        # sending (no one is idle)
        slow_events = 1
        for _ in range(12):
            await events(0, [31])
            await events(1, [32])
            await events(2, [3])
            slow_events += 1
            await asyncio.sleep(0.3)
        assert await read_all(out.name) == [], "a window closed before the slow upstream passed"
        await events(2, [15])  # the slow one passes 10 s: [0, 10) closes, nothing later
        first = finals(await read_all(out.name, expect=3, within=30))[:3]
        assert {(f["key"], f["start"]) for f in first} == {("u0", 0), ("u1", 0), ("u2", 0)}
        assert {f["key"]: f["count"] for f in first} == {"u0": 1, "u1": 1, "u2": slow_events}
        # now partition 2 goes quiet while the others go on: after idle_timeout it is left
        # out, and the others' watermark (31 s) closes [10, 20) and [20, 30)
        for _ in range(20):
            await events(0, [31])
            await events(1, [32])
            if len(await read_all(out.name)) >= 8:
                break
            await asyncio.sleep(0.3)
        rest = finals(await read_all(out.name, expect=3 + 5, within=30))
    windows = {(f["key"], f["start"]): f["count"] for f in rest}
    assert windows[("u0", 10_000)] == 1 and windows[("u0", 20_000)] == 1
    assert not any(start >= 30_000 for _, start in windows), "[30, 40) closed too early"
    assert windows[("u1", 10_000)] == 1 and windows[("u1", 20_000)] == 1
    assert windows[("u2", 10_000)] == 1
    assert len(rest) == 8, "a window was emitted twice"


@pytest.mark.parametrize(
    "new_disk",
    [False, pytest.param(True, marks=chaos_only("new-disk"))],
    ids=["same-disk", "new-disk"],
)
async def test_a_kill_9_mid_window_gives_every_final_result_once_and_every_late_event_once(
    uid: str, tmp_path: Path, new_disk: bool
) -> None:
    """The worker is killed mid-window and another takes over, on its state directory or on
    a new one (the changelog alone: the closed windows' rows, which got no tombstone, are
    dropped by the watermark row replayed with them)."""
    await create_topic(f"win-in-{uid}", 4)
    rng = random.Random(uid)
    users = [f"user{i}" for i in range(12)]
    # event time moves forward 0.05 s per event: 3000 events span 150 s (15 windows)
    on_time: list[dict[str, Any]] = [
        {"user": rng.choice(users), "ts": 1000 + i * 0.05, "id": i} for i in range(3000)
    ]
    env = {"SKTEST_ID": uid, "STREAMKIT_WORKDIR": str(tmp_path / "state")}
    worker = WorkerProcess("tests.windowapp:app", env, tmp_path / "w1.log").start()
    try:
        await _send(uid, on_time[:1500])
        await wait_until(
            lambda: "open, " in worker.log(), within=60, what="the worker to open its windows"
        )
        await read_all(f"win-out-{uid}", expect=10, within=60)  # some windows have closed
        worker.signal(signal.SIGKILL)
        worker.wait(10)
        if new_disk:
            env["STREAMKIT_WORKDIR"] = str(tmp_path / "new-state")
        worker = WorkerProcess("tests.windowapp:app", env, tmp_path / "w2.log").start()
        await _send(uid, on_time[1500:])
        # once every partition is past 1120 s, these are late for good (lateness 20 s)
        outputs = await read_all(f"win-out-{uid}", expect=12 * 10, within=90)
        late: list[dict[str, Any]] = [
            {"user": rng.choice(users), "ts": 1000 + k, "id": -1 - k} for k in range(5)
        ]
        await _send(uid, late)
        await _send(uid, [{"user": "flush", "ts": 5000, "id": -100}] * 4, spread=True)
        late_records = await read_all(f"win-late-{uid}", expect=len(late), within=60)
        expected = collections.Counter(
            (e["user"], int(e["ts"] * 1000) // 10_000 * 10_000) for e in on_time
        )
        outputs = await read_all(f"win-out-{uid}", expect=len(expected), within=90)
        # count windows of ten per user, over every event sent (count windows have no late)
        per_user = collections.Counter(e["user"] for e in on_time + late)
        per_user["flush"] = 4
        tens = finals(
            await read_all(f"win-tens-{uid}", expect=sum(n // 10 for n in per_user.values()))
        )
        changelog = f"win-{uid}-counts-changelog"
        config = (await topic_configs([changelog]))[changelog]
        stored = await read_all(changelog)
    finally:
        worker.stop()
    # closed tumbling windows get no tombstone: time retention of 10 s + 20 s + a day
    assert config["cleanup.policy"] == "compact,delete"
    assert config["retention.ms"] == str(10_000 + 20_000 + 86_400_000)
    assert stored and all(r.value is not None for r in stored)
    got = [(o["key"], o["start"]) for o in finals(outputs)]
    assert len(got) == len(set(got)), "a final window result was emitted twice"
    assert {(o["key"], o["start"]): o["count"] for o in finals(outputs)} == dict(expected)
    late_ids = sorted(int(orjson.loads(r.value)["id"]) for r in late_records)
    assert late_ids == sorted(int(e["id"]) for e in late)
    # each user's complete count windows once, numbered 0, 10, 20...; each event in one
    starts = collections.defaultdict(list)
    for t in tens:
        starts[t["key"]].append(t["start"])
    assert {u: sorted(s) for u, s in starts.items()} == {
        u: list(range(0, n - n % 10, 10)) for u, n in per_user.items() if n >= 10
    }
    assert all(t["count"] == 10 == len(t["collect"]) for t in tens)
    ids = [i for t in tens for i in t["collect"]]
    assert len(ids) == len(set(ids)), "an event was counted in two count windows"
    user_of = {e["id"]: e["user"] for e in on_time + late}
    assert all(user_of[i] == t["key"] for t in tens for i in t["collect"])


async def _send(uid: str, rows: list[dict[str, Any]], spread: bool = False) -> None:
    if not spread:
        await produce(f"win-in-{uid}", [orjson.dumps(r) for r in rows])
        return
    for partition, row in enumerate(rows):
        await produce(f"win-in-{uid}", [orjson.dumps(row)], partition=partition)


async def test_timers_fire_once_across_a_kill_9(uid: str, tmp_path: Path) -> None:
    topic = f"tm-in-{uid}"
    await create_topic(topic, 2)
    env = {"SKTEST_ID": uid, "STREAMKIT_WORKDIR": str(tmp_path / "state")}
    worker = WorkerProcess("tests.timerapp:app", env, tmp_path / "t1.log").start()
    users = [f"u{i}" for i in range(10)]
    try:
        await wait_until(lambda: "open, " in worker.log(), within=60, what="the worker to start")
        await produce(
            topic,
            [orjson.dumps({"user": u, "ts": 100, "id": i}) for i, u in enumerate(users)],
            keys=[u.encode() for u in users],
        )
        ends = await end_offsets(topic)
        await wait_until(
            lambda: _committed_to(f"tm-{uid}", topic, ends), within=30, what="the commit"
        )
        worker.signal(signal.SIGKILL)  # timers set and committed, none due yet
        worker.wait(10)
        assert await read_all(f"tm-out-{uid}") == []
        worker = WorkerProcess("tests.timerapp:app", env, tmp_path / "t2.log").start()
        # processing-time timers fire 4 s after they were set, on the restarted worker;
        # event time moves to 200 s on both partitions: the event-time ones fire too
        for partition in (0, 1):
            tick = orjson.dumps({"user": "tick", "ts": 200, "id": -1})
            await produce(topic, [tick], partition=partition)
        fired = finals(await read_all(f"tm-out-{uid}", expect=2 * len(users), within=60))
    finally:
        worker.stop()
    got = collections.Counter((f["kind"], f["key"], f["payload"]) for f in fired)
    expected = {(kind, u, i): 1 for i, u in enumerate(users) for kind in ("event", "processing")}
    assert dict(got) == expected


async def _committed_to(group: str, topic: str, ends: dict[int, int]) -> bool:
    return await committed(group, topic) == ends
