"""`aiokafka_internals.CooperativeRebalance` on two real consumers (in this process, against the
broker): the aiokafka behaviour it relies on, pinned. A member that joins takes half of the
first member's partitions in two rounds; the first member's listener is told to revoke only
those, never the others; the fetch position of a partition that stays survives the
rebalance (it is not re-read from the committed offset: nothing was committed, so it would
restart at the beginning); the group's generation is synced again once the second round is
done; a member whose generation was reset revokes everything before rejoining. Led by an
older version (a leader without cooperative rounds) a member releases everything before each
join, as an eager one; one that held partitions through a join and gets such a leader's
assignment installs nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import CommitFailedError
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals import CooperativeRebalance, check_coordinator
from streamkit.runtime.assignor import StreamkitAssignor, awaits_follow_up, planned_cooperatively
from tests.kafkahelp import bootstrap, create_topic, produce, wait_until

PARTITIONS = 4
refusals: dict[CooperativeRebalance, list[bool]] = {}  # each member's `refused()` calls


class Recorder(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.calls: list[tuple[str, set[TopicPartition]]] = []
        self.times: list[float] = []  # when each call came (monotonic)

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.calls.append(("revoked", set(revoked)))
        self.times.append(time.monotonic())

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.calls.append(("assigned", set(assigned)))
        self.times.append(time.monotonic())


@contextlib.asynccontextmanager
async def cooperative_member(
    topic: str, group: str, hold: Any = None, heartbeat_ms: int = 300
) -> AsyncIterator[tuple[AIOKafkaConsumer, CooperativeRebalance, Recorder]]:
    """`hold`: whether it may hold its partitions through a join (by default: as a worker,
    once its last assignment said that every member plans cooperative rounds)."""
    holder: list[CooperativeRebalance] = []
    assignor = StreamkitAssignor(
        set, 0, lambda: holder[0].holding() if holder else set(), set, None, cooperative=True
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=max(6000, 4 * heartbeat_ms),
        heartbeat_interval_ms=heartbeat_ms,
        partition_assignment_strategy=(assignor,),
    )
    await consumer.start()
    check_coordinator(consumer)
    refused: list[bool] = []
    rebalance = CooperativeRebalance(
        consumer, planned_cooperatively, lambda: refused.append(True), hold or assignor.may_hold,
        awaits_follow_up,
    )  # fmt: skip
    refusals[rebalance] = refused
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
            await poll_until(  # (the follow-up round may come before a's next fetch)
                [a, b], lambda: all(seen.get(tp, [])[-1:] == [9] for tp in kept), "a reads on", seen
            )
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


async def test_the_new_owner_looks_for_the_follow_up_round_before_its_next_heartbeat(
    uid: str,
) -> None:
    """With 3 s between heartbeats, the member that waits for the partitions held back from
    it learns of the follow-up round as soon as their holder has revoked them and rejoined,
    not at its next heartbeat 3 s after its join."""
    topic, group = f"coopf-{uid}", f"coopf-{uid}"
    await create_topic(topic, PARTITIONS)
    every = {TopicPartition(topic, p) for p in range(PARTITIONS)}
    async with cooperative_member(topic, group, heartbeat_ms=3000) as (a, _, _):
        await poll_until([a], lambda: a.assignment() == every, "a to hold everything")
        async with cooperative_member(topic, group, heartbeat_ms=3000) as (b, _, lb):
            await poll_until(
                [a, b], lambda: len(b.assignment()) == PARTITIONS // 2, "b to get its half"
            )
            assert lb.calls == [("assigned", set()), ("assigned", every - a.assignment())]
            waited = lb.times[1] - lb.times[0]
            assert waited < 1.5, f"the follow-up round came {waited:.2f} s after the first"


class OlderLeader(StreamkitAssignor):
    """The assignor of a version without cooperative rounds: no protocol in its metadata, no
    marker in its assignments."""

    def metadata(self, topics: Any) -> Any:
        meta = super().metadata(topics)
        data = orjson.loads(meta.user_data)
        data.pop("protocol")
        return ConsumerProtocolMemberMetadata(meta.version, meta.subscription, orjson.dumps(data))

    def assign(self, cluster: Any, members: Any) -> Any:
        out = {}
        for member, a in super().assign(cluster, members).items():
            data = orjson.loads(zlib.decompress(a.user_data))  # (assignment_data's form)
            data.pop("rounds")
            data.pop("group_rounds")
            out[member] = ConsumerProtocolMemberAssignment(
                a.version, a.assignment, orjson.dumps(data)
            )
        return out


async def test_led_by_an_older_version_a_member_is_eager_and_one_holding_stops(uid: str) -> None:
    """A rolling upgrade from a version without cooperative rounds: the new members release
    everything before each join (the older leader could give what they hold to another in the
    same round); a member that held partitions through a join anyway (it believed the whole
    group current) installs nothing from such a leader and calls `refused()`."""
    topic, group = f"coop-{uid}", f"coop-{uid}"
    await create_topic(topic, PARTITIONS)
    await produce(topic, [b"x"], partition=0)  # (and its metadata is known)
    older = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(),
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=300,
        partition_assignment_strategy=(OlderLeader(set, 0, set, set),),
    )
    await older.start()
    older.subscribe([topic])
    try:
        await poll_until([older], lambda: len(older.assignment()) == PARTITIONS, "the leader")
        async with cooperative_member(topic, group) as (a, ra, la):
            await poll_until([older, a], lambda: bool(a.assignment()), "a's first partitions")
            first = a.assignment()
            assert la.calls == [("assigned", first)] and not refusals[ra]
            # b believes the group current: it will hold what it gets through the next join
            async with cooperative_member(topic, group, hold=lambda: True) as (b, rb, _lb):
                await poll_until(
                    [older, a, b], lambda: bool(b.assignment()), "b's first partitions"
                )
                # a released all it held before joining, as eager
                assert la.calls[1] == ("revoked", first), la.calls
                assert not refusals[ra] and not refusals[rb]
            # b left: a rejoins, eager again; every revoke let go of all a held, never refused
            await poll_until([older, a], lambda: len(la.calls) > 3 and ra.synced(), "a again")
            assert not refusals[ra]
            for i, (kind, tps) in enumerate(la.calls):
                assert kind == "assigned" or la.calls[i - 1] == ("assigned", tps), la.calls
        async with cooperative_member(topic, group, hold=lambda: True) as (c, rc, lc):
            await poll_until([older, c], lambda: bool(c.assignment()), "c's partitions")
            async with cooperative_member(topic, group) as (d, _rd, _ld):
                # (c is not polled any more: it stopped taking part)
                await poll_until([older, d], lambda: bool(refusals[rc]), "c's refusal")
                assert lc.calls == [("assigned", c.assignment())]
    finally:
        await older.stop()


async def test_a_commit_answered_after_the_member_joined_a_newer_generation_resets_nothing(
    uid: str,
) -> None:
    """A cooperative member commits while it rejoins. A commit sent in generation n and
    answered "illegal generation" once the member has joined n + 1 must not reset the
    membership (aiokafka does): that would start another rebalance, whose commits race the
    same way, a storm that starved a two-worker dashboard test of its rates."""
    topic, group = f"coop-{uid}", f"coop-{uid}"
    await create_topic(topic, PARTITIONS)
    every = {TopicPartition(topic, p) for p in range(PARTITIONS)}
    async with cooperative_member(topic, group) as (a, ra, _):
        await poll_until([a], lambda: a.assignment() == every, "a to hold everything")
        refused = 0

        async def commit_all_the_time() -> None:  # as a checkpoint loop that never rests
            nonlocal refused
            while True:
                offsets = {tp: 0 for tp in a.assignment()}
                try:
                    await a.commit(offsets)
                except CommitFailedError:
                    refused += 1
                await asyncio.sleep(0)

        committer = asyncio.create_task(commit_all_the_time())
        try:
            async with cooperative_member(topic, group) as (b, rb, _):
                await poll_until(
                    [a, b],
                    lambda: len(b.assignment()) == PARTITIONS // 2 and rb.synced() and ra.synced(),
                    "b to get its half",
                )
                rounds = ra.rounds
                assert rounds == 3, (rounds, refused)  # a's first; b's join: two rounds
                # settled: no more rounds while a keeps committing (b heartbeats every 0.3 s)
                loop = asyncio.get_running_loop()
                until = loop.time() + 3.0
                await poll_until([a, b], lambda: loop.time() > until, "3 s of commits")
                assert ra.rounds == rounds, (rounds, ra.rounds, refused)
                assert ra.synced() and rb.synced()
                assert len(a.assignment()) == PARTITIONS // 2
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
