"""Rows the watermark makes final (a join's buffer, a tumbling or hopping window's rows) wait in
memory and the changelog, not in SQLite (`state/deferred.py`): checked in the testing kit with
a crash (no final checkpoint) or a stop after every event, whose restore replays them from the
changelog; every result comes once, as in a run without restarts."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import streamkit as sk
from streamkit.state.stream_join import WATERMARK_ROW
from streamkit.state.window_table import WATERMARK_ROW as WINDOW_WATERMARK
from streamkit.testing import AsyncTestDriver
from streamkit.windows import Tumbling
from tests.test_joins import EVENTS, EXPECTED, shop


def rows_stored(driver: AsyncTestDriver, app: sk.App, marker: bytes) -> int:
    """Rows of the stage's one table in the SQLite files, but the watermark row (read beside
    the open stores)."""
    total = 0
    for path in (driver.workdir / app.id).glob("*/*.sqlite"):
        with contextlib.closing(sqlite3.connect(path)) as db:
            names = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in [n for n in names if n not in ("identity", "offsets", "topics")]:
                query = f'SELECT count(*) FROM "{table}" WHERE k != ?'
                total += db.execute(query, (marker,)).fetchone()[0]
    return total


@pytest.mark.parametrize("crash", [True, False], ids=["crash", "stop"])
@pytest.mark.parametrize("how", ["inner", "left", "outer"])
async def test_a_joins_rows_stay_out_of_sqlite_and_a_restart_replays_them(
    how: str, crash: bool, tmp_path: Path
) -> None:
    """A crash, or a stop: the task's last checkpoint leaves them out of SQLite too (its
    partition's next owner, usually another worker, replays them from the changelog)."""
    app, _, _, out = shop(how, tmp_path)
    async with AsyncTestDriver(app) as driver:
        got = []
        for topic, key, ts in EVENTS:
            await driver.send(topic, {"id": key, "ts": ts}, key=key)
            await driver.checkpoint()
            first = (topic, key) == ("orders", "A")
            if first:
                assert rows_stored(driver, app, WATERMARK_ROW) == 0  # A waits in memory only
            got += driver.read(out)
            await driver.restart(crash=crash)
            if first:  # A came back from the changelog, not from the store
                assert sum(t.state.replayed for t in driver._tasks() if t.state) >= 1
        await driver.advance_watermark(5661)  # D and E final: left/outer emit them
        got += driver.read(out)
        pairs = sorted(
            (r.key, r.value[0] and r.value[0]["ts"], r.value[1] and r.value[1]["ts"]) for r in got
        )
        expected: list[tuple[str, Any, Any]] = [
            (key, left and left[1], right and right[1]) for key, left, right, _ in EXPECTED[how]
        ]
        if how != "inner":  # D and E, unmatched: once each, after the crashes too
            expected.append(("D", 5000, None))
        if how == "outer":
            expected.append(("E", None, 5000))
        assert pairs == sorted(expected)


# (user, event time s): minutes 0..3 of two users, out of order within the minute's lateness
CLICKS = [("a", 10), ("b", 20), ("a", 50), ("a", 70), ("b", 65), ("a", 130), ("b", 200)]


async def window_results(tmp_path: Path, kind: Any, emit: str, crash: bool) -> list[Any]:
    app = sk.App(f"deferred-{emit}", workdir=tmp_path)
    clicks = app.topic("clicks", partitions=1, timestamp="ts", out_of_orderness=30)
    out = app.topic("counts", partitions=1)
    counts = app.window("per-user", kind, sk.count(), emit=emit, output=out)

    @app.agent(clicks, state=[counts])
    async def tally(stream: sk.Stream[dict[str, Any]]) -> None:
        async for click in stream:
            counts.add(click["user"])

    marker = counts.table.key_codec.encode(WINDOW_WATERMARK)
    got: list[Any] = []
    async with AsyncTestDriver(app) as driver:
        for n, (user, ts) in enumerate(CLICKS):
            await driver.send(clicks, {"user": user, "ts": ts}, key=user)
            await driver.checkpoint()
            if n == 0:
                assert rows_stored(driver, app, marker) == 0  # a's minute waits in memory
            got += driver.read_values(out)
            if crash:
                await driver.restart(crash=True)
        await driver.advance_watermark(1000)
        got += driver.read_values(out)
    return sorted(got, key=lambda v: (v["start"], v["key"], v["count"]))


@pytest.mark.parametrize("emit", ["final", "update"])
@pytest.mark.parametrize("kind", [sk.tumbling(60), sk.hopping(60, 30)], ids=["tumbling", "hop"])
async def test_a_windows_rows_stay_out_of_sqlite_and_a_crash_replays_them(
    tmp_path: Path, kind: Any, emit: str
) -> None:
    crashed = await window_results(tmp_path / "crashed", kind, emit, crash=True)
    calm = await window_results(tmp_path / "calm", kind, emit, crash=False)
    assert crashed == calm
    if emit == "final":  # each window once, a's first minute and b's last among them
        windows = [(v["key"], v["start"] // 1000) for v in calm]
        assert len(windows) == len(set(windows)) and {("a", 0), ("b", 180)} <= set(windows)
    else:  # every event updates each of its windows (none was late)
        assert len(calm) == len(CLICKS) * (1 if isinstance(kind, Tumbling) else 2)


@pytest.mark.parametrize("lose_state", [False, True], ids=["store", "changelog"])
async def test_a_restarted_joins_rows_are_cached_so_its_first_matches_read_no_sqlite(
    lose_state: bool, tmp_path: Path
) -> None:
    """At a task's start the join's live rows are cached as they are loaded (restored from
    the changelog, or read from the store): a match finds its partner in the cache, where a
    cold cache read it back from SQLite (a miss)."""
    app, _, _, out = shop("inner", tmp_path)
    async with AsyncTestDriver(app) as driver:
        for n in range(50):  # 50 orders waiting for their payments
            await driver.send("orders", {"id": f"o{n}", "ts": 1000 + n}, key=f"o{n}")
        await driver.checkpoint()
        await driver.restart(lose_state=lose_state)
        [part] = [t.state.partitions["paid"] for t in driver._tasks() if t.state and t.tables]
        misses = part.misses  # (the load's read of the watermark row)
        for n in range(50):
            await driver.send("payments", {"id": f"o{n}", "ts": 1100 + n}, key=f"o{n}")
        assert len(driver.read(out)) == 50
        assert part.misses == misses  # every partner came from the cache
