"""Window and watermark logic without a broker: window assignment, the watermark tracker, and
the real WindowPartition (over a real SQLite store) against a brute-force oracle."""

from __future__ import annotations

import collections
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.eventtime import NO_WATERMARK, WatermarkTracker, control_headers, read_control
from streamkit.state.store import open_store
from streamkit.state.table import TablePartition
from streamkit.state.window_open import open_window
from streamkit.windows import Hopping, Session, Sliding, Tumbling


def test_tumbling_and_hopping_windows_contain_their_events() -> None:
    assert Tumbling(10).windows_for(0) == [(0, 10)]
    assert Tumbling(10).windows_for(19) == [(10, 20)]
    assert Hopping(10, 5).windows_for(12) == [(5, 15), (10, 20)]
    assert Hopping(10, 5).windows_for(10) == [(5, 15), (10, 20)]
    assert Hopping(30, 10).windows_for(29) == [(0, 30), (10, 40), (20, 50)]


@settings(deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([(10, 10), (10, 5), (30, 10), (60, 20)]))
def test_hopping_windows_are_exactly_those_containing_the_time(ts: int, shape: Any) -> None:
    size, step = shape
    expected = [(s, s + size) for s in range(ts - size + 1, ts + 1) if s % step == 0]
    assert Hopping(size, step).windows_for(ts) == expected


def test_a_watermark_after_a_hop_is_the_minimum_of_active_upstreams() -> None:
    wm = WatermarkTracker(out_of_orderness_ms=0, upstreams=3)
    assert not wm.from_upstream(0, 100, False)
    assert not wm.from_upstream(1, 200, False)
    assert wm.current == NO_WATERMARK  # upstream 2 not heard from yet
    assert wm.from_upstream(2, 50, False) and wm.current == 50
    assert wm.from_upstream(2, 150, True) and wm.current == 100  # 2 idle: min(100, 200)
    assert not wm.from_upstream(2, 120, False)  # back, behind: the watermark never goes back
    assert wm.current == 100
    assert wm.from_upstream(0, 300, True) and wm.current == 150  # min(1: 200, 2: 150)
    assert not wm.from_upstream(1, 300, True) and wm.current == 150  # 2 alone: 150
    assert wm.from_upstream(2, 400, True) and wm.current == 300  # all idle: min of all
    source = WatermarkTracker(out_of_orderness_ms=5)
    assert source.observe(100) and source.current == 95
    assert not source.observe(90) and source.current == 95
    assert read_control(control_headers(2, 123, True)) == (2, 123, True)
    assert read_control([("other", b"x")]) is None and read_control(()) is None


class FakeTask:
    """What a WindowPartition needs from its task: event time, a collector, late routing."""

    def __init__(self) -> None:
        self.ts = 0
        self.out: list[dict[str, Any]] = []
        self.late: list[int] = []
        self.collector = self

    def event_time(self) -> int:
        return self.ts

    def append(self, topic: str, key: Any, value: Any, **kw: Any) -> bool:
        self.out.append(orjson.loads(value))
        return False

    def keyed(self, topic: str) -> Callable[[Any, Any, int | None], bool]:
        return lambda key, value, timestamp_ms: self.append(topic, key, value)

    def route_late(self, topic: str, reason: str) -> None:
        self.late.append(self.ts)


def run_windows(
    tmp: Path,
    kind: Any,
    agg: Any,
    events: list[tuple[int, str, int]],
    ooo: int,
    lateness: int,
    emit: str = "final",
) -> tuple[FakeTask, Any]:
    app = sk.App("logic")
    out = app.topic("out")
    wt = app.window("w", kind, agg, emit=emit, allowed_lateness=lateness / 1000, output=out)
    store = open_store(tmp / f"{len(list(tmp.iterdir()))}.sqlite", {"t": "1"}, ["w"])
    task = FakeTask()
    rows = TablePartition(wt.table, 0, store, 50, lambda: None)
    part = open_window(wt, rows, task)  # type: ignore[arg-type]
    tracker = WatermarkTracker(ooo)
    for ts, key, value in events:
        task.ts = ts
        if tracker.observe(ts):
            part.advance(tracker.current)
        part.add(key, value, None)
    part.advance(2**62)  # the end of time: every window closes
    store.close()
    return task, part


def oracle(
    kind: Any, agg: str, events: list[tuple[int, str, int]], ooo: int, lateness: int
) -> tuple[dict[tuple[str, int], int], list[int]]:
    results: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
    late = []
    top = None
    for ts, key, value in events:
        top = ts if top is None else max(top, ts)
        wm = top - ooo
        open_windows = [s for s, e in kind.windows_for(ts) if e + lateness > wm]
        if not open_windows:
            late.append(ts)
        for s in open_windows:
            results[(key, s)].append(value)
    folds: dict[str, Callable[[list[int]], int]] = {"count": len, "sum": sum, "max": max}
    fold = folds[agg]
    return {k: fold(v) for k, v in results.items()}, late


# times on a 25 ms grid, so events often fall exactly on window and watermark boundaries
events_strategy = st.lists(
    st.tuples(
        st.integers(0, 80).map(lambda t: t * 25),
        st.sampled_from(["a", "b", "c"]),
        st.integers(-50, 50),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(
    events=events_strategy,
    ooo=st.integers(0, 12).map(lambda t: t * 25),
    lateness=st.integers(0, 12).map(lambda t: t * 25),
    kind=st.sampled_from([Tumbling(100), Tumbling(250), Hopping(200, 50), Hopping(300, 100)]),
    agg=st.sampled_from(["count", "sum", "max"]),
)
def test_final_window_results_match_a_brute_force_oracle(
    tmp_path_factory: Any,
    events: list[tuple[int, str, int]],
    ooo: int,
    lateness: int,
    kind: Any,
    agg: str,
) -> None:
    aggregation = {"count": sk.count(), "sum": sk.sum_of(), "max": sk.max_of()}[agg]
    task, _ = run_windows(tmp_path_factory.mktemp("w"), kind, aggregation, events, ooo, lateness)
    expected, late = oracle(kind, agg, events, ooo, lateness)
    got = {(o["key"], o["start"]): o[agg] for o in task.out}
    assert len(got) == len(task.out), "a window was emitted twice"
    assert got == expected
    assert task.late == late
    assert all(o["final"] for o in task.out)


def test_a_known_out_of_order_sequence_tumbling_count(tmp_path: Path) -> None:
    # 10 s windows, 2 s out-of-orderness, 1 s allowed lateness (times in ms)
    events = [
        (1_000, "u", 1),
        (4_000, "u", 1),
        (12_000, "u", 1),  # wm 10 s: [0,10) still open
        (9_500, "u", 1),  # out of order but on time: counted in [0,10)
        (14_000, "u", 1),  # wm 12 s >= 10 + 1: [0,10) closes with 3
        (8_000, "u", 1),  # late: [0,10) is closed
        (25_000, "u", 1),  # wm 23 s: [10,20) closes with 2
    ]
    task, _ = run_windows(tmp_path, Tumbling(10_000), sk.count(), events, 2_000, 1_000)
    assert [(o["start"], o["count"]) for o in task.out] == [(0, 3), (10_000, 2), (20_000, 1)]
    assert task.late == [8_000]


def test_a_window_closes_exactly_when_the_watermark_reaches_its_end_plus_lateness(
    tmp_path: Path,
) -> None:
    events = [(1_000, "u", 1), (10_999, "u", 1), (9_999, "u", 1), (11_000, "u", 1)]
    task, _ = run_windows(tmp_path, Tumbling(10_000), sk.count(), events, 0, 1_000)
    # at 10 999 the watermark is 1 ms short of 10 000 + 1 000: 9 999 is still on time
    assert [(o["start"], o["count"]) for o in task.out] == [(0, 2), (10_000, 2)]
    events += [(5_000, "u", 1)]  # after 11 000 the window [0, 10 000) is closed
    task, _ = run_windows(tmp_path, Tumbling(10_000), sk.count(), events, 0, 1_000)
    assert task.late == [5_000]


def test_update_mode_emits_every_change_and_purges_on_close(tmp_path: Path) -> None:
    events = [(1_000, "u", 5), (2_000, "v", 1), (3_000, "u", 7), (30_000, "u", 1)]
    task, part = run_windows(tmp_path, Tumbling(10_000), sk.sum_of(), events, 0, 0, "update")
    assert [(o["key"], o["start"], o["sum"]) for o in task.out] == [
        ("u", 0, 5),
        ("v", 0, 1),
        ("u", 0, 12),
        ("u", 30_000, 1),
    ]
    assert not any(o["final"] for o in task.out)
    assert part.open == {}  # every window closed at the end of time, its rows deleted


def session_oracle(
    gap: int, events: list[tuple[int, str, int]], ooo: int, lateness: int
) -> tuple[dict[tuple[str, int, int], int], list[int]]:
    """Sessions by direct simulation: lists of [start, end, count] per key; the closed ones
    keyed by (key, start, end) (one closed and emitted is gone: a later event within the
    lateness of its own session may start another at the same time)."""
    sessions: dict[str, list[list[int]]] = collections.defaultdict(list)
    closed: dict[tuple[str, int, int], int] = {}
    late = []
    top = None
    for ts, key, _ in events:
        top = ts if top is None else max(top, ts)
        wm = top - ooo
        for k, ss in sessions.items():  # close what the watermark passed
            for sess in [x for x in ss if x[1] + lateness <= wm]:
                closed[(k, sess[0], sess[1])] = sess[2]
                ss.remove(sess)
        touching = [x for x in sessions[key] if x[0] < ts + gap and ts < x[1]]
        start = min([ts, *(x[0] for x in touching)])
        end = max([ts + gap, *(x[1] for x in touching)])
        if end + lateness <= wm:
            late.append(ts)
            continue
        for x in touching:
            sessions[key].remove(x)
        sessions[key].append([start, end, 1 + sum(x[2] for x in touching)])
    for k, ss in sessions.items():
        for sess in ss:
            closed[(k, sess[0], sess[1])] = sess[2]
    return closed, late


@settings(max_examples=150, deadline=None)
@given(
    events=events_strategy,
    ooo=st.integers(0, 12).map(lambda t: t * 25),
    lateness=st.integers(0, 12).map(lambda t: t * 25),
    gap=st.sampled_from([50, 100, 175]),
)
def test_session_windows_match_a_direct_simulation(
    tmp_path_factory: Any,
    events: list[tuple[int, str, int]],
    ooo: int,
    lateness: int,
    gap: int,
) -> None:
    task, _ = run_windows(
        tmp_path_factory.mktemp("s"), Session(gap), sk.count(), events, ooo, lateness
    )
    expected, late = session_oracle(gap, events, ooo, lateness)
    got = {(o["key"], o["start"], o["end"]): o["count"] for o in task.out}
    assert len(got) == len(task.out), "a session was emitted twice"
    assert got == expected
    assert task.late == late


def test_a_late_event_can_bridge_two_sessions(tmp_path: Path) -> None:
    # gap 15 s: sessions [0, 20) and [30, 50) for "u"; 17 arrives out of order, joins them
    events = [(0, "u", 1), (5_000, "u", 1), (30_000, "u", 1), (35_000, "u", 1), (17_000, "u", 1)]
    events += [(100_000, "v", 1)]
    task, _ = run_windows(tmp_path, Session(15_000), sk.count(), events, 30_000, 0)
    assert [(o["key"], o["start"], o["end"], o["count"]) for o in task.out] == [
        ("u", 0, 50_000, 5),
        ("v", 100_000, 115_000, 1),
    ]


def test_sessions_exactly_one_gap_apart_stay_apart(tmp_path: Path) -> None:
    events = [(0, "a", 1), (50, "a", 1), (130, "a", 1)]
    task, _ = run_windows(tmp_path, Session(50), sk.count(), events, 25, 0)
    assert [(o["start"], o["end"], o["count"]) for o in task.out] == [
        (0, 50, 1),
        (50, 100, 1),
        (130, 180, 1),
    ]


def sliding_oracle(
    size: int, events: list[tuple[int, str, int]], ooo: int, lateness: int
) -> tuple[dict[tuple[str, int], int], list[int]]:
    """Each on-time event's window [t - size, t]: the on-time events of its key in that range
    that arrived before the window closed."""
    wms = []
    top = None
    for ts, _, _ in events:
        top = ts if top is None else max(top, ts)
        wms.append(top - ooo)
    on_time = [i for i, (ts, _, _) in enumerate(events) if ts + lateness > wms[i]]
    late = [events[i][0] for i in range(len(events)) if i not in on_time]
    results: dict[tuple[str, int], int] = {}
    for i in on_time:
        t, key, _ = events[i]
        if (key, t) in results:
            continue
        closes = next((j for j in range(len(events)) if wms[j] >= t + lateness), len(events))
        results[(key, t)] = sum(
            1
            for j in on_time
            if j < closes and events[j][1] == key and t - size <= events[j][0] <= t
        )
    return results, late


@settings(max_examples=100, deadline=None)
@given(
    events=events_strategy,
    ooo=st.integers(0, 12).map(lambda t: t * 25),
    lateness=st.integers(0, 12).map(lambda t: t * 25),
    size=st.sampled_from([50, 100, 250]),
)
def test_sliding_windows_match_a_brute_force_oracle(
    tmp_path_factory: Any,
    events: list[tuple[int, str, int]],
    ooo: int,
    lateness: int,
    size: int,
) -> None:
    task, _ = run_windows(
        tmp_path_factory.mktemp("l"), Sliding(size), sk.count(), events, ooo, lateness
    )
    expected, late = sliding_oracle(size, events, ooo, lateness)
    got = {(o["key"], o["end"]): o["count"] for o in task.out}
    assert len(got) == len(task.out), "a window was emitted twice"
    assert got == expected
    assert task.late == late


# One out-of-order sequence (2 s out-of-orderness, no allowed lateness), every window kind and
# emit mode, answers computed by hand: (start, end, count) in emission order, then the late.
SEQUENCE = [1_000, 4_000, 12_000, 11_000, 9_500, 3_000, 21_000]
BY_HAND: dict[tuple[str, str], tuple[list[tuple[int, int, int]], list[int]]] = {
    ("tumbling", "final"): (
        [(0, 10_000, 2), (10_000, 20_000, 2), (20_000, 30_000, 1)],
        [9_500, 3_000],
    ),
    ("tumbling", "update"): (
        [
            (0, 10_000, 1),
            (0, 10_000, 2),
            (10_000, 20_000, 1),
            (10_000, 20_000, 2),
            (20_000, 30_000, 1),
        ],
        [9_500, 3_000],
    ),
    ("hopping", "final"): (
        [
            (-5_000, 5_000, 2),
            (0, 10_000, 2),
            (5_000, 15_000, 3),
            (10_000, 20_000, 2),
            (15_000, 25_000, 1),
            (20_000, 30_000, 1),
        ],
        [3_000],
    ),
    ("session", "final"): (
        [(1_000, 4_000, 1), (4_000, 7_000, 1), (9_500, 15_000, 3), (21_000, 24_000, 1)],
        [3_000],
    ),
    ("session", "update"): (
        [
            (1_000, 4_000, 1),
            (4_000, 7_000, 1),
            (12_000, 15_000, 1),
            (11_000, 15_000, 2),
            (9_500, 15_000, 3),
            (21_000, 24_000, 1),
        ],
        [3_000],
    ),
    ("sliding", "final"): (
        [
            (-4_000, 1_000, 1),
            (-1_000, 4_000, 2),
            (6_000, 11_000, 1),
            (7_000, 12_000, 2),
            (16_000, 21_000, 1),
        ],
        [9_500, 3_000],
    ),
    ("sliding", "update"): (
        [
            (-4_000, 1_000, 1),
            (-1_000, 4_000, 2),
            (7_000, 12_000, 1),
            (7_000, 12_000, 2),
            (6_000, 11_000, 1),
            (16_000, 21_000, 1),
        ],
        [9_500, 3_000],
    ),
}
KINDS = {
    "tumbling": Tumbling(10_000),
    "hopping": Hopping(10_000, 5_000),
    "session": Session(3_000),
    "sliding": Sliding(5_000),
}


@pytest.mark.parametrize(("kind", "emit"), sorted(BY_HAND))
def test_known_out_of_order_sequences_by_hand(tmp_path: Path, kind: str, emit: str) -> None:
    events = [(ts, "u", 1) for ts in SEQUENCE]
    task, _ = run_windows(tmp_path, KINDS[kind], sk.count(), events, 2_000, 0, emit)
    expected, late = BY_HAND[(kind, emit)]
    if emit == "update":  # the end of time closes windows silently in update mode
        assert not any(o["final"] for o in task.out)
    assert [(o["start"], o["end"], o["count"]) for o in task.out] == expected
    assert task.late == late


def test_timestamp_policies() -> None:
    import datetime as dt
    import time

    from streamkit.eventtime import TimestampPolicy

    assert TimestampPolicy().extract({"ts": 5}, 1234) == 1234  # the record timestamp
    assert TimestampPolicy("ts").extract({"ts": 5.5}, 0) == 5500
    assert TimestampPolicy("ts", unit="ms").extract({"ts": 5500}, 0) == 5500
    moment = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert TimestampPolicy("at").extract({"at": moment}, 0) == 1_767_225_600_000
    assert TimestampPolicy(lambda v: v[0]).extract([7], 0) == 7000
    now = time.time() * 1000
    assert abs(TimestampPolicy(sk.processing_time).extract({}, 0) - now) < 5_000
    with pytest.raises(ValueError, match="event time"):
        TimestampPolicy("ts").extract({"ts": "yesterday"}, 0)


def test_min_max_and_a_user_reduce(tmp_path: Path) -> None:
    events = [(1_000, "u", 5), (2_000, "u", -3), (3_000, "u", 9), (30_000, "u", 1)]
    for agg, name, expected in (
        (sk.min_of(), "min", -3),
        (sk.max_of(), "max", 9),
        (sk.reduce(lambda acc, v: acc * 10 + v, initial=0), "reduce", 5 * 100 - 3 * 10 + 9),
        (sk.sum_of(lambda v: v * v), "sum", 25 + 9 + 81),
    ):
        task, _ = run_windows(tmp_path, Tumbling(10_000), agg, events, 0, 0)
        assert task.out[0][name] == expected, name
