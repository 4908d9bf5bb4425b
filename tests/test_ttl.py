"""State TTL on tables, over the testing kit (the real tasks, SQLite stores and checkpoints on
a virtual clock): in event time and in processing time a key expires after its last write,
reads as absent at once, is purged with a tombstone in the changelog, and a restore from the
changelog alone does not bring it back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import streamkit as sk
from streamkit.testing import TestDriver

T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def counting_app(name: str, **ttl: Any) -> tuple[sk.App, sk.Topic, sk.Topic]:
    app = sk.App(name)
    visits = app.topic("visits", partitions=1, timestamp="ts")
    out = app.topic("counts")
    seen = app.table("seen", default=int, **ttl)

    @app.agent(visits, sink=out, state=[seen])
    async def count(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for v in stream:
            seen[v["user"]] += 1
            yield {"user": v["user"], "n": seen[v["user"]]}

    return app, visits, out


def tombstones(driver: TestDriver, table: str) -> list[str]:
    log = driver.records(f"{driver.app.id}-{table}-changelog")
    last = {r.key: r.value for r in log}
    return sorted(k.decode() for k, v in last.items() if v is None)


def test_event_time_ttl_expires_purges_and_survives_a_restore_from_the_changelog() -> None:
    app, visits, out = counting_app("kit-ttl", ttl=60)
    with TestDriver(app) as driver:

        def visit(user: str, at: int) -> None:
            driver.send(visits, {"user": user, "ts": T0 + at}, key=user)

        for user, at in (("ann", 0), ("dan", 10), ("bob", 50), ("ann", 59)):
            visit(user, at)
        assert [v["n"] for v in driver.read_values(out)] == [1, 1, 1, 2]
        visit("cy", 115)  # watermark T0+115: dan (10 + 60) and bob (50 + 60) expired
        assert driver.table("seen").to_dict() == {"ann": 2, "cy": 1}
        visit("bob", 116)  # bob starts again from the default
        assert driver.read_values(out)[-1] == {"user": "bob", "n": 1}
        driver.checkpoint()
        assert tombstones(driver, "seen") == ["dan"]
        driver.restart(lose_state=True)  # from the changelog alone: dan stays gone
        assert driver.table("seen").to_dict() == {"ann": 2, "bob": 1, "cy": 1}
        visit("ann", 200)  # ann's write time (59) came back with her: expired at 119
        assert driver.read_values(out)[-1] == {"user": "ann", "n": 1}
        driver.checkpoint()
        # bob (116 + 60) and cy (115 + 60) purged as the watermark passed; ann written anew
        assert tombstones(driver, "seen") == ["bob", "cy", "dan"]
        assert driver.table("seen").to_dict() == {"ann": 1}


def test_processing_time_ttl_follows_the_wall_clock() -> None:
    app, visits, out = counting_app("kit-ttl-proc", ttl=30, ttl_time="processing")
    with TestDriver(app) as driver:
        driver.send(visits, {"user": "ann", "ts": T0}, key="ann")
        driver.advance_time(20)
        driver.send(visits, {"user": "bob", "ts": T0}, key="bob")
        driver.advance_time(15)  # ann written 35 s ago: expired; bob 15 s ago
        assert driver.table("seen").to_dict() == {"bob": 1}
        driver.checkpoint()
        assert tombstones(driver, "seen") == ["ann"]
        driver.restart(lose_state=True)
        assert driver.table("seen").to_dict() == {"bob": 1}
        driver.advance_time(15)
        assert driver.table("seen").to_dict() == {}
        driver.checkpoint()
        assert tombstones(driver, "seen") == ["ann", "bob"]
        driver.send(visits, {"user": "ann", "ts": T0}, key="ann")
        assert [v["n"] for v in driver.read_values(out)] == [1, 1, 1]


def test_a_bad_ttl_fails_at_declaration_saying_what_to_change() -> None:
    app = sk.App("ttl-bad")
    with pytest.raises(sk.ConfigError, match="ttl must be a positive number of seconds"):
        app.table("a", ttl=0)
    with pytest.raises(sk.ConfigError, match="ttl_time must be 'event' or 'processing'"):
        app.table("b", ttl=5, ttl_time="wall")
    catalog = app.topic("catalog")
    with pytest.raises(sk.ConfigError, match="give the topic a retention"):
        app.table("c", source=catalog, ttl=5)
