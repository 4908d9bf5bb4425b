"""`aiokafka_internals.CooperativeRebalance` on two real consumers (in this process, against the
broker): the aiokafka behaviour it relies on, pinned. A member that joins takes half of the
first member's partitions in two rounds; the first member's listener is told to revoke only
those, never the others; the fetch position of a partition that stays survives the
rebalance (it is not re-read from the committed offset: nothing was committed, so it would
restart at the beginning); the group's generation is synced again once the second round is
done; and a member whose generation was reset revokes everything before rejoining."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals import CooperativeRebalance, check_coordinator
from streamkit.runtime.assignor import StreamkitAssignor
from tests.kafkahelp import bootstrap, create_topic, produce, wait_until

PARTITIONS = 4


class Recorder(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.calls: list[tuple[str, set[TopicPartition]]] = []

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.calls.append(("revoked", set(revoked)))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.calls.append(("assigned", set(assigned)))


@contextlib.asynccontextmanager
async def cooperative_member(
    topic: str, group: str
) -> AsyncIterator[tuple[AIOKafkaConsumer, CooperativeRebalance, Recorder]]:
    holder: list[CooperativeRebalance] = []
    assignor = StreamkitAssignor(
        set, 0, lambda: holder[0].holding() if holder else set(), set, None, cooperative=True
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=300,
        partition_assignment_strategy=assignor.protocols(),
    )
    await consumer.start()
    check_coordinator(consumer)
    rebalance = CooperativeRebalance(consumer)
    holder.append(rebalance)
    recorder = Recorder()
    consumer.subscribe([topic], listener=recorder)
    try:
        yield consumer, rebalance, recorder
    finally:
        await consumer.stop()


async def poll_until(
    consumers: list[AIOKafkaConsumer],
    done: Any,
    what: str,
    seen: dict[TopicPartition, list[int]] | None = None,
) -> None:
    """Poll every consumer until `done()`; the offsets the first one receives go to `seen`."""

    async def step() -> bool:
        for i, c in enumerate(consumers):
            for tp, records in (await c.getmany(timeout_ms=20)).items():
                if i == 0 and seen is not None:
                    seen.setdefault(tp, []).extend(r.offset for r in records)
        return bool(done())

    await wait_until(step, within=60, what=what, every=0.0)


async def test_a_joining_member_takes_half_in_two_rounds_and_the_rest_keep_their_position(
    uid: str,
) -> None:
    topic, group = f"coop-{uid}", f"coop-{uid}"
    await create_topic(topic, PARTITIONS)
    for p in range(PARTITIONS):
        await produce(topic, [b"x"] * 10, partition=p)
    every = {TopicPartition(topic, p) for p in range(PARTITIONS)}
    async with cooperative_member(topic, group) as (a, ra, la):
        await poll_until([a], lambda: a.assignment() == every, "a to hold everything")
        assert la.calls == [("assigned", every)]
        await poll_until(
            [a], lambda: all(a.last_stable_offset(tp) == 10 for tp in every), "a's fetches"
        )
        for tp in every:  # nothing committed: a restart from the committed offset reads 0
            a.seek(tp, 7)
        seen: dict[TopicPartition, list[int]] = {}
        async with cooperative_member(topic, group) as (b, rb, lb):
            await poll_until(
                [a, b],
                lambda: len(b.assignment()) == PARTITIONS // 2 and rb.synced() and ra.synced(),
                "b to get its half",
                seen,
            )
            kept = a.assignment()
            moved = every - kept
            assert len(kept) == PARTITIONS // 2 and b.assignment() == moved
            # a: revoked the moved half only, then was assigned nothing new (twice: both rounds)
            assert la.calls[1:] == [("revoked", moved), ("assigned", set()), ("assigned", set())]
            assert lb.calls == [("assigned", set()), ("assigned", moved)]
            assert ra.revoked == len(moved) and ra.holding() == kept
            await poll_until([a, b], lambda: True, "one more poll", seen)
            for tp in kept:  # the fetch state of what stayed survived: read on from 7, once
                assert seen[tp] == [7, 8, 9] and await a.position(tp) == 10
            await poll_until(
                [b], lambda: all(b.last_stable_offset(tp) == 10 for tp in moved), "b's fetches"
            )
            # a lost membership (as after a session timeout): it revokes all before rejoining
            a._coordinator.reset_generation()
            assert not ra.synced()
            await poll_until(
                [a, b], lambda: ra.synced() and len(la.calls) > 4, "a to rejoin after the loss"
            )
            assert la.calls[4] == ("revoked", kept)
