"""The event clock of a stage with two inputs (a join's) does not count an input idle while
the task still holds records of it: a backlog longer than idle_timeout must not make the
records behind it late."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streamkit.context import WALL_CLOCK
from streamkit.eventtime import TimestampPolicy, control_headers, read_control
from streamkit.runtime.event_clock import EventClock
from streamkit.testing.memory import VirtualClock


def two_inputs(upstreams_a: int, upstreams_b: int) -> tuple[VirtualClock, EventClock]:
    """A task's event clock over inputs "a" and "b" (0 upstreams: a source topic), on a
    virtual wall clock the test moves; idle_timeout 5 s."""
    wall = VirtualClock(1_000.0)
    token = WALL_CLOCK.set(wall)
    try:
        inputs = {"a": (TimestampPolicy(), upstreams_a), "b": (TimestampPolicy(), upstreams_b)}
        return wall, EventClock(inputs, 0, [], 5.0)
    finally:
        WALL_CLOCK.reset(token)


def test_an_input_with_records_waiting_in_the_task_is_not_idle() -> None:
    wall, clock = two_inputs(0, 0)
    waiting: set[str] = set()
    clock.pending = waiting.__contains__

    def record(topic: str, ts_ms: int) -> Any:
        return SimpleNamespace(topic=topic, timestamp=ts_ms, headers=())

    clock.note_input("a")
    clock.note_input("b")
    clock.on_data(record("a", 1_000), None)
    clock.on_data(record("b", 1_000), None)
    assert clock.watermark == 1_000
    wall.advance(10.0)  # b's next records arrived 10 s ago and still wait behind a's backlog
    waiting.add("b")
    clock.note_input("a")
    clock.on_data(record("a", 90_000), None)
    assert clock.watermark == 1_000, "b was counted idle while its records were waiting"
    waiting.clear()  # b drained and quiet for idle_timeout: left out while a moves
    clock.on_data(record("a", 95_000), None)
    assert clock.watermark == 95_000


def test_an_input_whose_partition_is_not_read_to_its_end_is_not_idle() -> None:
    """A source partition quiet for idle_timeout because its fetch lags (a starved worker, a
    slow broker), not because the broker has nothing more, keeps holding the watermark."""
    wall, clock = two_inputs(0, 0)

    def record(topic: str, ts_ms: int) -> Any:
        return SimpleNamespace(topic=topic, timestamp=ts_ms, headers=())

    clock.note_input("a")
    clock.note_input("b")
    clock.on_data(record("a", 1_000), None)
    clock.on_data(record("b", 1_000), None)
    clock.note_end("b", False)  # the fetch loop: b's position is behind its last stable offset
    wall.advance(10.0)
    clock.note_input("a")
    clock.on_data(record("a", 90_000), None)
    assert clock.watermark == 1_000, "b was counted idle while the broker held its records"
    clock.note_end("b", True)  # read to its end: quiet now means idle
    clock.on_data(record("a", 95_000), None)
    assert clock.watermark == 95_000


def test_an_input_whose_every_upstream_is_idle_is_left_out_while_the_other_moves() -> None:
    clock = EventClock({"a": (TimestampPolicy(), 0), "b": (TimestampPolicy(), 2)}, 0, [], 5.0)
    clock.on_data(SimpleNamespace(topic="a", timestamp=1_000, headers=()), None)
    assert clock.on_control("b", control_headers(0, 500, False))
    assert clock.on_control("b", control_headers(1, 700, False))
    assert clock.watermark == 500
    clock.on_data(SimpleNamespace(topic="a", timestamp=9_000, headers=()), None)
    assert clock.watermark == 500  # b's upstream 0 holds it
    clock.on_control("b", control_headers(0, 500, True))
    assert clock.watermark == 700  # 0 idle: b is upstream 1's 700
    clock.on_control("b", control_headers(1, 700, True))  # every upstream of b idle
    clock.on_data(SimpleNamespace(topic="a", timestamp=9_500, headers=()), None)
    assert clock.watermark == 9_500  # b left out; a alone moves it


def test_the_last_upstream_of_an_input_going_idle_frees_the_watermark_at_once() -> None:
    clock = EventClock({"a": (TimestampPolicy(), 1), "b": (TimestampPolicy(), 1)}, 0, [], 5.0)
    clock.on_control("a", control_headers(0, 9_000, False))
    clock.on_control("b", control_headers(0, 500, False))
    assert clock.watermark == 500
    clock.on_control("b", control_headers(0, 500, True))  # b's only upstream: idle
    assert clock.watermark == 9_000  # no further record of a needed


def test_a_quiet_repartition_input_holds_the_watermark_until_its_upstreams_say_idle() -> None:
    """Pipeline C at 1,000,000 events under load: the clicks' repartition input went quiet for
    longer than idle_timeout (its upstreams' transactions still open) while the purchases'
    moved on; counted idle, it let the watermark run ahead and 53,626 clicks were late."""
    wall, clock = two_inputs(1, 1)
    clock.note_input("a")
    clock.note_input("b")
    assert clock.on_control("a", control_headers(0, 1_000, False))
    assert clock.on_control("b", control_headers(0, 1_000, False))
    assert clock.watermark == 1_000
    wall.advance(30.0)  # b quiet for 30 s, its upstream busy (not idle)
    clock.note_input("a")
    clock.on_control("a", control_headers(0, 90_000, False))
    assert clock.watermark == 1_000, "b was counted idle for being quiet"
    clock.on_control("b", control_headers(0, 2_000, True))  # b's upstream: idle
    clock.on_control("a", control_headers(0, 95_000, False))
    assert clock.watermark == 95_000  # b left out now; a alone moves it


def test_once_every_input_is_idle_the_watermark_does_not_depend_on_which_went_idle_last() -> None:
    """A join whose purchases side still had an active upstream (a new owner after a
    rebalance, not idle yet) when the clicks' last watermark (an end-of-run flush, an hour
    ahead) came, both sides then quiet: with every input idle the join took the minimum, the
    purchases' old watermark, for good; had the purchases gone idle first it would have moved
    to the clicks' watermark. With nothing in flight on any input, none holds the others back."""

    def run(purchases_idle_first: bool) -> int:
        wall, clock = two_inputs(2, 4)  # a: the clicks' 2 upstreams; b: the purchases' 4
        for u in range(4):
            clock.on_control("b", control_headers(u, 1_000, purchases_idle_first or u < 3))
        for u in range(2):  # the flush: the clicks move an hour ahead
            clock.on_control("a", control_headers(u, 3_600_000, False))
        wall.advance(10.0)  # everything quiet
        for u in range(2):
            clock.on_control("a", control_headers(u, 3_600_000, True))
        clock.on_control("b", control_headers(3, 1_000, True))  # the new owner: idle at last
        return clock.watermark

    assert run(purchases_idle_first=True) == 3_600_000
    assert run(purchases_idle_first=False) == 3_600_000, "held by an input idle like the others"


class _Controls:
    """A collector that keeps the control records' (watermark, idle)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bool]] = []

    def append(self, topic: str, key: Any, value: Any, *, headers: Any, partition: int) -> None:
        control = read_control(headers)
        assert control is not None
        self.sent.append((control[1], control[2]))


def test_a_relay_whose_upstreams_are_idle_says_idle_though_their_controls_keep_coming() -> None:
    """A task after a repartition hop with a hop of its own (pipeline C's join sides, a
    three-stage app): its upstreams, idle, repeat their idle control record every
    idle_timeout. Those are no input: counted as input they kept it from ever saying idle, and
    the stage after it waited for its watermark for good."""
    wall = VirtualClock(1_000.0)
    token = WALL_CLOCK.set(wall)
    try:
        nxt: Any = SimpleNamespace(name="next", partitions=1)
        clock = EventClock({"r": (TimestampPolicy(), 2)}, 0, [nxt], 5.0)
    finally:
        WALL_CLOCK.reset(token)
    controls = _Controls()
    out: Any = controls  # the collector's one method the clock uses
    clock.note_input("r")
    clock.on_control("r", control_headers(0, 1_000, False))
    clock.on_control("r", control_headers(1, 1_000, False))
    clock.broadcast(out, force=True)
    assert controls.sent[-1] == (1_000, False)
    wall.advance(30.0)  # the upstreams quiet but not idle (busy elsewhere): neither is this one
    clock.broadcast(out, force=True)
    assert controls.sent[-1] == (1_000, False)
    for second in range(12):  # both idle now, each repeating itself, staggered
        wall.advance(2.5)
        upstream = second % 2
        clock.note_input("r")  # the task notes every batch it is handed, controls too
        clock.on_control("r", control_headers(upstream, 1_000, True))
        clock.broadcast(out, force=True)
    assert controls.sent[-1] == (1_000, True), controls.sent
    clock.pending = {"r"}.__contains__  # a record of it waiting in the task: not idle
    clock.broadcast(out, force=True)
    assert controls.sent[-1] == (1_000, False)
