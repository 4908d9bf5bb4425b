"""The transaction's requests to its coordinators, for `txn_producer.TransactionalProducer`:
InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn and EndTxn to the transaction coordinator,
TxnOffsetCommit v3 (with the group's generation and member id, `groups.py`) to the group
coordinator. Each is retried while its error is retriable (a coordinator moved, loading, or a
transaction still completing: CONCURRENT_TRANSACTIONS) until the deadline; a fencing error
raises `ProducerFenced` (and sets `fenced`) or `GroupFenced`; any other raises its error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import errors
from aiokafka.client import ConnectionGroup, CoordinationType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.transaction import (
    AddOffsetsToTxnRequest,
    AddPartitionsToTxnRequest,
    EndTxnRequest,
    InitProducerIdRequest,
)
from aiokafka.protocol.types import (
    Boolean,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals.api_versions import broker_versions
from streamkit.aiokafka_internals.groups import (
    CONCURRENT_TRANSACTIONS,
    COORDINATOR_LOAD_IN_PROGRESS,
    COORDINATOR_NOT_AVAILABLE,
    INVALID_PRODUCER_EPOCH,
    NOT_COORDINATOR,
    PRODUCER_FENCED,
    UNKNOWN_MEMBER_ID,
    UNKNOWN_TOPIC_OR_PARTITION,
    CommitVerdict,
    GroupFenced,
    GroupMetadata,
    GroupTxnOffsetCommitRequest,
    TxnOffsetCommitRequest_v3,
    TxnOffsetCommitResponse_v3,
    commit_verdict,
    moved_on,
)

NONE = 0
DUPLICATE_SEQUENCE_NUMBER = 46
OPERATION_NOT_ATTEMPTED = 55
FENCED = {PRODUCER_FENCED, INVALID_PRODUCER_EPOCH}
_RETRY_COORDINATOR = {COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR}
_RETRY_LATER = {
    COORDINATOR_LOAD_IN_PROGRESS,
    CONCURRENT_TRANSACTIONS,
    OPERATION_NOT_ATTEMPTED,
    UNKNOWN_TOPIC_OR_PARTITION,
}
CONNECTION_ERRORS = (
    errors.KafkaConnectionError,
    errors.NodeNotReadyError,
    errors.RequestTimedOutError,
    errors.CorrelationIdError,
)


# -- transaction version 2 (KIP-890 part 2): EndTxn v5, TxnOffsetCommit v5 ---------------------


class _EndTxnResponse_v5(Response):  # type: ignore[misc]
    API_KEY = 26
    API_VERSION = 5
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class _EndTxnRequest_v5(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 26
    API_VERSION = 5
    RESPONSE_TYPE = _EndTxnResponse_v5
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("committed", Boolean),
        ("tags", TaggedFields),
    )


class _EndTxnV5(Request[_EndTxnRequest_v5]):  # type: ignore[misc]
    """EndTxn that bumps the epoch: the answer carries the id and epoch of the next one."""

    API_KEY = 26

    def __init__(self, transactional_id: str, producer_id: int, epoch: int, commit: bool) -> None:
        self._fields: tuple[Any, ...] = (transactional_id, producer_id, epoch, commit, {})

    def build(self, request_struct_class: type[_EndTxnRequest_v5]) -> _EndTxnRequest_v5:
        return request_struct_class(*self._fields)


class _TxnOffsetCommitResponse_v5(TxnOffsetCommitResponse_v3):
    API_VERSION = 5


class _TxnOffsetCommitRequest_v5(TxnOffsetCommitRequest_v3):
    API_VERSION = 5  # v3's fields; the group coordinator adds its partition to the transaction
    RESPONSE_TYPE = _TxnOffsetCommitResponse_v5


class _GroupTxnOffsetCommitV5(Request[_TxnOffsetCommitRequest_v5]):  # type: ignore[misc]
    API_KEY = 28

    def __init__(self, request: GroupTxnOffsetCommitRequest) -> None:
        self._request = request

    def build(
        self, request_struct_class: type[_TxnOffsetCommitRequest_v5]
    ) -> _TxnOffsetCommitRequest_v5:
        return self._request.build(request_struct_class)  # type: ignore[no-any-return]


class TxnCoordinator:
    """One transactional id's producer id and epoch, and its requests to the coordinators."""

    def __init__(
        self,
        client: Any,
        transactional_id: str,
        *,
        transaction_timeout_ms: int,
        backoff: float,
        deadline: float,
        group_metadata: Callable[[], GroupMetadata],
        newer_generation: bool,
    ) -> None:
        self._client = client
        self.transactional_id = transactional_id
        self._timeout_ms = transaction_timeout_ms
        self._backoff = backoff
        self._delivery_timeout = deadline
        self._metadata = group_metadata
        self._newer_generation = newer_generation
        self.producer_id = -1
        self.producer_epoch = -1
        self.fenced = False
        # transaction version 2 (`probe`): Produce v12 and TxnOffsetCommit v5 add their own
        # partitions, EndTxn v5 bumps the epoch
        self.v2 = False
        self._coordinator: int | None = None  # the transaction coordinator's node
        self._group_coordinators: dict[str, int] = {}

    async def probe(self, allow_v2: bool = True) -> None:
        """Use transaction version 2 when the cluster has it finalized (and the broker the
        request versions it takes). Asked of the brokers in a random order until one answers:
        a broker just killed stays in the metadata for a while."""
        deadline = time.monotonic() + self._delivery_timeout
        versions = None
        while versions is None:
            nodes = [broker.nodeId for broker in self._client.cluster.brokers()]
            random.shuffle(nodes)
            for node in nodes:
                try:
                    versions = await broker_versions(self._client, node)
                    break
                except CONNECTION_ERRORS:
                    continue
            else:
                if time.monotonic() > deadline:
                    raise errors.KafkaConnectionError("no broker answered ApiVersions")
                self._client.force_metadata_update()
                await asyncio.sleep(self._backoff)
        self.v2 = (
            allow_v2
            and versions.features.get("transaction.version", 0) >= 2
            and versions.supports(0, 12)
            and versions.supports(26, 5)
            and versions.supports(28, 5)
        )

    async def init_producer_id(self) -> None:
        """A new epoch for the id: its previous producer is fenced, its open transaction aborted."""
        response = await self._coordinated(
            lambda: InitProducerIdRequest(self.transactional_id, self._timeout_ms),
            "InitProducerId",
        )
        self.producer_id = int(response.producer_id)
        self.producer_epoch = int(response.producer_epoch)

    async def add_partitions(self, tps: Iterable[TopicPartition]) -> set[TopicPartition]:
        """Add these partitions to the open transaction; the ones added."""
        pending = set(tps)
        added: set[TopicPartition] = set()
        deadline = time.monotonic() + self._delivery_timeout
        while pending:
            by_topic: dict[str, list[int]] = {}
            for tp in sorted(pending):
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            request = AddPartitionsToTxnRequest(
                self.transactional_id, self.producer_id, self.producer_epoch, list(by_topic.items())
            )
            response = await self._send_to_coordinator(request)
            retry = False
            for topic, partitions in response.errors:
                for partition, code in partitions:
                    tp = TopicPartition(topic, partition)
                    if code == NONE:
                        pending.discard(tp)
                        added.add(tp)
                    else:
                        retry = self._retriable(code, "AddPartitionsToTxn") or retry
            if pending and retry:
                if time.monotonic() > deadline:
                    raise errors.KafkaTimeoutError("AddPartitionsToTxn did not succeed in time")
                await asyncio.sleep(self._backoff)
        return added

    async def add_offsets(self, group_id: str) -> None:
        await self._coordinated(
            lambda: AddOffsetsToTxnRequest(
                self.transactional_id, self.producer_id, self.producer_epoch, group_id
            ),
            "AddOffsetsToTxn",
        )

    async def end_txn(self, *, commit: bool) -> None:
        """EndTxn; under transaction version 2 the answer's id and epoch are the next
        transaction's (every partition's sequence starts again at 0)."""
        if not self.v2:
            await self._coordinated(
                lambda: EndTxnRequest(
                    self.transactional_id, self.producer_id, self.producer_epoch, commit
                ),
                "EndTxn",
            )
            return
        response = await self._coordinated(
            lambda: _EndTxnV5(self.transactional_id, self.producer_id, self.producer_epoch, commit),
            "EndTxn",
        )
        self.producer_id = int(response.producer_id)
        self.producer_epoch = int(response.producer_epoch)

    async def _coordinated(self, make: Callable[[], Any], what: str) -> Any:
        """A request to the transaction coordinator with one `error_code`, retried while the
        error is retriable."""
        deadline = time.monotonic() + self._delivery_timeout
        while True:
            response = await self._send_to_coordinator(make())
            code = response.error_code
            if code == NONE:
                return response
            self._retriable(code, what)
            if time.monotonic() > deadline:
                raise errors.KafkaTimeoutError(f"{what} did not succeed in time")
            await asyncio.sleep(self._backoff)

    def _retriable(self, code: int, what: str) -> bool:
        """True for an error worth retrying (a coordinator moved or busy); raise any other."""
        if code in _RETRY_COORDINATOR:
            self._coordinator = None
            return True
        if code in _RETRY_LATER:
            return True
        if code in FENCED:
            self.fenced = True
            raise errors.ProducerFenced()
        raise errors.for_code(code)(f"{what} of {self.transactional_id}")

    async def _send_to_coordinator(self, request: Any) -> Any:
        deadline = time.monotonic() + self._delivery_timeout
        while True:
            try:
                if self._coordinator is None:
                    self._coordinator = await self._client.coordinator_lookup(
                        CoordinationType.TRANSACTION, self.transactional_id
                    )
                return await self._client.send(
                    self._coordinator, request, group=ConnectionGroup.COORDINATION
                )
            except (
                *CONNECTION_ERRORS,
                errors.CoordinatorNotAvailableError,
                errors.NotCoordinatorError,
                errors.CoordinatorLoadInProgressError,
            ):
                self._coordinator = None
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(self._backoff)

    async def commit_offsets(self, offsets: dict[TopicPartition, Any], group_id: str) -> None:
        """TxnOffsetCommit v3 with the group's generation, retried while the group coordinator
        is busy or moved (or, `newer_generation`, while this member's generation moved on).

        Version 2 (v5): the group coordinator adds its partition to the transaction itself,
        and answers COORDINATOR_LOAD_IN_PROGRESS while the transaction coordinator is busy
        with another change of the same transaction (the partitions the Produce requests add
        at the same moment). That passes within a millisecond or two: the first retries come
        after 1, 2, 4... ms rather than the full backoff (at 20 ms, ~1 checkpoint in 5 took
        20 ms longer at 8 partitions)."""
        deadline = time.monotonic() + self._delivery_timeout
        attempt = 0
        while True:
            group = self._metadata()
            if group.generation_id < 0 or not group.member_id:
                raise GroupFenced(UNKNOWN_MEMBER_ID, group)  # no membership: a v0 commit
            node = self._group_coordinators.get(group_id)
            request: Any = GroupTxnOffsetCommitRequest(
                self.transactional_id, self.producer_id, self.producer_epoch, group, offsets
            )
            if self.v2:
                request = _GroupTxnOffsetCommitV5(request)
            try:
                if node is None:
                    node = await self._client.coordinator_lookup(CoordinationType.GROUP, group_id)
                    self._group_coordinators[group_id] = node
                response = await self._client.send(
                    node, request, group=ConnectionGroup.COORDINATION
                )
                codes = [code for _, parts, _ in response.topics for _, code, _ in parts if code]
            except (
                *CONNECTION_ERRORS,
                errors.CoordinatorNotAvailableError,
                errors.NotCoordinatorError,
            ):
                codes = [NOT_COORDINATOR]
            if not codes:
                return
            code = codes[0]
            verdict = commit_verdict(code, lambda: self._moved_on(group))  # noqa: B023
            if verdict is CommitVerdict.GROUP_FENCED:
                raise GroupFenced(code, group)
            if verdict is CommitVerdict.PRODUCER_FENCED:
                self.fenced = True
                raise errors.ProducerFenced()
            if verdict is CommitVerdict.FAIL:
                raise errors.for_code(code)(f"TxnOffsetCommit of {self.transactional_id}")
            if verdict is CommitVerdict.FIND_COORDINATOR:
                self._group_coordinators.pop(group_id, None)
            # (RETRY: a newer generation of this member, which the retry carries; or busy)
            if time.monotonic() > deadline:
                raise errors.KafkaTimeoutError("TxnOffsetCommit did not succeed in time")
            busy = code == COORDINATOR_LOAD_IN_PROGRESS and self.v2
            await asyncio.sleep(min(self._backoff, 0.001 * 2**attempt) if busy else self._backoff)
            attempt += 1

    def _moved_on(self, group: GroupMetadata) -> bool:
        return self._newer_generation and moved_on(group, self._metadata())
