"""A task cancelled mid-event at shutdown (its agent still busy after `shutdown_timeout`) commits
nothing of that event under exactly-once: a real worker process blocks in one event after
producing its output and changing its table, gets SIGTERM, and stops; a second worker replays
the event. The output, read to its end offsets (read_committed), holds every event exactly
once, with the table's counts in order (a half event committed would show twice, its count
one too high after it)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from tests.kafkahelp import WorkerProcess, committed, produce, read_all, wait_until


def worker(uid: str, tmp_path: Path, name: str, producer: str, stall: Path | None) -> WorkerProcess:
    env = {
        "STALL_ID": uid,
        "STREAMKIT_TRANSACTIONAL_PRODUCER": producer,
        "STREAMKIT_WORKDIR": str(tmp_path / name),
    }
    if stall is not None:
        env["STALL_FILE"] = str(stall)
    return WorkerProcess("tests.stallapp:app", env, tmp_path / f"{name}.log")


@pytest.mark.parametrize("producer", ["per_partition", "per_worker"])
async def test_an_event_cancelled_at_shutdown_commits_nothing_and_is_replayed_once(
    uid: str, tmp_path: Path, producer: str
) -> None:
    src, out = f"stall-in-{uid}", f"stall-out-{uid}"
    stall = tmp_path / "stalled"
    first = worker(uid, tmp_path, "first", producer, stall).start()
    try:
        await wait_until(lambda: "assigned" in first.log(), within=90, what="first assigned")
        p0 = [f"a{i}" for i in range(10)] + ["stall"] + [f"b{i}" for i in range(5)]
        p1 = [f"c{i}" for i in range(10)]
        await produce(src, [orjson.dumps(v) for v in p0], partition=0)
        await produce(src, [orjson.dumps(v) for v in p1], partition=1)
        await wait_until(stall.exists, within=60, what="the agent stalled mid-event")
        first.signal(15)  # SIGTERM: shutdown_timeout (1 s) passes, the event is cancelled
        assert first.wait(60) == 0, first.log()
    finally:
        first.stop()
    log = first.log()
    assert "did not finish its event" in log, log
    assert "worker failing" not in log, log
    second = worker(uid, tmp_path, "second", producer, None).start()
    try:

        async def all_committed() -> bool:
            return (await committed(f"stall-{uid}", src)) == {0: len(p0), 1: len(p1)}

        await wait_until(all_committed, within=120, what="every input offset committed")
    finally:
        second.stop()
    records = await read_all(out)  # to the end offsets, read_committed
    by_key: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for r in records:
        value = orjson.loads(r.value)
        by_key[r.key.decode().strip('"')].append((value["value"], value["n"]))
    assert by_key["p0"] == [(v, n) for n, v in enumerate(p0, 1)], by_key["p0"]
    assert by_key["p1"] == [(v, n) for n, v in enumerate(p1, 1)], by_key["p1"]
