"""Unit tests (no broker) of issue 17's pieces: the internal topics' replication from the
cluster size, the per-worker transactional id, the wire format of the requests declared in
streamkit/aiokafka_internals/."""

from __future__ import annotations

import asyncio
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from streamkit import aiokafka_internals as internals
from streamkit.runtime.admin import internal_replication
from streamkit.runtime.txn_producers import worker_transactional_id
from streamkit.settings import ConfigError, load_settings


class FakeAdmin:
    def __init__(self, brokers: int) -> None:
        self.brokers = brokers

    async def describe_cluster(self) -> dict[str, Any]:
        return {"brokers": [{"node_id": i} for i in range(self.brokers)]}


@pytest.mark.parametrize(
    ("brokers", "given", "expected"),
    [
        (1, {}, (1, 1)),
        (2, {}, (2, 1)),
        (3, {}, (3, 2)),
        (5, {}, (3, 2)),
        (5, {"internal_replication_factor": 5}, (5, 2)),
        (3, {"internal_min_insync_replicas": 1}, (3, 1)),
        (1, {"internal_min_insync_replicas": 2}, (1, 1)),  # never above the replicas
    ],
)
def test_internal_topics_get_the_replication_the_cluster_allows(
    brokers: int, given: dict[str, int], expected: tuple[int, int]
) -> None:
    settings = load_settings(**given)
    assert asyncio.run(internal_replication(FakeAdmin(brokers), settings)) == expected


def test_more_replicas_than_brokers_is_a_config_error() -> None:
    settings = load_settings(internal_replication_factor=3)
    with pytest.raises(ConfigError, match="cluster has 1 broker"):
        asyncio.run(internal_replication(FakeAdmin(1), settings))


def test_min_insync_above_replicas_is_refused() -> None:
    with pytest.raises(ConfigError, match="internal_min_insync_replicas"):
        load_settings(internal_replication_factor=2, internal_min_insync_replicas=3)


def test_the_per_worker_transactional_id_is_stable_and_not_shared(tmp_path: Path) -> None:
    static = load_settings(instance_id="shop-0", workdir=tmp_path)
    assert worker_transactional_id(static, "shop") == ("shop-shop-0", None)
    settings = load_settings(workdir=tmp_path)
    first, lock = worker_transactional_id(settings, "shop")
    assert first.startswith("shop-worker-") and lock is not None
    other, other_lock = worker_transactional_id(settings, "shop")  # the workdir is in use
    assert other != first and other_lock is None
    lock.close()  # the first worker ended: a restart on its workdir gets its id back
    again, lock = worker_transactional_id(settings, "shop")
    assert again == first
    assert lock is not None
    lock.close()


def test_txn_offset_commit_v3_encodes_the_group_membership() -> None:
    group = internals.GroupMetadata("shop", 7, "member-1", "shop-0")
    offsets = {TopicPartition("in", 1): 42, TopicPartition("in", 0): 40}
    request = internals.GroupTxnOffsetCommitRequest("shop-shop-0", 1001, 3, group, offsets)
    struct = request.prepare({28: (0, 5)})
    assert struct.API_VERSION == 3 and struct.FLEXIBLE_VERSION
    decoded = internals.TxnOffsetCommitRequest_v3.SCHEMA.decode(BytesIO(struct.encode()))
    txn, group_id, pid, epoch, generation, member, instance, topics, _tags = decoded
    assert (txn, group_id, pid, epoch) == ("shop-shop-0", "shop", 1001, 3)
    assert (generation, member, instance) == (7, "member-1", "shop-0")
    assert topics == [("in", [(0, 40, -1, "", {}), (1, 42, -1, "", {})], {})]


def test_a_broker_without_txn_offset_commit_v3_gets_no_request() -> None:
    group = internals.GroupMetadata("shop", 7, "member-1", None)
    request = internals.GroupTxnOffsetCommitRequest("t", 1, 0, group, {})
    with pytest.raises(NotImplementedError):
        request.prepare({28: (0, 2)})  # never falls back to a version that cannot be fenced


def test_offset_fetch_v7_asks_for_stable_offsets() -> None:
    request = internals.StableOffsetFetchRequest("shop", [TopicPartition("in", 2)])
    struct = request.prepare({9: (1, 9)})
    assert struct.API_VERSION == 7
    decoded = internals.OffsetFetchRequest_v7.SCHEMA.decode(BytesIO(struct.encode()))
    assert decoded == ("shop", [("in", [2], {})], True, {})
