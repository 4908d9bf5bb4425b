"""Window tables, sessions, count windows and timers queried over HTTP and the CLI against the
broker with two worker processes: a key asked of the worker that does not own it is answered
by its owner (`/windows/{name}/{key}?from=&to=`, `/timers/...`, `/tables/...` on a window
table, `streamkit windows get`, `streamkit tables get`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from tests.kafkahelp import WorkerProcess, produce, wait_until
from tests.test_ops import cli, get, owner_partition, two_serving

HOUR = 3_600_000
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a whole hour


def clicks() -> list[dict[str, Any]]:
    """Eight users; user u{i} clicks pages a..e at minutes 0, 1, 2, 70 and 71."""
    return [
        {"user": f"u{i}", "page": page, "cents": 100 * (n + 1) + i, "ts": T0 + 60 * minute}
        for i in range(8)
        for n, (page, minute) in enumerate(zip("abcde", (0, 1, 2, 70, 71), strict=True))
    ]


def worker(uid: str, tmp_path: Path, name: str) -> WorkerProcess:
    return WorkerProcess(
        "tests.windowqueryapp:app",
        {"SKTEST_ID": uid, "STREAMKIT_WORKDIR": str(tmp_path / name)},
        tmp_path / f"{name}.log",
    )


async def test_windows_sessions_count_windows_and_timers_are_routed_to_their_owner(
    uid: str, tmp_path: Path
) -> None:
    a, b = worker(uid, tmp_path, "a").start(), worker(uid, tmp_path, "b").start()
    try:
        ea, eb = await two_serving(a, b)
        sent = clicks()  # keyed: each user's clicks reach the key_by in order
        await produce(
            f"wq-in-{uid}", [orjson.dumps(c) for c in sent], keys=[c["user"].encode() for c in sent]
        )
        status_b = (await get(eb, "/status"))[1]
        owned_by_b = {
            x["partition"] for x in status_b["assigned"] if x["topic"].endswith("-repartition")
        }
        i = next(i for i in range(8) if owner_partition(f"u{i}") in owned_by_b)
        key = f"u{i}"
        answer: dict[str, Any] = {}

        async def counted() -> bool:
            code, found = await get(ea, f"/windows/hourly/{key}")  # asked of A, owned by B
            answer.update(found)
            return code == 200 and [w["count"] for w in found["windows"]] == [3, 2]

        await wait_until(counted, within=60, what=f"{key}'s five clicks in two hours")
        assert answer["served_by"] == status_b["worker"] and answer["endpoint"] == eb
        assert answer["partition"] == owner_partition(key)
        assert answer["aggregation"] == "count, spent, avg"
        cents = [100 * (n + 1) + i for n in range(5)]
        assert [
            (w["start"], w["end"], w["count"], w["spent"], w["avg"]) for w in answer["windows"]
        ] == [
            (T0 * 1000, T0 * 1000 + HOUR, 3, sum(cents[:3]), sum(cents[:3]) / 3),
            (T0 * 1000 + HOUR, T0 * 1000 + 2 * HOUR, 2, sum(cents[3:]), sum(cents[3:]) / 2),
        ]
        # from/to: window starts, inclusive
        code, later = await get(ea, f"/windows/hourly/{key}", **{"from": str(T0 * 1000 + 1)})
        assert code == 200 and [w["start"] for w in later["windows"]] == [T0 * 1000 + HOUR]
        code, none = await get(ea, f"/windows/hourly/{key}", to=str(T0 * 1000 - 1))
        assert code == 404 and none["found"] is False and none["windows"] == []
        code, bad = await get(ea, f"/windows/hourly/{key}", to="soon")
        assert code == 400 and "to='soon'" in bad["error"]

        # sessions (gap 10 minutes): a..c and d..e, each a bounded list in event-time order
        code, visits = await get(ea, f"/windows/visits/{key}")
        assert code == 200 and visits["served_by"] == status_b["worker"]
        assert [(w["start"], w["end"], w["collect"]) for w in visits["windows"]] == [
            (T0 * 1000, (T0 + 120 + 600) * 1000, ["a", "b", "c"]),
            ((T0 + 4200) * 1000, (T0 + 4260 + 600) * 1000, ["d", "e"]),
        ]
        # count windows of three: the first completed, the open one holds d, e
        code, threes = await get(ea, f"/windows/threes/{key}")
        assert code == 200, threes
        assert [(w["start"], w["end"], w["count"], w["last"]) for w in threes["windows"]] == [
            (3, 6, 2, "e")
        ]
        # timers: one pending per click, soonest first; /tables/ answers the same for them
        code, timers = await get(ea, f"/timers/reminders/{key}")
        assert code == 200 and timers["served_by"] == status_b["worker"]
        assert [(t["fire"], t["kind"], t["payload"]) for t in timers["pending"]] == [
            ((T0 + 60 * m + 86_400) * 1000, "event", {"page": p})
            for p, m in zip("abcde", (0, 1, 2, 70, 71), strict=True)
        ]
        code, via_tables = await get(ea, f"/tables/hourly/{key}")
        assert code == 200 and via_tables["window"] == "hourly"
        assert via_tables["windows"] == answer["windows"]

        # the CLI asks any worker; the answer comes from the owner
        shown = await asyncio.to_thread(
            cli, uid, "windows", "get", "tests.windowqueryapp:app", "hourly", key
        )
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].startswith(f'window hourly["{key}"]: tumbling 3600s, count, spent, avg')
        assert f"served by {status_b['worker']}" in lines[0]
        assert lines[1] == (
            f"  [{T0 * 1000}, {T0 * 1000 + HOUR})  "
            f'{{"count":3,"spent":{sum(cents[:3])},"avg":{sum(cents[:3]) / 3}}}'
        )
        table = await asyncio.to_thread(
            cli, uid, "tables", "get", "tests.windowqueryapp:app", "visits", key
        )
        assert table.returncode == 0, table.stderr
        assert '"collect":["d","e"]' in table.stdout, table.stdout
        nobody = await asyncio.to_thread(
            cli, uid, "windows", "get", "tests.windowqueryapp:app", "hourly", "nobody"
        )
        assert nobody.returncode == 1 and "0 open" in nobody.stdout
    finally:
        a.stop()
        b.stop()
