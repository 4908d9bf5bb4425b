"""aiokafka's internals for consumer groups, pinned to the aiokafka version they were written
against (`AIOKAFKA_VERSION`; tests/test_aiokafka_internals.py fails when aiokafka changes or an
attribute used here moves). Nothing outside this package touches aiokafka's private
attributes.

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

OffsetFetch v7 with `require_stable` is in `offsets.py`.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import aiokafka
import aiokafka.errors as errors
from aiokafka.client import CoordinationType
from aiokafka.producer.sender import TxnOffsetCommitHandler
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals.produce import (
    compact_string,
    read_uvarint,
    skip_tags,
    uvarint,
)

AIOKAFKA_VERSION = "0.14.0"

ILLEGAL_GENERATION = 22
REBALANCE_IN_PROGRESS = 27
UNKNOWN_MEMBER_ID = 25
FENCED_INSTANCE_ID = 82
UNSTABLE_OFFSET_COMMIT = 88
PRODUCER_FENCED = 90
GROUP_FENCING_ERRORS = {ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID}
NO_GENERATION = -1
UNKNOWN_TOPIC_OR_PARTITION = 3
REQUEST_TIMED_OUT = 7
COORDINATOR_LOAD_IN_PROGRESS = 14
COORDINATOR_NOT_AVAILABLE = 15
NOT_COORDINATOR = 16
INVALID_PRODUCER_EPOCH = 47
CONCURRENT_TRANSACTIONS = 51


class CommitVerdict(enum.Enum):
    """What a TxnOffsetCommit's error code asks of its sender (`commit_verdict`)."""

    RETRY = enum.auto()  # after a backoff, with the group's metadata read again
    FIND_COORDINATOR = enum.auto()  # the group coordinator moved or is away: look it up, retry
    GROUP_FENCED = enum.auto()  # the group says the member is not its: `GroupFenced`
    PRODUCER_FENCED = enum.auto()  # a newer producer holds the transactional id
    FAIL = enum.auto()  # anything else: the transaction fails


def commit_verdict(code: int, moved_on: Callable[[], bool]) -> CommitVerdict:
    """The one reading of a TxnOffsetCommit error, for both transactional producers (aiokafka's
    through `enable_group_fencing`, streamkit's `TxnCoordinator.commit_offsets`). `moved_on`:
    whether the same member is in a newer generation by now (`newer_generation`), so an
    ILLEGAL_GENERATION is retried with it rather than fenced."""
    if code == ILLEGAL_GENERATION and moved_on():
        return CommitVerdict.RETRY
    if code in GROUP_FENCING_ERRORS:
        return CommitVerdict.GROUP_FENCED
    if code in (COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, REQUEST_TIMED_OUT):
        return CommitVerdict.FIND_COORDINATOR
    # (a cooperative member keeps its partitions while the group completes a rebalance: the
    # retry is built with the generation current by then; the producer's previous transaction
    # still completing, KIP-890's verification: retried, as Java's client retries every
    # retriable code here)
    if code in (
        COORDINATOR_LOAD_IN_PROGRESS,
        UNKNOWN_TOPIC_OR_PARTITION,
        REBALANCE_IN_PROGRESS,
        CONCURRENT_TRANSACTIONS,
    ):
        return CommitVerdict.RETRY
    if code in (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH):
        return CommitVerdict.PRODUCER_FENCED
    return CommitVerdict.FAIL


def moved_on(sent: GroupMetadata, now: GroupMetadata) -> bool:
    """The member that sent a commit with `sent` is, by `now`, in a newer generation."""
    return now.member_id == sent.member_id and now.generation_id > sent.generation_id


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
    """Read by hand (`decode`), as the same tuples aiokafka's `SCHEMA` decoder gives: one
    checkpoint commits the offsets of every input partition of the worker in it."""

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

    @classmethod
    def decode(cls, data: BytesIO | bytes) -> TxnOffsetCommitResponse_v3:
        buf = data.getvalue() if isinstance(data, BytesIO) else data
        pos = data.tell() if isinstance(data, BytesIO) else 0
        (throttle,) = _INT.unpack_from(buf, pos)
        count, pos = read_uvarint(buf, pos + 4)
        topics: list[tuple[str, list[tuple[int, int, dict[int, bytes]]], dict[int, bytes]]] = []
        for _ in range(count - 1):
            length, pos = read_uvarint(buf, pos)
            name = buf[pos : pos + length - 1].decode()
            pos += length - 1
            parts, pos = read_uvarint(buf, pos)
            answers: list[tuple[int, int, dict[int, bytes]]] = []
            for _ in range(parts - 1):
                partition, code = _ANSWER.unpack_from(buf, pos)
                pos = skip_tags(buf, pos + _ANSWER.size)
                answers.append((partition, code, {}))
            pos = skip_tags(buf, pos)
            topics.append((name, answers, {}))
        return cls(throttle, topics, {})


class TxnOffsetCommitRequest_v3(RequestStruct):  # type: ignore[misc]
    """Written by hand (`encode`, the bytes of `SCHEMA`'s encoder): aiokafka's generic encoder
    walks each of a few hundred partitions field by field."""

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

    def encode(self) -> bytes:
        out = [
            compact_string(self.transactional_id),
            compact_string(self.group_id),
            _PRODUCER.pack(self.producer_id, self.producer_epoch, self.generation_id),
            compact_string(self.member_id),
            compact_string(self.group_instance_id),
            uvarint(len(self.topics) + 1),
        ]
        append = out.append
        for name, parts, _ in self.topics:
            append(compact_string(name))
            append(uvarint(len(parts) + 1))
            for partition, offset, leader_epoch, metadata, _ in parts:
                append(_OFFSET.pack(partition, offset, leader_epoch))
                append(compact_string(metadata))
                append(b"\x00")  # no tagged fields
            append(b"\x00")
        append(b"\x00")
        return b"".join(out)


_INT = struct.Struct(">i")
_ANSWER = struct.Struct(">ih")  # partition, error code
_PRODUCER = struct.Struct(">qhi")  # producer id, epoch, generation
_OFFSET = struct.Struct(">iqi")  # partition, offset, leader epoch


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
                verdict = commit_verdict(code, self._moved_on)
                if verdict is CommitVerdict.RETRY:  # the retry reads the metadata again
                    return float(self._default_backoff)
                if verdict is CommitVerdict.FIND_COORDINATOR:
                    self._sender._coordinator_dead(CoordinationType.GROUP)
                    return float(self._default_backoff)
                if verdict is CommitVerdict.PRODUCER_FENCED:
                    raise errors.ProducerFenced()
                failure = (
                    GroupFenced(code, self._group)
                    if verdict is CommitVerdict.GROUP_FENCED
                    else errors.for_code(code)()
                )
                _fail_transaction(txn, failure)  # abort this transaction
                return None
        return None

    def _moved_on(self) -> bool:
        """The same member is in a newer generation now (see the module's docstring)."""
        return self._newer is not None and moved_on(self._group, self._newer())


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
