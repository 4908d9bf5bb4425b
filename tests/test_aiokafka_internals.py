"""streamkit/aiokafka_internals/ against the real broker: the pin (aiokafka's version and every
private attribute the module uses), and group fencing of transactional offset commits
(TxnOffsetCommit v3, KIP-447): a member of an old generation is refused, a zombie past its
session timeout cannot commit, while the group's current member commits; and the hole it
closes: aiokafka's own v0 commit is accepted from the stale member. And `know_topics`, which
refreshes a consumer's metadata until it lists the topics it will read."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from streamkit import aiokafka_internals as internals
from streamkit.aiokafka_internals import GroupFenced, GroupMetadata, group_metadata
from tests.kafkahelp import bootstrap, committed, create_topic, read_all, wait_until


def test_aiokafka_is_the_pinned_version() -> None:
    internals.check_version()  # fails when aiokafka changes: re-check the module, then re-pin


@contextlib.asynccontextmanager
async def member(topic: str, group: str, **extra: Any) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(),
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        **extra,
    )
    await consumer.start()
    consumer.subscribe([topic])
    try:
        yield consumer
    finally:
        await consumer.stop()


async def joined(consumer: AIOKafkaConsumer, partitions: int | None = None) -> None:
    """Drive the consumer until it holds an assignment (of `partitions` partitions)."""

    async def done() -> bool:
        await consumer.getmany(timeout_ms=50)
        held = consumer.assignment()
        return bool(held) and (partitions is None or len(held) == partitions)

    await wait_until(done, within=60, what="the consumer to join the group", every=0.01)


@contextlib.asynccontextmanager
async def fenced_producer(
    txn_id: str, metadata: Callable[[], GroupMetadata] | None, newer_generation: bool = False
) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), transactional_id=txn_id)
    await producer.start()
    if metadata is not None:
        internals.enable_group_fencing(producer, metadata, newer_generation=newer_generation)
    try:
        yield producer
    finally:
        await producer.stop()


async def commit_in_transaction(
    producer: AIOKafkaProducer,
    sink: str,
    value: bytes,
    offsets: dict[TopicPartition, int],
    group: str,
) -> None:
    await producer.begin_transaction()
    try:
        await producer.send_and_wait(sink, value)
        await producer.send_offsets_to_transaction(offsets, group)
        await producer.commit_transaction()
    except BaseException:
        await producer.abort_transaction()
        raise


def test_a_txn_offset_commit_error_reads_the_same_for_both_producers() -> None:
    """`commit_verdict`: an old generation is fenced unless the same member is in a newer one
    (then retried with it); a moved or timed-out coordinator is looked up again; a rebalance
    completing, a coordinator loading or the producer's previous transaction completing is
    waited out; a newer producer is a fence; anything
    else fails the transaction."""
    verdict, v = internals.commit_verdict, internals.CommitVerdict
    assert verdict(22, lambda: True) is v.RETRY  # ILLEGAL_GENERATION, member moved on
    assert verdict(22, lambda: False) is v.GROUP_FENCED
    assert verdict(25, lambda: True) is v.GROUP_FENCED  # UNKNOWN_MEMBER_ID
    assert verdict(82, lambda: True) is v.GROUP_FENCED  # FENCED_INSTANCE_ID
    for code in (15, 16, 7):  # COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, REQUEST_TIMED_OUT
        assert verdict(code, lambda: False) is v.FIND_COORDINATOR
    # loading, UNKNOWN_TOPIC_OR_PARTITION, REBALANCE_IN_PROGRESS, CONCURRENT_TRANSACTIONS
    for code in (14, 3, 27, 51):
        assert verdict(code, lambda: False) is v.RETRY
    assert verdict(90, lambda: False) is v.PRODUCER_FENCED  # PRODUCER_FENCED
    assert verdict(47, lambda: False) is v.PRODUCER_FENCED  # INVALID_PRODUCER_EPOCH
    assert verdict(29, lambda: False) is v.FAIL  # TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    sent = GroupMetadata("g", 5, "m", None)
    assert internals.moved_on(sent, GroupMetadata("g", 6, "m", None))
    assert not internals.moved_on(sent, GroupMetadata("g", 6, "other", None))
    assert not internals.moved_on(sent, GroupMetadata("g", 5, "m", None))


async def test_the_private_attributes_the_module_uses_are_there(uid: str) -> None:
    topic, group = f"pin-{uid}", f"pin-{uid}"
    await create_topic(topic, 1)
    async with member(topic, group) as consumer, fenced_producer(f"pin-{uid}", None) as producer:
        await joined(consumer)
        internals.check_consumer(consumer)
        internals.check_producer(producer)
        meta = group_metadata(consumer)
        assert meta.group_id == group and meta.generation_id >= 1 and meta.member_id
        pid, epoch = internals.producer_identity(producer)
        assert pid >= 0 and epoch >= 0


async def test_a_member_of_an_old_generation_is_refused(uid: str) -> None:
    source, sink, group = f"gen-in-{uid}", f"gen-out-{uid}", f"gen-{uid}"
    await create_topic(source, 2)
    await create_topic(sink, 1)
    tp0 = TopicPartition(source, 0)
    async with member(source, group) as a:
        await joined(a, 2)
        current = group_metadata(a)
        # the current member commits: the v3 request is accepted and the offset is there
        async with fenced_producer(f"gen-a-{uid}", lambda: group_metadata(a)) as producer:
            await commit_in_transaction(producer, sink, b"current", {tp0: 5}, group)

        async def at_five() -> bool:  # visible once the commit's markers are written
            return await committed(group, source) == {0: 5}

        await wait_until(at_five, within=10, what="the committed offset")

        async with member(source, group) as b:  # a second member: a new generation
            await wait_until(
                lambda: group_metadata(a).generation_id > current.generation_id,
                within=60,
                what="a rebalance to a new generation",
            )
            await joined(b)
            stale = current  # what a worker that missed the rebalance would still send
            async with fenced_producer(f"gen-z-{uid}", lambda: stale) as producer:
                with pytest.raises(GroupFenced) as refused:
                    await commit_in_transaction(producer, sink, b"stale", {tp0: 9}, group)
            assert refused.value.code == internals.ILLEGAL_GENERATION, refused.value
            # a refused transaction stays open on the broker until its transactional id is
            # registered again (what the worker does: it replaces a fenced producer)
            async with fenced_producer(f"gen-z-{uid}", None):
                pass
            assert await committed(group, source) == {0: 5}, "a stale generation committed"
            # a cooperative member whose request was built just before the group moved on:
            # the same member is in the new generation by then, so it retries with that one
            built: list[GroupMetadata] = []

            def first_stale() -> GroupMetadata:
                built.append(stale if not built else group_metadata(a))
                return built[-1]

            async with fenced_producer(f"gen-c-{uid}", first_stale, True) as producer:
                await commit_in_transaction(producer, sink, b"retried", {tp0: 6}, group)
            assert built[0] == stale and built[-1].generation_id > stale.generation_id

            async def at_six() -> bool:
                return await committed(group, source) == {0: 6}

            await wait_until(at_six, within=10, what="the retried commit")

            # the hole this closes: aiokafka's own TxnOffsetCommit v0 names no member, and the
            # broker takes it from anyone
            async with fenced_producer(f"gen-v0-{uid}", None) as producer:
                await commit_in_transaction(producer, sink, b"unfenced", {tp0: 7}, group)
            assert await committed(group, source) == {0: 7}
    values = [r.value for r in await read_all(sink)]
    assert values == [b"current", b"retried", b"unfenced"], "a refused transaction's record"


async def test_a_zombie_past_its_session_timeout_cannot_commit(uid: str) -> None:
    """A static member (it leaves no group on stop) falls silent: the group waits for its
    session timeout, then gives its partitions to the other member. Its producer, still alive,
    commits with its last membership: refused."""
    source, sink, group = f"zmb-in-{uid}", f"zmb-out-{uid}", f"zmb-{uid}"
    await create_topic(source, 2)
    await create_topic(sink, 1)
    tp0 = TopicPartition(source, 0)
    async with fenced_producer(f"zmb-{uid}", None) as producer:
        async with member(source, group, group_instance_id=f"zombie-{uid}") as zombie:
            await joined(zombie, 2)
            last = group_metadata(zombie)
        # the zombie stopped without leaving; another member takes over after 6 s
        async with member(source, group) as heir:
            await joined(heir, 2)
            assert group_metadata(heir).generation_id > last.generation_id
            internals.enable_group_fencing(producer, lambda: last)
            with pytest.raises(GroupFenced) as refused:
                await commit_in_transaction(producer, sink, b"zombie", {tp0: 3}, group)
    assert refused.value.code in internals.GROUP_FENCING_ERRORS, refused.value
    # and what the zombie's consumer holds once it learns it lost its membership (generation
    # -1, no member id: the broker would check nothing) is refused before it is sent
    async with fenced_producer(f"zmb-{uid}", lambda: GroupMetadata(group, -1, "", None)) as p:
        with pytest.raises(GroupFenced):
            await commit_in_transaction(p, sink, b"no member", {tp0: 4}, group)
    async with fenced_producer(f"zmb-{uid}", None):
        pass  # ends the refused transaction on the broker
    assert await committed(group, source) == {}
    assert await read_all(sink) == []


async def test_a_new_owner_waits_for_the_offsets_of_an_open_transaction(uid: str) -> None:
    """OffsetFetch v7 with require_stable: while a transaction holding offsets for a partition
    is open, `fetch_stable_offsets` waits (the broker answers UNSTABLE_OFFSET_COMMIT); once it
    commits, the new offset is returned. A plain fetch returns the old one meanwhile. One
    request (`stable_commits_once`) tells the held partition from a final one."""
    source, sink, group = f"stb-in-{uid}", f"stb-out-{uid}", f"stb-{uid}"
    await create_topic(source, 2)
    await create_topic(sink, 1)
    tp0, tp1 = TopicPartition(source, 0), TopicPartition(source, 1)
    async with member(source, group) as consumer:
        await joined(consumer, 2)
        assert await internals.fetch_stable_offsets(consumer, [tp0]) == {tp0: None}
        await consumer.commit({tp1: (7, "t=5")})
        async with fenced_producer(f"stb-{uid}", lambda: group_metadata(consumer)) as producer:
            await producer.begin_transaction()
            await producer.send_and_wait(sink, b"pending")
            await producer.send_offsets_to_transaction({tp0: (11, "t=9")}, group)
            with pytest.raises(internals.OffsetsUnstable):
                await internals.fetch_stable_offsets(consumer, [tp0], within=1.0)
            stable, held = await internals.stable_commits_once(consumer, [tp0, tp1])
            assert (stable, held) == ({tp1: OffsetAndMetadata(7, "t=5")}, [tp0])  # with metadata
            assert await committed(group, source) == {1: 7}  # without require_stable: no in[0]
            waiting = asyncio.create_task(internals.fetch_stable_offsets(consumer, [tp0]))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await producer.commit_transaction()
            assert await asyncio.wait_for(waiting, 30) == {tp0: 11}
        # TxnOffsetCommit v3 carries each offset's metadata
        assert await internals.fetch_stable_commits(consumer, [tp0]) == {
            tp0: OffsetAndMetadata(11, "t=9")
        }


async def test_know_topics_refreshes_the_consumer_metadata_and_names_what_is_missing(
    uid: str,
) -> None:
    topic, absent = f"known-{uid}", f"absent-{uid}"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap())
    await consumer.start()
    try:
        await create_topic(topic, 3)  # after the consumer's first metadata: unknown to it
        assert await internals.know_topics(consumer, [topic], 10.0) == set()
        assert consumer.partitions_for_topic(topic) == {0, 1, 2}
        assert await internals.know_topics(consumer, [topic, absent], 0.5) == {absent}
    finally:
        await consumer.stop()


async def test_a_request_to_a_leader_that_cannot_be_reached_is_no_answer(uid: str) -> None:
    """The compacted-topic reader asks each partition's leader as its metadata knows it; a node
    that cannot be reached (killed: the chaos test's case; here an id no broker has) gives no
    answer and a metadata refresh, never an error that stops the worker."""
    from aiokafka.protocol.offset import OffsetRequest

    topic = f"raw-{uid}"
    await create_topic(topic, 1)
    raw = internals.RawClient({"bootstrap_servers": bootstrap()}, f"raw-{uid}")
    try:
        await raw.start()
        assert await raw._send(4242, OffsetRequest(-1, 0, [(topic, [(0, -1)])])) is None
        # the same request to the real leader answers; the partition's offsets are read
        ends = await raw.list_offsets([TopicPartition(topic, 0)], internals.LATEST)
        assert ends == {TopicPartition(topic, 0): 0}
    finally:
        await raw.close()
