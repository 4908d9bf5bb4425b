"""The raw client: streamkit's own requests on aiokafka's client and connections
(`aiokafka.client`, `.protocol`, `.conn`), pinned to aiokafka 0.14.

The public API (consumer, producer, admin, structs, errors) is used where it is needed; what
is here is not public, so an aiokafka upgrade is checked against this package alone. It imports
nothing from streamkit outside it: connection options come in as the keyword arguments every
client is built with (`streamkit.clients.connection_options`).

- `RawClient`: read_committed Fetch requests whose record batches are walked by their headers
  (`records.committed_batches`: control batches and aborted transactions
  skipped as a read_committed consumer does, KIP-98): `fetch`, keys and values for the
  compacted-topic reader; `fetch_input`, one leader's batches for the input partitions'
  fetch path (`runtime/fetch.py`), in an incremental fetch session (`sessions.py`).
  ListOffsets (log start, last stable offset), and topic ids (Metadata v12, which aiokafka
  does not declare: a topic deleted and created again has a new id).
- `probe_connection`: one direct connection, to explain why a bootstrap failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    NodeNotReadyError,
    RequestTimedOutError,
    for_code,
)
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.offset import OffsetRequest
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals.records import Batch, batch_rows, committed_batches
from streamkit.aiokafka_internals.sessions import FetchSession

READ_UNCOMMITTED, READ_COMMITTED = 0, 1
PARTITION_BYTES = 8 * 1024 * 1024
FETCH_BYTES = 64 * 1024 * 1024
OFFSET_OUT_OF_RANGE = 1
LATEST, EARLIEST = -1, -2  # ListOffsets timestamps


class FetchFailed(Exception):
    """A partition answered with an error that a metadata refresh does not cure."""


@dataclass
class Fetched:
    """One partition's part of a fetch: its records' keys and values, and where to go on."""

    rows: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    next_offset: int = 0
    last_stable: int = 0  # the partition's last stable offset (end for read_committed)
    out_of_range: bool = False  # the position is before the log start or past the end
    max_timestamp: int = -1  # the newest record timestamp (ms) of the batches read
    times: list[int] | None = None  # each row's timestamp (ms), when asked for (`timed`)


@dataclass
class InputFetched:
    """One input partition's part of a fetch: its record batches still to read (read_committed:
    `input_records` takes them), from `start` on, and where to go on. `retry`: the partition
    answered with an error a metadata refresh cures (a moved leader): nothing read, ask again
    (the refresh is under way)."""

    batches: list[Batch]
    start: int
    next_offset: int
    last_stable: int = -1  # the last stable offset: where a read_committed reader ends
    out_of_range: bool = False
    retry: bool = False


# -- Metadata v12: topic ids -------------------------------------------------------------------


class _Uuid:
    """Kafka's UUID: 16 raw bytes (aiokafka 0.14 has no such type)."""

    @classmethod
    def encode(cls, value: bytes) -> bytes:
        return value

    @classmethod
    def decode(cls, data: BytesIO) -> bytes:
        value = data.read(16)
        if len(value) != 16:
            raise ValueError("Buffer underrun decoding a UUID")
        return value


class _TopicIdsResponse_v12(Response):  # type: ignore[misc]
    API_KEY = 3
    API_VERSION = 12
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "brokers",
            CompactArray(
                ("node_id", Int32),
                ("host", CompactString("utf-8")),
                ("port", Int32),
                ("rack", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        (
            "topics",
            CompactArray(
                ("error_code", Int16),
                ("name", CompactString("utf-8")),
                ("topic_id", _Uuid),
                ("is_internal", Boolean),
                (
                    "partitions",
                    CompactArray(
                        ("error_code", Int16),
                        ("partition_index", Int32),
                        ("leader_id", Int32),
                        ("leader_epoch", Int32),
                        ("replica_nodes", CompactArray(Int32)),
                        ("isr_nodes", CompactArray(Int32)),
                        ("offline_replicas", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("topic_authorized_operations", Int32),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _TopicIdsRequest_v12(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 12
    RESPONSE_TYPE = _TopicIdsResponse_v12
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("topic_id", _Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields)
            ),
        ),
        ("allow_auto_topic_creation", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class _TopicIdsRequest(Request[_TopicIdsRequest_v12]):  # type: ignore[misc]
    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[_TopicIdsRequest_v12]) -> _TopicIdsRequest_v12:
        topics: list[tuple[bytes, str, dict[int, bytes]]]
        topics = [(bytes(16), name, {}) for name in self._topics]
        return request_struct_class(topics, False, False, {})


# -- the client --------------------------------------------------------------------------------


class RawClient:
    """An `AIOKafkaClient` that sends the compacted-topic reader's requests itself."""

    def __init__(self, options: dict[str, Any], client_id: str) -> None:
        self._client: Any = AIOKafkaClient(**options, client_id=client_id)
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self._client.bootstrap()
            self._started = True

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self._client.close()

    async def _leader(self, tp: TopicPartition) -> int | None:
        leader = self._client.cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            self._client.add_topic(tp.topic)
            await self._client.force_metadata_update()
            leader = self._client.cluster.leader_for_partition(tp)
        return None if leader is None or leader < 0 else int(leader)

    async def _by_leader(self, tps: list[TopicPartition]) -> dict[int, list[TopicPartition]]:
        """The partitions by leader; one without a leader now (a topic being created or
        deleted, a leader election) is left out: the caller asks again later."""
        await self.start()
        by_node: dict[int, list[TopicPartition]] = {}
        for tp in tps:
            leader = await self._leader(tp)
            if leader is not None:
                by_node.setdefault(leader, []).append(tp)
        return by_node

    async def _send(self, node: int, request: Any) -> Any | None:
        """Send to `node`; None when it cannot be reached now (a broker down, or a leader that
        moved before our metadata knew): the metadata is refreshed and the caller asks again."""
        try:
            return await self._client.send(node, request)
        except (NodeNotReadyError, KafkaConnectionError, RequestTimedOutError):
            self._client.force_metadata_update()
            return None

    def _retry_or_raise(self, tp: TopicPartition, error_code: int) -> None:
        error = for_code(error_code)
        if getattr(error, "retriable", False) or getattr(error, "invalid_metadata", False):
            self._client.force_metadata_update()
            return  # the next call asks the (new) leader again
        raise FetchFailed(f"{tp.topic}[{tp.partition}]: {error.__name__}")

    async def partitions(self, topic: str) -> int:
        """How many partitions `topic` has (0 when it does not exist)."""
        await self.start()
        self._client.add_topic(topic)
        await self._client.force_metadata_update()
        return len(self._client.cluster.partitions_for_topic(topic) or ())

    async def list_offsets(
        self, tps: list[TopicPartition], which: int, *, committed: bool = True
    ) -> dict[TopicPartition, int]:
        """`EARLIEST` (log start) or `LATEST` of each partition: the last stable offset when
        `committed` (where a read_committed reader ends), else the high watermark; a
        partition whose leader is moving is asked again."""
        found: dict[TopicPartition, int] = {}
        for attempt in range(20):
            missing = [tp for tp in tps if tp not in found]
            if not missing:
                break
            if attempt:
                await asyncio.sleep(0.05 * attempt)
            for node, group in (await self._by_leader(missing)).items():
                topics: dict[str, list[tuple[int, int]]] = {}
                for tp in group:
                    topics.setdefault(tp.topic, []).append((tp.partition, which))
                isolation = READ_COMMITTED if committed else READ_UNCOMMITTED
                request = OffsetRequest(-1, isolation, list(topics.items()))
                response = await self._send(node, request)
                if response is None:
                    continue
                for topic, partitions in response.topics:
                    for partition, error_code, *rest in partitions:
                        tp = TopicPartition(topic, partition)
                        if error_code:
                            self._retry_or_raise(tp, error_code)
                        else:
                            found[tp] = int(rest[1])  # (timestamp, offset): v2 and later
        missing = [tp for tp in tps if tp not in found]
        if missing:
            raise FetchFailed(f"no offsets for {missing}")
        return found

    async def topic_ids(self, topics: list[str]) -> dict[str, str | None]:
        """Each topic's id (hex), None for a topic that does not exist or a broker that cannot
        say (Metadata v12 is Kafka 3.x and later)."""
        await self.start()
        node = self._client.get_random_node()
        try:
            response = await self._send(node, _TopicIdsRequest(list(topics)))
        except NotImplementedError:
            return dict.fromkeys(topics)
        if response is None:  # that broker is down: cannot say now
            return dict.fromkeys(topics)
        ids: dict[str, str | None] = dict.fromkeys(topics)
        for error_code, name, topic_id, *_ in response.topics:
            if not error_code and name in ids and any(topic_id):
                ids[name] = topic_id.hex()
        return ids

    async def fetch(
        self, positions: dict[TopicPartition, int], timed: Collection[TopicPartition] = ()
    ) -> dict[TopicPartition, Fetched]:
        """Fetch once (read_committed) from every partition's leader, from the given positions;
        a partition without a leader now, or whose leader cannot be reached, is not in the
        answer. The partitions in `timed` also give each row's timestamp (`Fetched.times`)."""
        found: dict[TopicPartition, Fetched] = {}
        for node, group in (await self._by_leader(list(positions))).items():
            topics: dict[str, list[tuple[int, int, int]]] = {}
            for tp in group:
                topics.setdefault(tp.topic, []).append(
                    (tp.partition, positions[tp], PARTITION_BYTES)
                )
            request = FetchRequest(50, 1, FETCH_BYTES, READ_COMMITTED, list(topics.items()))
            response = await self._send(node, request)
            if response is None:
                continue
            version = response.API_VERSION
            for topic, partitions in response.topics:
                for partition, error_code, _high, *data in partitions:
                    tp = TopicPartition(topic, partition)
                    found[tp] = self._read(
                        tp, positions[tp], error_code, version, data, tp in timed
                    )
        return found

    async def leaders(self, tps: list[TopicPartition]) -> dict[int, list[TopicPartition]]:
        """The partitions by leader (those without a leader now are left out); the metadata
        is asked only for partitions whose leader it does not know."""
        await self.start()
        leader_for = self._client.cluster.leader_for_partition
        by_node: dict[int, list[TopicPartition]] = {}
        unknown = []
        for tp in tps:
            leader = leader_for(tp)
            if leader is None or leader < 0:
                unknown.append(tp)
            else:
                by_node.setdefault(leader, []).append(tp)
        if unknown:
            for node, group in (await self._by_leader(unknown)).items():
                by_node.setdefault(node, []).extend(group)
        return by_node

    async def fetch_input(
        self,
        node: int,
        session: FetchSession,
        positions: dict[TopicPartition, int],
        max_wait_ms: int,
        min_bytes: int,
        partition_bytes: int,
        response_bytes: int,
    ) -> dict[TopicPartition, InputFetched] | None:
        """One read_committed Fetch to `node` (the partitions' leader) in its incremental fetch
        `session`, for every partition wanted from it now (`positions`): the partitions that
        have something new (records, an error, a new last stable offset), each with its
        batches, to read with `input_records`; a partition left out has nothing new. The
        broker holds the request up to `max_wait_ms` until `min_bytes` are there. None when
        the node cannot be reached now (the metadata is being refreshed) or refused the
        session (the next request starts a new one). Raises `FetchFailed` for an error that a
        refresh does not cure (authorization, a corrupt record)."""
        request = session.request(
            positions, max_wait_ms, min_bytes, partition_bytes, response_bytes
        )
        response = await self._send(node, request)
        if response is None:
            session.reset()
            return None
        if not session.answered(response):
            return None
        found: dict[TopicPartition, InputFetched] = {}
        for topic, partitions in response.topics:
            for partition, error_code, _high, last_stable, _start, aborted, *data in partitions:
                tp = TopicPartition(topic, partition)
                offset = positions.get(tp)
                if offset is None:  # (not asked for)
                    continue
                if error_code == OFFSET_OUT_OF_RANGE:
                    found[tp] = InputFetched([], offset, offset, out_of_range=True)
                    continue
                if error_code:
                    self._retry_or_raise(tp, error_code)
                    found[tp] = InputFetched([], offset, offset, retry=True)
                    continue
                batches, next_offset = committed_batches(data[-1], aborted, offset)
                found[tp] = InputFetched(batches, offset, next_offset, last_stable)
        return found

    def _read(
        self,
        tp: TopicPartition,
        offset: int,
        error_code: int,
        version: int,
        data: list[Any],
        timed: bool = False,
    ) -> Fetched:
        out = Fetched(next_offset=offset)
        times = out.times = [] if timed else None
        if error_code == OFFSET_OUT_OF_RANGE:
            out.out_of_range = True
            return out
        if error_code:
            self._retry_or_raise(tp, error_code)
            return out
        out.last_stable = data[0]
        aborted = data[2] if version >= 11 else data[-2]
        batches, out.next_offset = committed_batches(data[-1], aborted, offset)
        rows = out.rows
        for batch in batches:
            batch_rows(batch, offset, rows, times)
            if batch.max_timestamp > out.max_timestamp:
                out.max_timestamp = batch.max_timestamp
        return out


async def probe_connection(host: str, port: int, options: dict[str, Any], within: float) -> None:
    """Open one connection to `host:port` with the clients' options (TLS, SASL) and close it;
    raises what the attempt raised (`ssl.SSLError`, aiokafka's errors, `OSError`, timeout)."""
    conn = await asyncio.wait_for(
        create_conn(host, port, client_id="streamkit-probe", **options), within
    )
    conn.close()
