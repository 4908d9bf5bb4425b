"""Every use of aiokafka's internals, in one module, pinned to the aiokafka version it was
written against (`AIOKAFKA_VERSION`; tests/test_aiokafka_internals.py fails when aiokafka
changes or an attribute used here moves). Nothing else in streamkit touches aiokafka's
private attributes.

Group fencing of transactional offset commits (KIP-447), for one transactional producer per
worker. aiokafka 0.14 commits offsets in a transaction with TxnOffsetCommit v0, which names no
group member: the broker cannot tell a zombie from the partition's owner. Here:

- `TxnOffsetCommitRequest_v3`: the first version that carries the consumer's generation id,
  member id and group instance id (and the first flexible one), declared with aiokafka's
  protocol building blocks.
- `enable_group_fencing(producer, metadata)`: the producer's sender sends that request instead
  of v0, with the group metadata read when the request is built (none, generation -1: refused
  here, as the broker would not check it); a broker answer that says the
  member is not the group's (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID) makes the
  transaction fail with `GroupFenced`: abort it, drop the work, replace the producer (a new one
  with the same transactional id ends the transaction on the broker), rejoin. With
  `newer_generation=True` (cooperative members) an ILLEGAL_GENERATION answer to a request
  built just before the group moved on, when `metadata()` shows the same member in a newer
  generation by then, is retried with it: the member kept its partitions (a cooperative round
  gives a partition to another member only after its holder revoked it, and that revoke's
  checkpoint waits for this transaction).
- `group_metadata(consumer)`: the generation and member id of the consumer's group membership.
- `fetch_stable_offsets(consumer, tps)`: OffsetFetch v7 with `require_stable`: the group's
  committed offsets once no transaction that commits offsets for them is open (a new owner
  must not start from an offset that a zombie's open transaction may still move).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiokafka
import aiokafka.errors as errors
from aiokafka.client import CoordinationType
from aiokafka.producer.sender import TxnOffsetCommitHandler
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition

AIOKAFKA_VERSION = "0.14.0"

ILLEGAL_GENERATION = 22
REBALANCE_IN_PROGRESS = 27
UNKNOWN_MEMBER_ID = 25
FENCED_INSTANCE_ID = 82
UNSTABLE_OFFSET_COMMIT = 88
PRODUCER_FENCED = 90
GROUP_FENCING_ERRORS = {ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID}
NO_GENERATION = -1


class InternalsMoved(RuntimeError):
    """aiokafka is not the version this module was written for, or an internal moved."""


class GroupFenced(errors.KafkaError):  # type: ignore[misc]
    """The group coordinator refused a transactional offset commit: this worker is no longer
    the member (or generation) that owns the partitions. The transaction must be aborted."""

    def __init__(self, code: int, metadata: GroupMetadata) -> None:
        self.code = code
        self.metadata = metadata
        names = {
            ILLEGAL_GENERATION: "ILLEGAL_GENERATION",
            UNKNOWN_MEMBER_ID: "UNKNOWN_MEMBER_ID",
            FENCED_INSTANCE_ID: "FENCED_INSTANCE_ID",
        }
        super().__init__(
            f"group {metadata.group_id} refused the offsets of generation "
            f"{metadata.generation_id}, member {metadata.member_id!r}: {names.get(code, code)}"
        )


@dataclass(frozen=True)
class GroupMetadata:
    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None


# -- checks ------------------------------------------------------------------------------------

CONSUMER_ATTRIBUTES = ("_coordinator", "_group_id", "_client")
COORDINATOR_ATTRIBUTES = ("generation", "member_id", "_group_instance_id")
PRODUCER_ATTRIBUTES = ("_sender", "_txn_manager")
SENDER_ATTRIBUTES = ("_txn_manager", "_find_coordinator", "_do_txn_offset_commit", "client")


def check_version() -> None:
    if aiokafka.__version__ != AIOKAFKA_VERSION:
        raise InternalsMoved(
            f"streamkit.aiokafka_internals was written for aiokafka {AIOKAFKA_VERSION}, "
            f"found {aiokafka.__version__}: check every internal it uses, then update "
            "AIOKAFKA_VERSION (tests/test_aiokafka_internals.py)"
        )


def _require(obj: Any, names: Iterable[str], what: str) -> None:
    missing = [n for n in names if not hasattr(obj, n)]
    if missing:
        raise InternalsMoved(
            f"aiokafka {aiokafka.__version__}: {what} has no {', '.join(missing)} any more"
        )


def check_consumer(consumer: Any) -> None:
    """The consumer's internals this module reads (after `start()`, with a group id)."""
    _require(consumer, CONSUMER_ATTRIBUTES, "AIOKafkaConsumer")
    _require(consumer._coordinator, COORDINATOR_ATTRIBUTES, "GroupCoordinator")


def check_producer(producer: Any) -> None:
    """The transactional producer's internals `enable_group_fencing` replaces or calls."""
    _require(producer, PRODUCER_ATTRIBUTES, "AIOKafkaProducer")
    _require(producer._sender, SENDER_ATTRIBUTES, "Sender")
    _require(TxnOffsetCommitHandler, ("do", "create_request", "handle_response"), "handler")


# -- group metadata ----------------------------------------------------------------------------


def group_metadata(consumer: Any) -> GroupMetadata:
    """The consumer's current group membership (generation -1 and no member id while it has
    none). Read from its group coordinator object: aiokafka exposes neither publicly."""
    coordinator = consumer._coordinator
    if coordinator is None or not hasattr(coordinator, "generation"):
        return GroupMetadata(consumer._group_id, NO_GENERATION, "", None)
    return GroupMetadata(
        consumer._group_id,
        int(coordinator.generation),
        str(coordinator.member_id or ""),
        coordinator._group_instance_id,
    )


# -- TxnOffsetCommit v3 ------------------------------------------------------------------------

_TAGS = ("tags", TaggedFields)


class TxnOffsetCommitResponse_v3(Response):  # type: ignore[misc]
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partitions", CompactArray(("partition", Int32), ("error_code", Int16), _TAGS)),
                _TAGS,
            ),
        ),
        _TAGS,
    )


class TxnOffsetCommitRequest_v3(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),  # null: no instance id
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition", Int32),
                        ("offset", Int64),
                        ("leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),
                        _TAGS,
                    ),
                ),
                _TAGS,
            ),
        ),
        _TAGS,
    )


class GroupTxnOffsetCommitRequest(Request[TxnOffsetCommitRequest_v3]):  # type: ignore[misc]
    """TxnOffsetCommit with the group's generation and member (v3 only: older versions cannot
    say it, so a broker without v3 gets no request rather than an unfenced one)."""

    API_KEY = 28

    def __init__(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        group: GroupMetadata,
        offsets: dict[TopicPartition, int] | dict[TopicPartition, tuple[int, str]],
    ) -> None:
        self._transactional_id = transactional_id
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._group = group
        by_topic: dict[str, list[tuple[int, int, int, str, dict[int, bytes]]]]
        by_topic = collections.defaultdict(list)
        for tp, at in sorted(offsets.items()):
            offset, metadata = at if isinstance(at, tuple) else (at, "")
            by_topic[tp.topic].append((tp.partition, offset, -1, metadata, {}))
        self._topics: list[tuple[str, Any, dict[int, bytes]]]
        self._topics = [(topic, parts, {}) for topic, parts in by_topic.items()]

    def build(self, request_struct_class: type[TxnOffsetCommitRequest_v3]) -> Any:
        g = self._group
        return request_struct_class(
            self._transactional_id,
            g.group_id,
            self._producer_id,
            self._producer_epoch,
            g.generation_id,
            g.member_id,
            g.group_instance_id,
            self._topics,
            {},
        )


class _GroupFencedCommitHandler(TxnOffsetCommitHandler):  # type: ignore[misc]
    """aiokafka's handler for the transactional offset commit, sending v3 with the group's
    metadata, and turning the group's refusal into an abortable `GroupFenced`."""

    def __init__(
        self,
        sender: Any,
        offsets: Any,
        group_id: str,
        group: GroupMetadata,
        newer: Callable[[], GroupMetadata] | None = None,
    ) -> None:
        super().__init__(sender, offsets, group_id)
        self._group = group
        self._newer = newer  # the metadata now, when a newer generation may be retried

    def create_request(self) -> Any:
        txn = self._sender._txn_manager
        offsets = {tp: (meta.offset, meta.metadata or "") for tp, meta in self._offsets.items()}
        return GroupTxnOffsetCommitRequest(
            txn.transactional_id, txn.producer_id, txn.producer_epoch, self._group, offsets
        )

    def handle_response(self, resp: Any) -> float | None:
        """None when done (committed, or the transaction failed); a backoff to retry."""
        txn = self._sender._txn_manager
        for topic, partitions, _ in resp.topics:
            for partition, code, _ in partitions:
                tp = TopicPartition(topic, partition)
                if code == 0:
                    txn.offset_committed(tp, self._offsets[tp].offset, self._group_id)
                    continue
                error = errors.for_code(code)
                if code == ILLEGAL_GENERATION and self._moved_on():
                    return float(self._default_backoff)  # the retry reads the metadata again
                if code in GROUP_FENCING_ERRORS:
                    _fail_transaction(txn, GroupFenced(code, self._group))
                    return None
                if error in (
                    errors.CoordinatorNotAvailableError,
                    errors.NotCoordinatorError,
                    errors.RequestTimedOutError,
                ):
                    self._sender._coordinator_dead(CoordinationType.GROUP)
                    return float(self._default_backoff)
                if (
                    error
                    in (
                        errors.CoordinatorLoadInProgressError,
                        errors.UnknownTopicOrPartitionError,
                    )
                    or code == REBALANCE_IN_PROGRESS
                ):
                    # (a cooperative member keeps its partitions while the group completes a
                    # rebalance: the retry is built with the generation current by then)
                    return float(self._default_backoff)
                if error is errors.InvalidProducerEpoch or code == PRODUCER_FENCED:
                    raise errors.ProducerFenced()
                _fail_transaction(txn, error())  # anything else: abort this transaction
                return None
        return None

    def _moved_on(self) -> bool:
        """The same member is in a newer generation now (see the module's docstring)."""
        if self._newer is None:
            return False
        now = self._newer()
        return now.member_id == self._group.member_id and (
            now.generation_id > self._group.generation_id
        )


def _fail_transaction(txn: Any, exc: BaseException) -> None:
    """Make the open transaction abortable with `exc` (raised by `send_offsets_to_transaction`
    and `commit_transaction`). aiokafka then forgets the transaction's partitions, so its
    `abort_transaction` sends no EndTxn: the transaction stays open on the broker until the
    producer is replaced (a new producer with the same transactional id aborts it at once in
    `InitProducerId`) or it times out. Callers discard the producer after this error."""
    txn.error_transaction(exc)
    waiter = txn.wait_for_transaction_end()
    if waiter.done():
        waiter.exception()  # retrieved: the caller learns it from the offsets' future


def enable_group_fencing(
    producer: Any, metadata: Callable[[], GroupMetadata], *, newer_generation: bool = False
) -> None:
    """Make this transactional producer commit offsets with TxnOffsetCommit v3 carrying
    `metadata()` (read as each request is built): `send_offsets_to_transaction` then fails
    with `GroupFenced` when the group has moved on (`newer_generation`: unless the same member
    is in a newer generation by then, see the module's docstring). Call after
    `producer.start()`."""
    check_version()
    check_producer(producer)
    sender = producer._sender

    async def txn_offset_commit(offsets: Any, group_id: str) -> None:
        if not offsets:
            return
        group = metadata()
        if group.generation_id < 0 or not group.member_id:
            # No membership (lost it: the consumer reset its generation, and is rejoining).
            # The broker would take such a commit without any check, as a v0 one: refuse it.
            _fail_transaction(sender._txn_manager, GroupFenced(UNKNOWN_MEMBER_ID, group))
            return
        try:
            node_id = await sender._find_coordinator(CoordinationType.GROUP, group_id)
        except errors.GroupAuthorizationFailedError as exc:
            sender._txn_manager.error_transaction(exc)
            return
        newer = metadata if newer_generation else None
        await _GroupFencedCommitHandler(sender, offsets, group_id, group, newer).do(node_id)

    sender._do_txn_offset_commit = txn_offset_commit


def producer_identity(producer: Any) -> tuple[int, int]:
    """(producer id, epoch) of a started transactional producer."""
    txn = producer._txn_manager
    return int(txn.producer_id), int(txn.producer_epoch)


# -- OffsetFetch v7 (require_stable) -----------------------------------------------------------


class OffsetFetchResponse_v7(Response):  # type: ignore[misc]
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition", Int32),
                        ("offset", Int64),
                        ("leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),
                        ("error_code", Int16),
                        _TAGS,
                    ),
                ),
                _TAGS,
            ),
        ),
        ("error_code", Int16),
        _TAGS,
    )


class OffsetFetchRequest_v7(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")), ("partitions", CompactArray(Int32)), _TAGS
            ),
        ),
        ("require_stable", Boolean),
        _TAGS,
    )


class StableOffsetFetchRequest(Request[OffsetFetchRequest_v7]):  # type: ignore[misc]
    API_KEY = 9

    def __init__(self, group_id: str, tps: Iterable[TopicPartition]) -> None:
        self._group_id = group_id
        by_topic: dict[str, list[int]] = collections.defaultdict(list)
        for tp in sorted(tps):
            by_topic[tp.topic].append(tp.partition)
        self._topics: list[tuple[str, list[int], dict[int, bytes]]]
        self._topics = [(topic, parts, {}) for topic, parts in by_topic.items()]

    def build(self, request_struct_class: type[OffsetFetchRequest_v7]) -> Any:
        return request_struct_class(self._group_id, self._topics, True, {})


class OffsetsUnstable(TimeoutError):
    """Committed offsets stayed pending in an open transaction past the wait."""


async def fetch_stable_offsets(
    consumer: Any, tps: Iterable[TopicPartition], within: float = 120.0
) -> dict[TopicPartition, int | None]:
    """The group's committed offset of each partition (None: none committed), once no open
    transaction holds pending offsets for them (the broker answers UNSTABLE_OFFSET_COMMIT until
    the transaction ends: committed, aborted, or timed out)."""
    found = await fetch_stable_commits(consumer, tps, within)
    return {tp: None if c is None else c.offset for tp, c in found.items()}


async def fetch_stable_commits(
    consumer: Any, tps: Iterable[TopicPartition], within: float = 120.0
) -> dict[TopicPartition, OffsetAndMetadata | None]:
    """`fetch_stable_offsets` with each commit's metadata string."""
    tps = list(tps)
    deadline = time.monotonic() + within
    found: dict[TopicPartition, OffsetAndMetadata | None] = {}
    asking = tps
    while True:
        stable, asking = await stable_commits_once(consumer, asking)
        found.update(stable)
        if not asking:
            return {tp: found.get(tp) for tp in tps}
        if time.monotonic() > deadline:
            raise OffsetsUnstable(
                f"offsets of {len(asking)} partitions still unstable after {within}s"
            )
        await asyncio.sleep(0.05)


async def stable_commits_once(
    consumer: Any, tps: Iterable[TopicPartition]
) -> tuple[dict[TopicPartition, OffsetAndMetadata | None], list[TopicPartition]]:
    """One OffsetFetch with require_stable: (the commit, offset and metadata, of each partition
    that no open transaction holds, None where none is committed; the partitions still held).
    A retriable error of the request leaves them all held."""
    check_version()
    check_consumer(consumer)
    client, group_id = consumer._client, consumer._group_id
    tps = list(tps)
    if not tps:
        return {}, []
    try:
        node = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
        resp = await client.send(node, StableOffsetFetchRequest(group_id, tps))
    except errors.KafkaError as exc:
        if not getattr(exc, "retriable", False):
            raise
        return {}, tps
    if resp.error_code not in (0, UNSTABLE_OFFSET_COMMIT):
        error = errors.for_code(resp.error_code)
        if not getattr(error, "retriable", False):
            raise error()
        return {}, tps
    found: dict[TopicPartition, OffsetAndMetadata | None] = {}
    held = set(tps) if resp.error_code else set()
    for topic, partitions, _ in resp.topics:
        for partition, offset, _epoch, metadata, code, _ in partitions:
            tp = TopicPartition(topic, partition)
            if code == UNSTABLE_OFFSET_COMMIT:
                held.add(tp)
            elif code:
                raise errors.for_code(code)()
            else:
                found[tp] = OffsetAndMetadata(offset, metadata or "") if offset >= 0 else None
    stable = {tp: found.get(tp) for tp in tps if tp not in held}  # unlisted: none committed
    return stable, [tp for tp in tps if tp in held]


async def know_topics(consumer: Any, topics: Iterable[str], within: float) -> set[str]:
    """Refresh the consumer's metadata until it lists every one of `topics` with partitions;
    the topics still unknown after `within` seconds. A topic just created is not on every
    broker's metadata at once (a cluster of several): a group leader whose metadata lacks it
    assigns none of its partitions, and aiokafka looks again only at its next periodic
    refresh (`metadata_max_age_ms`, 5 minutes by default)."""
    client = consumer._client
    wanted = set(topics)
    for topic in wanted:
        client.add_topic(topic)
    deadline = time.monotonic() + within
    while True:
        missing = {t for t in wanted if not client.cluster.partitions_for_topic(t)}
        if not missing or time.monotonic() > deadline:
            return missing
        await client.force_metadata_update()
        await asyncio.sleep(0.1)
