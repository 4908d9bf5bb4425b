"""Helpers of the three-broker chaos test (tests/test_cluster.py): which node leads, coordinates
or controls what, and whether the cluster has healed (every replica back in sync). The roles
are asked over the wire by scripts/kafkaprobe.py; leaders and in-sync replicas come from the
admin client's Metadata."""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import kafkaprobe  # scripts/ is not a package: on the path above

INTERNAL = ["__consumer_offsets", "__transaction_state"]


async def _admin(bootstrap: str) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    return admin


async def partitions(bootstrap: str, topics: list[str]) -> list[dict[str, Any]]:
    """Metadata of every partition of `topics` (`topic`, `partition`, `leader`, `isr`, ...)."""
    admin = await _admin(bootstrap)
    try:
        return [
            {"topic": meta["topic"], **p}
            for meta in await admin.describe_topics(topics)
            for p in meta["partitions"]
        ]
    finally:
        await admin.close()


async def leaders(bootstrap: str, topics: list[str]) -> collections.Counter[int]:
    """node id → how many of the partitions of `topics` it leads."""
    return collections.Counter(p["leader"] for p in await partitions(bootstrap, topics))


async def healed(cluster: Any, topics: list[str]) -> bool:
    """Every node is up, and every partition of `topics` (and of the group and transaction
    logs) has a leader and all of the cluster's nodes as in-sync replicas."""
    size = len(cluster.nodes)
    if len(live_ports(cluster)) < size:
        return False
    try:
        parts = await partitions(cluster.bootstrap, [*topics, *INTERNAL])
    except KafkaError:  # a node still starting can fail the metadata call: not healed yet
        return False
    return bool(parts) and all(p["leader"] >= 0 and len(p["isr"]) == size for p in parts)


async def replication(bootstrap: str, topic: str) -> tuple[int, str]:
    """(replicas of partition 0, min.insync.replicas) of a topic."""
    admin = await _admin(bootstrap)
    try:
        (meta,) = await admin.describe_topics([topic])
        replicas = len(meta["partitions"][0]["replicas"])
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})
        (response,) = await admin.describe_configs([resource])
        configs = response.resources[0][4]
        isr = next(c[1] for c in configs if c[0] == "min.insync.replicas")
        return replicas, str(isr)
    finally:
        await admin.close()


def live_ports(cluster: Any) -> list[int]:
    return [node.port for node in cluster.nodes if node.is_alive()]


def live_bootstrap(cluster: Any) -> str:
    """The bootstrap list of the nodes running now."""
    return ",".join(node.bootstrap for node in cluster.nodes if node.is_alive())


def coordinators(cluster: Any, transactional_ids: Iterable[str]) -> dict[str, int] | None:
    """transactional id → the node coordinating it, asked of a live node (None: no answer
    for one of them yet)."""
    found = {}
    for txn_id in transactional_ids:
        node = None
        for port in live_ports(cluster):
            node = kafkaprobe.find_coordinator(port, txn_id, kafkaprobe.TRANSACTION)
            if node is not None:
                break
        if node is None:
            return None
        found[txn_id] = node
    return found


def controller(cluster: Any) -> int | None:
    """The active controller's node id, as a live node reports it (None: none known)."""
    for port in live_ports(cluster):
        leader = kafkaprobe.active_controller(port)
        if leader is not None:
            return leader
    return None
