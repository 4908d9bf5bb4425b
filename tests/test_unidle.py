"""An upstream task that said "idle" on its repartition outputs says "not idle" to every
downstream partition *before* its first record after the idle spell (and a new owner of its
partition, which does not know what the previous one said, before its first record too).

Otherwise the next stage keeps leaving it out of the minimum while its resumed records are on
their way, lets the other upstreams' watermarks move past them, and counts them late (the
e-commerce demo's undercounted trending windows and missing join pairs under kill -9)."""

from __future__ import annotations

from typing import Any

import streamkit as sk
from streamkit.eventtime import read_control
from streamkit.testing import TestDriver

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z
HOP = "kit-unidle-events-key_by-user-repartition"


def idle_app() -> tuple[sk.App, sk.Topic]:
    app = sk.App("kit-unidle", idle_timeout=5)
    events = app.topic("events", partitions=2, timestamp="ts")
    counts = app.window("per-10s", sk.tumbling(10), sk.count(), output=app.topic("counts"))

    @app.agent(app.stream(events).key_by("user"), state=[counts])
    async def tally(stream: sk.Stream[dict[str, Any]]) -> None:
        async for e in stream:
            counts.add(e["user"])

    return app, events


def after_idle(driver: TestDriver, upstream: int, user: str) -> dict[int, list[str]]:
    """Per hop partition, what came after `upstream`'s last idle control: its controls as
    "idle"/"active", and the data records of `user`."""
    seen: dict[int, list[str]] = {}
    for rec in driver.driver.log.written(HOP):
        control = read_control(rec.headers)
        if control is not None and control[0] == upstream:
            if control[2]:
                seen[rec.partition] = []  # from its last idle control on
            elif rec.partition in seen:
                seen[rec.partition].append("active")
        elif control is None and rec.partition in seen and user.encode() in rec.value:
            seen[rec.partition].append(user)
    return seen


def test_an_idle_upstream_says_it_is_active_before_its_resumed_records() -> None:
    app, events = idle_app()
    with TestDriver(app) as driver:
        driver.send(events, {"user": "ann", "ts": T0 + 1}, partition=0)
        driver.send(events, {"user": "bob", "ts": T0 + 1}, partition=1)
        driver.advance_time(6)  # both quiet for idle_timeout: both said idle
        assert set(after_idle(driver, 1, "cat")) == {0, 1}
        driver.send(events, {"user": "cat", "ts": T0 + 3}, partition=1)  # 1 resumes
        seen = after_idle(driver, 1, "cat")
        assert all(s and s[0] == "active" for s in seen.values()), seen
        assert sum(s.count("cat") for s in seen.values()) == 1, seen


def test_a_new_owner_says_it_is_active_before_its_first_record() -> None:
    """The previous owner of partition 1 said idle and stopped; the next one (after a restart)
    must not send records while the next stage still counts it idle."""
    app, events = idle_app()
    with TestDriver(app) as driver:
        driver.send(events, {"user": "ann", "ts": T0 + 1}, partition=0)
        driver.send(events, {"user": "bob", "ts": T0 + 1}, partition=1)
        driver.advance_time(6)
        driver.restart()
        assert set(after_idle(driver, 1, "cat")) == {0, 1}
        driver.send(events, {"user": "cat", "ts": T0 + 3}, partition=1)
        seen = after_idle(driver, 1, "cat")
        assert all(s and s[0] == "active" for s in seen.values()), seen
        assert sum(s.count("cat") for s in seen.values()) == 1, seen
