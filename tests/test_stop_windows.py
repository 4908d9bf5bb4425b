"""The stop's final checkpoint against a rebalance and kill -9, with real worker processes
(`tests.procapp`): a worker told to stop closes its tasks and commits them in its final
checkpoint; a rebalance meanwhile (a worker joins) must not hand its partitions on before
that checkpoint is over, and a kill -9 at each step of the stop loses nothing and, under
exactly-once, commits nothing twice. Every input record's output is checked by its
coordinates, read to the end offsets (read_committed)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import orjson
import pytest

from tests.kafkahelp import chaos_only, read_all, wait_until
from tests.rebalancehelp import feed, teardown
from tests.test_cooperative import PARTITIONS, assert_once_each, coop_worker

RATE = 300  # events/s over the partitions


async def until_all_out(out: str, sent: list[int], within: float = 90.0) -> set[int]:
    """At least once: read `out` to its end offsets until every value sent has an output (or
    `within` seconds passed); the values still missing."""
    missing = set(sent)

    async def covered() -> bool:
        missing.difference_update(orjson.loads(r.value)["value"] for r in await read_all(out))
        return not missing

    with contextlib.suppress(AssertionError):  # (timed out: the caller reports what is missing)
        await wait_until(covered, within=within, what="every input's output", every=1.0)
    return missing


@pytest.mark.parametrize(
    ("protocol", "guarantee", "producers"),
    [
        ("cooperative", "exactly_once", "per_worker"),
        pytest.param("eager", "exactly_once", "per_worker", marks=chaos_only("eager")),
        pytest.param(
            "cooperative", "exactly_once", "per_partition", marks=chaos_only("per_partition")
        ),
        pytest.param(
            "cooperative", "at_least_once", "per_worker", marks=chaos_only("at_least_once")
        ),
    ],
)
async def test_a_rebalance_during_the_stop_waits_for_its_final_checkpoint(
    uid: str, tmp_path: Path, protocol: str, guarantee: str, producers: str
) -> None:
    """`a` and `b` run; `c` joins and `a` is told to stop at once. `a` closes its tasks and
    waits there (a test hook: four seconds, under the session timeout) before its final
    checkpoint, while the group rebalances around it: the partitions it gives up must not
    reach their next owner before that checkpoint committed their offsets (the next owner
    would start from the offsets before it, and process again what it commits). Before the
    stop held the checkpoints' lock: duplicates with one producer per worker (eager too);
    per partition the next owner's InitProducerId fenced the final checkpoint, and at least
    once its commit of partitions no longer assigned failed: the stop exited 1."""
    topic, out = f"proc-in-{uid}", f"proc-out-{uid}"
    env = {
        "STREAMKIT_REBALANCE_PROTOCOL": protocol,
        "STREAMKIT_PROCESSING_GUARANTEE": guarantee,
        "STREAMKIT_TRANSACTIONAL_PRODUCER": producers,
    }
    hook = {"STREAMKIT_TEST_HOOK": "delay-stop-closed:1", "STREAMKIT_TEST_DELAY": "4"}
    a = coop_worker(uid, tmp_path, "a", **env, **hook).start()
    b = coop_worker(uid, tmp_path, "b", **env).start()
    workers = [a, b]
    stop, sent = asyncio.Event(), list[int]()
    feeder: asyncio.Task[None] | None = None
    try:
        await wait_until(
            lambda: all("assigned proc-in" in w.log() for w in (a, b)), within=60, what="a, b"
        )
        feeder = asyncio.create_task(feed(topic, PARTITIONS, RATE, stop, sent, total=RATE * 6))
        await wait_until(lambda: len(sent) > RATE * 2, within=30, what="events sent")
        # `a` stops and holds between closing its tasks and its final checkpoint; `c` joins
        # meanwhile (started once the hold began: its rebalance cannot be over before the
        # stop, as it could be when `c` was started first)
        a.signal(signal.SIGTERM)
        await wait_until(
            lambda: "test hook: delay-stop-closed" in a.log(), within=30, what="a holding"
        )
        c = coop_worker(uid, tmp_path, "c", **env).start()
        workers.append(c)
        await asyncio.to_thread(a.wait, 60)
        log = a.log()
        assert "test hook: delay-stop-closed" in log, log
        # the group rebalanced while `a` waited there (else this run proved nothing)
        assert "rebalanc" in log.split("test hook: delay-stop-closed", 1)[1], log
        await feeder
        if guarantee == "exactly_once":
            await assert_once_each(out, sent)
        else:  # at least once: every input's output, perhaps more than once
            missing = await until_all_out(out, sent)
            assert not missing, f"lost {len(missing)}: {sorted(missing)[:10]}"
        assert a.proc is not None and a.proc.returncode == 0, log
    finally:
        await teardown(stop, feeder, None, workers)


STEPS = {  # the hooks that kill -9 the stopping worker at each step of its stop
    "tasks-closed": "crash-stop-closed:1",
    "final-checkpoint-sent": "delay-stop-closed:1,crash-before-commit:1@delay-stop-closed",
    "final-checkpoint-committed": "crash-stop-committed:1",
    "group-left": "crash-stop-left:1",
}


@pytest.mark.parametrize(
    ("step", "guarantee", "producers"),
    [
        pytest.param(step, guarantee, producers, marks=chaos_only(step, guarantee, producers))
        for step in STEPS
        for guarantee, producers in (
            ("exactly_once", "per_worker"),
            ("exactly_once", "per_partition"),
            ("at_least_once", "per_worker"),
        )
    ],
)
async def test_kill_9_at_each_step_of_the_stop_loses_and_duplicates_nothing(
    uid: str, tmp_path: Path, step: str, guarantee: str, producers: str
) -> None:
    """`a` and `b` run; `a` is told to stop (SIGTERM) and is killed -9 at one step of its stop
    (a test hook): its tasks closed; its final checkpoint's records and offsets sent, not
    committed; that checkpoint committed; the group left. It is restarted on its workdir and
    `b` and it finish: every input's output once under exactly-once (read_committed, to the
    end offsets), at least once otherwise. `make chaos` only (the suite's time): no step
    showed a hole; a final checkpoint that committed outputs without offsets, or offsets past
    what was processed, fails it."""
    topic, out = f"proc-in-{uid}", f"proc-out-{uid}"
    env = {
        "STREAMKIT_PROCESSING_GUARANTEE": guarantee,
        "STREAMKIT_TRANSACTIONAL_PRODUCER": producers,
    }
    hooks = {"STREAMKIT_TEST_HOOK": STEPS[step], "STREAMKIT_TEST_DELAY": "0.1"}
    a = coop_worker(uid, tmp_path, "a", **env, **hooks).start()
    b = coop_worker(uid, tmp_path, "b", **env).start()
    workers = [a, b]
    stop, sent = asyncio.Event(), list[int]()
    feeder: asyncio.Task[None] | None = None
    try:
        await wait_until(
            lambda: all("assigned proc-in" in w.log() for w in (a, b)), within=60, what="a, b"
        )
        feeder = asyncio.create_task(feed(topic, PARTITIONS, RATE, stop, sent, total=RATE * 5))
        await wait_until(lambda: len(sent) > RATE * 2, within=30, what="events sent")
        a.signal(signal.SIGTERM)
        code = await asyncio.to_thread(a.wait, 60)
        killed_at = STEPS[step].split(",")[-1].split(":")[0]
        assert code == -signal.SIGKILL and f"test hook: {killed_at}" in a.log(), a.log()
        again = coop_worker(uid, tmp_path, "a2", **env)
        again.env["STREAMKIT_WORKDIR"] = a.env["STREAMKIT_WORKDIR"]
        workers.append(again.start())
        await feeder
        if guarantee == "exactly_once":
            await assert_once_each(out, sent)
        else:
            missing = await until_all_out(out, sent)
            assert not missing, f"lost {len(missing)}: {sorted(missing)[:10]}"
    finally:
        await teardown(stop, feeder, None, workers)
