"""OffsetFetch v7 with `require_stable` (aiokafka 0.14 sends only older versions, which
neither wait for open transactions nor say so): the group's commits, offset and metadata, once
no transaction that commits offsets for them is open. A new owner must not start from an offset
that a zombie's open transaction may still move. Built with aiokafka's protocol building
blocks and sent through the consumer's client (its internals: checked by `check_consumer`).

- `stable_commits_once(consumer, tps)`: one request; the commits final now and the partitions
  an open transaction still holds.
- `fetch_stable_commits` / `fetch_stable_offsets`: ask again until none is held.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterable
from typing import Any

import aiokafka.errors as errors
from aiokafka.client import CoordinationType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from streamkit.aiokafka_internals.groups import (
    _TAGS,
    UNSTABLE_OFFSET_COMMIT,
    check_consumer,
    check_version,
)

# a partition's commit: its offset and metadata (a partition time), None when none is committed
Commits = dict[TopicPartition, OffsetAndMetadata | None]


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
) -> Commits:
    """`fetch_stable_offsets` with each commit's metadata string."""
    tps = list(tps)
    deadline = time.monotonic() + within
    found: Commits = {}
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
) -> tuple[Commits, list[TopicPartition]]:
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
    found: Commits = {}
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
