"""Aggregations and count windows without a broker: the real window partitions (over a real
SQLite store) against brute-force oracles that compute each window's members directly, for
every window kind; the reduce that builds a list across session merges; count windows over
the testing kit, restored from their changelog."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import streamkit as sk
from streamkit.count_windows import SlidingCount, TumblingCount, completed_by, count_windows_of
from streamkit.testing import TestDriver
from streamkit.windows import Aggregation, Hopping, Session, Sliding, Tumbling
from tests.test_windows_logic import events_strategy, run_windows

Event = tuple[int, str, int]
Member = tuple[int, int, int]  # (ts, value, arrival)


def test_a_list_building_reduce_gets_its_own_merge_for_sessions(tmp_path: Path) -> None:
    """The issue's case: 'p','a','y' and 'h','o','m','e' are two sessions (gap 5 s) until
    'cart' at 6 s bridges them. With merge= the merged list is flat and in time order; without
    it, a reduce from `initial` cannot merge (it nested the lists), and is refused."""

    def append(acc: list[str], v: str) -> list[str]:
        return [*acc, v]

    times = [0, 1_000, 2_000, 10_000, 11_000, 12_000, 13_000, 6_000]
    letters = ["p", "a", "y", "h", "o", "m", "e", "cart"]
    events: list[tuple[int, str, Any]] = [(t, "u", v) for t, v in zip(times, letters, strict=True)]
    agg = sk.reduce(append, initial=[], merge=lambda a, b: a + b)
    task, _ = run_windows(tmp_path, Session(5_000), agg, events, 20_000, 0)
    assert [o["reduce"] for o in task.out] == [["p", "a", "y", "cart", "h", "o", "m", "e"]]
    app = sk.App("refused")
    with pytest.raises(sk.ConfigError, match="merge="):
        app.window("w", sk.session(5), sk.reduce(append, initial=[]))
    with pytest.raises(sk.ConfigError, match="merge="):
        app.window("w2", sk.session(5), sk.aggregator(list, append))
    app.window("w3", sk.tumbling(5), sk.reduce(append, initial=[]))  # no merge needed


def members_oracle(
    kind: Any, events: list[Event], ooo: int, lateness: int
) -> dict[tuple[Any, ...], list[Member]]:
    """The members of every window that closes, by direct simulation, keyed like the output:
    (key, start) for tumbling and hopping, (key, end) for sliding windows, (key, start, end)
    for sessions (a session closed and emitted is gone: a later event within the lateness
    of its own session may start another at the same time, as in Flink)."""
    found: dict[tuple[Any, ...], list[Member]] = collections.defaultdict(list)
    wms, top = [], None
    for ts, _, _ in events:
        top = ts if top is None else max(top, ts)
        wms.append(top - ooo)
    if isinstance(kind, Tumbling | Hopping):
        for i, (ts, key, v) in enumerate(events):
            for s, e in kind.windows_for(ts):
                if e + lateness > wms[i]:
                    found[(key, s)].append((ts, v, i))
        return found
    if isinstance(kind, Sliding):
        on_time = [i for i, (ts, _, _) in enumerate(events) if ts + lateness > wms[i]]
        for i in on_time:
            t, key, _ = events[i]
            closes = next((j for j, wm in enumerate(wms) if wm >= t + lateness), len(events))
            found[(key, t)] = [
                (events[j][0], events[j][2], j)
                for j in on_time
                if j < closes and events[j][1] == key and t - kind.size_ms <= events[j][0] <= t
            ]
        return found
    gap = kind.gap_ms  # sessions: [start, end, members] per key
    sessions: dict[str, list[list[Any]]] = collections.defaultdict(list)
    for i, (ts, key, v) in enumerate(events):
        for k, ss in sessions.items():
            for sess in [x for x in ss if x[1] + lateness <= wms[i]]:
                found[(k, sess[0], sess[1])] = sess[2]
                ss.remove(sess)
        touching = [x for x in sessions[key] if x[0] < ts + gap and ts < x[1]]
        start = min([ts, *(x[0] for x in touching)])
        end = max([ts + gap, *(x[1] for x in touching)])
        if end + lateness <= wms[i]:
            continue
        for x in touching:
            sessions[key].remove(x)
        sessions[key].append([start, end, [m for x in touching for m in x[2]] + [(ts, v, i)]])
    for k, ss in sessions.items():
        for sess in ss:
            found[(k, sess[0], sess[1])] = sess[2]
    return found


def expected_fields(members: list[Member]) -> dict[str, Any]:
    """What every aggregation gives for a window's members, by brute force."""
    by_time = sorted(members, key=lambda m: (m[0], m[2]))  # event time, then arrival
    values = [v for _, v, _ in members]
    return {
        "count": len(members),
        "mean": sum(values) / len(values),
        "first": by_time[0][1],
        "last": by_time[-1][1],
        "early": [v for _, v, _ in by_time[:3]],
        "recent": [v for _, v, _ in by_time[-3:]],
        "bag": sorted(values),
        "spread": max(values) - min(values),
    }


def every_aggregation() -> Aggregation:
    return sk.aggregate(
        sk.count(),
        sk.mean_of(),
        sk.first_of(),
        sk.last_of(),
        early=sk.collect(limit=3),
        recent=sk.collect(limit=3, keep="last"),
        bag=sk.aggregator(list, lambda a, v: [*a, v], lambda a, b: a + b, sorted),
        spread=sk.aggregator(
            lambda: None,
            lambda a, v: [v, v] if a is None else [min(a[0], v), max(a[1], v)],
            lambda a, b: [min(a[0], b[0]), max(a[1], b[1])],
            lambda a: a[1] - a[0],
        ),
    )


@example(  # a session emitted, then another at the same start from events within lateness
    events=[(0, "a", 0), (300, "a", 0), (25, "a", 0), (0, "a", 0)],
    ooo=0,
    lateness=125,
    kind=Session(175),
)
@settings(max_examples=120, deadline=None)
@given(
    events=events_strategy,
    ooo=st.integers(0, 12).map(lambda t: t * 25),
    lateness=st.integers(0, 6).map(lambda t: t * 25),
    kind=st.sampled_from(
        [Tumbling(100), Hopping(200, 50), Session(50), Session(175), Sliding(100)]
    ),
)
def test_every_aggregation_on_every_window_kind_matches_brute_force(
    tmp_path_factory: Any, events: list[Event], ooo: int, lateness: int, kind: Any
) -> None:
    task, _ = run_windows(
        tmp_path_factory.mktemp("a"), kind, every_aggregation(), events, ooo, lateness
    )
    at = (
        ["end"]
        if isinstance(kind, Sliding)
        else ["start", "end"]
        if isinstance(kind, Session)
        else ["start"]
    )
    fields = expected_fields([(0, 0, 0)])
    got = {(o["key"], *(o[a] for a in at)): {f: o[f] for f in fields} for o in task.out}
    assert len(got) == len(task.out), "a window was emitted twice"
    expected = members_oracle(kind, events, ooo, lateness)
    assert got == {w: expected_fields(m) for w, m in expected.items()}


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 200), size=st.integers(1, 9), every=st.integers(1, 9))
def test_count_window_assignment_matches_brute_force(n: int, size: int, every: int) -> None:
    sliding = SlidingCount(size, min(every, size))
    ends = range(sliding.every, n + size + 2, sliding.every)
    windows = [(max(0, e - size), e) for e in ends]
    assert count_windows_of(sliding, n) == [(s, e) for s, e in windows if s <= n < e]
    assert completed_by(sliding, n) == next(((s, e) for s, e in windows if e == n + 1), None)
    tumbling = TumblingCount(size)
    blocks = [(s, s + size) for s in range(0, n + size + 1, size)]
    assert count_windows_of(tumbling, n) == [(s, e) for s, e in blocks if s <= n < e]
    assert completed_by(tumbling, n) == next(((s, e) for s, e in blocks if e == n + 1), None)


def count_oracle(kind: Any, events: list[Event]) -> list[tuple[str, int, int, list[Member]]]:
    """Every complete count window, in the order its last event arrived."""
    seen: dict[str, list[Member]] = collections.defaultdict(list)
    done = []
    for i, (ts, key, v) in enumerate(events):
        mine = seen[key]
        mine.append((ts, v, i))
        n = len(mine)
        if isinstance(kind, TumblingCount) and n % kind.size == 0:
            done.append((key, n - kind.size, n, mine[n - kind.size :]))
        if isinstance(kind, SlidingCount) and n % kind.every == 0:
            start = max(0, n - kind.size)
            done.append((key, start, n, mine[start:]))
    return done


@settings(max_examples=80, deadline=None)
@given(
    events=events_strategy,
    kind=st.sampled_from(
        [TumblingCount(1), TumblingCount(3), SlidingCount(3, 1), SlidingCount(4, 2)]
    ),
)
def test_count_windows_match_brute_force(
    tmp_path_factory: Any, events: list[Event], kind: Any
) -> None:
    task, _ = run_windows(tmp_path_factory.mktemp("c"), kind, every_aggregation(), events, 0, 0)
    got = [(o["key"], o["start"], o["end"], o) for o in task.out]
    expected = count_oracle(kind, events)
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    for (_, _, _, out), (_, _, _, members) in zip(got, expected, strict=True):
        assert {f: out[f] for f in expected_fields(members)} == expected_fields(members)
        assert out["final"] is True
    assert task.late == []  # count windows have no late events


def test_a_tumbling_count_window_in_update_mode_says_when_it_is_complete(tmp_path: Path) -> None:
    events = [(5_000, "u", 1), (1_000, "u", 2), (9_000, "v", 3), (2_000, "u", 4), (0, "u", 5)]
    task, _ = run_windows(tmp_path, TumblingCount(3), sk.sum_of(), events, 0, 0, "update")
    assert [(o["key"], o["start"], o["end"], o["sum"], o["final"]) for o in task.out] == [
        ("u", 0, 3, 1, False),
        ("u", 0, 3, 3, False),
        ("v", 0, 3, 3, False),
        ("u", 0, 3, 7, True),
        ("u", 3, 6, 5, False),
    ]
    with pytest.raises(sk.ConfigError, match="emit='final'"):
        sk.App("x").window("w", sk.sliding_count(3), sk.count(), emit="update")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(sk.ConfigError, match="whole number"):
            sk.tumbling_count(bad)  # type: ignore[arg-type]
    with pytest.raises(sk.ConfigError, match="every must be <= size"):
        sk.sliding_count(2, every=3)
    app = sk.App("count-late")
    with pytest.raises(sk.ConfigError, match="no late events"):
        app.window("w", sk.tumbling_count(3), sk.count(), late_topic=app.topic("late"))


def test_count_windows_are_restored_from_their_changelog() -> None:
    """Three clicks of five per user window; the open window's count survives a restart from
    the changelog alone (the SQLite files deleted), and the window completes after it."""
    app = sk.App("kit-count")
    clicks = app.topic("clicks", partitions=2, timestamp="ts")
    out = app.topic("per-3")
    per3 = app.window(
        "per-3", sk.tumbling_count(3), sk.aggregate(sk.count(), sk.collect("page")), output=out
    )

    @app.agent(app.stream(clicks).key_by("user"), state=[per3])
    async def tally(stream: sk.Stream[dict[str, Any]]) -> None:
        async for c in stream:
            per3.add(c["user"], c)

    def tens(start: int, pages: list[str]) -> dict[str, Any]:
        return {
            "key": "ann",
            "start": start,
            "end": start + 3,
            "count": 3,
            "collect": pages,
            "final": True,
        }

    with TestDriver(app) as driver:
        for i, page in enumerate("abcde"):
            driver.send(clicks, {"user": "ann", "page": page, "ts": 100 - i})
        assert driver.read_values(out) == [tens(0, ["c", "b", "a"])]
        driver.restart(lose_state=True)
        assert driver.window("per-3").get("ann", 3) == [2, [[96_000, "e"], [97_000, "d"]]]
        driver.send(clicks, {"user": "ann", "page": "f", "ts": 1})
        assert driver.read_values(out) == [tens(3, ["f", "e", "d"])]


class Visit(BaseModel):
    user: str
    page: str
    ts: float


def test_models_are_kept_as_their_json_and_emitted_the_same_after_a_restore() -> None:
    """first_of and collect of pydantic values keep them as JSON (dicts): the window's result
    is the same whether or not a restore happened while it was open; a model in a result (a
    reduce's accumulator) is written as its JSON."""

    def keep(acc: Any, v: Visit) -> Visit:  # a reduce whose accumulator is a model
        return v

    app = sk.App("kit-models")
    visits = app.topic("visits", value_type=Visit, timestamp="ts")
    out = app.topic("firsts")
    firsts = app.window(
        "firsts",
        sk.tumbling(60),
        {"first": sk.first_of(), "collect": sk.collect("page", limit=2), "latest": sk.reduce(keep)},
        output=out,
    )

    @app.agent(visits, state=[firsts])
    async def track(stream: sk.Stream[Visit]) -> None:
        async for v in stream:
            firsts.add(v.user, v)

    with TestDriver(app) as driver:
        driver.send(visits, Visit(user="ann", page="b", ts=10), key="ann")
        driver.restart(lose_state=True)
        driver.send(visits, Visit(user="ann", page="a", ts=5), key="ann")
        driver.advance_watermark(120)
        assert driver.read_values(out) == [
            {
                "key": "ann",
                "start": 0,
                "end": 60_000,
                "first": {"user": "ann", "page": "a", "ts": 5.0},
                "collect": ["a", "b"],
                "latest": {"user": "ann", "page": "a", "ts": 5.0},
                "final": True,
            }
        ]
