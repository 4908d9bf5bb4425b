"""The app's consumer group seen from outside (for `streamkit status`, `tables`, `reset`).

Everything comes from the broker's admin API: the group's members (each member's metadata
carries the HTTP endpoint its worker advertises, its assignment the partitions it owns),
committed offsets, and the end offsets of the input partitions (read_committed: the last
stable offset). Lag = end - committed; on a transactional input (a repartition topic under
exactly-once) a drained partition shows 1, the commit marker after the last record.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from streamkit.clients import make_consumer
from streamkit.runtime.admin import describe, open_admin

if TYPE_CHECKING:
    from streamkit.app import App

ACTIVE_STATES = ("Stable", "PreparingRebalance", "CompletingRebalance")
DELETE_WAIT = 60.0


@dataclass
class Member:
    member_id: str
    client_id: str
    host: str
    endpoint: str | None
    assigned: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class Group:
    group_id: str
    state: str
    members: list[Member]

    @property
    def active(self) -> bool:
        return bool(self.members) or self.state in ACTIVE_STATES


@dataclass
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    end: int

    @property
    def lag(self) -> int:
        return self.end - (self.committed or 0)


async def describe_group(admin: Any, group_id: str) -> Group:
    (response,) = await admin.describe_consumer_groups([group_id])
    (found,) = response.to_object()["groups"]
    members = []
    for m in found["members"]:
        endpoint = None
        assigned: list[tuple[str, int]] = []
        with contextlib.suppress(Exception):  # another client's (non-streamkit) metadata
            meta = ConsumerProtocolMemberMetadata.decode(m["member_metadata"])
            endpoint = orjson.loads(meta.user_data).get("endpoint") if meta.user_data else None
        with contextlib.suppress(Exception):
            assignment = ConsumerProtocolMemberAssignment.decode(m["member_assignment"])
            assigned = sorted((t, p) for t, ps in assignment.assignment for p in ps)
        members.append(Member(m["member_id"], m["client_id"], m["client_host"], endpoint, assigned))
    members.sort(key=lambda m: m.member_id)
    return Group(group_id, found["state"], members)


def input_topics(app: App) -> list[str]:
    """Every topic a stage consumes: the agents' sources and the repartition topics."""
    return sorted({stage.source.name for stage in app.stages})


async def group_lag(app: App, admin: Any) -> list[PartitionLag]:
    """Committed offset, end offset and lag of every input partition of the app."""
    topics = input_topics(app)
    counts = await describe(admin, topics)
    tps = [TopicPartition(t, p) for t in topics for p in range(counts.get(t) or 0)]
    committed = await admin.list_consumer_group_offsets(app.id)
    consumer = make_consumer(app.settings, None, f"{app.id}-status")
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    rows = []
    for tp in tps:
        meta = committed.get(tp)
        offset = None if meta is None or meta.offset < 0 else meta.offset
        rows.append(PartitionLag(tp.topic, tp.partition, offset, ends[tp]))
    return rows


async def live_endpoints(app: App) -> list[str]:
    """The HTTP endpoints the group's members advertise (any of them routes a query)."""
    admin = await open_admin(app.settings, f"{app.id}-cli")
    try:
        group = await describe_group(admin, app.id)
    finally:
        await admin.close()
    return [m.endpoint for m in group.members if m.endpoint]


# -- reset -----------------------------------------------------------------------------------


def reset_topics(app: App, *, dead_letters: bool) -> list[str]:
    """What `reset` deletes: the repartition and changelog topics (derived data: a rerun
    makes them again), and with `dead_letters` the dead-letter and late topics."""
    stages = app.stages
    names = {out.name for st in stages for out in st.outputs}
    names |= {t.changelog.name for st in stages for t in st.tables}
    if dead_letters:
        names.add(app.dlq.name)
        names |= {wt.late_topic for wt in app.windows.values() if wt.late_topic}
        names |= {j.late_topic for j in app.joins.values() if j.late_topic}
    return sorted(names)


@dataclass
class ResetReport:
    deleted_topics: list[str]
    offsets: dict[TopicPartition, int]
    removed_state: Path | None


class GroupActive(Exception):
    """The group has members: resetting under running workers would corrupt their state."""


async def reset_app(
    app: App, *, dead_letters: bool, state_dir: Path | None, topics_and_offsets: bool = True
) -> ResetReport:
    """Delete the derived topics, commit the earliest offset of every source partition for
    the group, and remove the local state folder. Refuses while the group has members."""
    deleted: list[str] = []
    offsets: dict[TopicPartition, int] = {}
    if topics_and_offsets:
        admin = await open_admin(app.settings, f"{app.id}-reset")
        try:
            group = await describe_group(admin, app.id)
            if group.active:
                who = ", ".join(f"{m.client_id} ({m.host})" for m in group.members) or "none"
                raise GroupActive(
                    f"group {app.id} is {group.state} with members: {who}; stop every worker "
                    "first (SIGTERM), then run reset again"
                )
            existing = await describe(admin, reset_topics(app, dead_letters=dead_letters))
            deleted = sorted(name for name, count in existing.items() if count is not None)
            if deleted:
                await admin.delete_topics(deleted)
                await _wait_deleted(admin, deleted)
            offsets = await _rewind(app, admin)
        finally:
            await admin.close()
    removed = None
    if state_dir is not None:
        folder = state_dir / app.id
        if folder.exists():
            await asyncio.to_thread(shutil.rmtree, folder)
            removed = folder
    return ResetReport(deleted, offsets, removed)


async def _wait_deleted(admin: Any, names: list[str]) -> None:
    deadline = time.monotonic() + DELETE_WAIT
    while True:
        found = await describe(admin, names)
        if all(count is None for count in found.values()):
            return
        if time.monotonic() > deadline:
            left = sorted(n for n, c in found.items() if c is not None)
            raise TimeoutError(f"topics {left} still exist {DELETE_WAIT:.0f}s after deletion")
        await asyncio.sleep(0.2)


async def _rewind(app: App, admin: Any) -> dict[TopicPartition, int]:
    """Commit, for the group, the earliest offset of every source-topic partition."""
    sources = sorted(app.source_topics)
    counts = await describe(admin, sources)
    tps = [TopicPartition(t, p) for t in sources for p in range(counts.get(t) or 0)]
    if not tps:
        return {}
    consumer = make_consumer(app.settings, app.id, f"{app.id}-reset")
    await consumer.start()
    try:
        consumer.assign(tps)  # no subscribe: commit for the group without joining it
        earliest = await consumer.beginning_offsets(tps)
        await consumer.commit({tp: OffsetAndMetadata(earliest[tp], "") for tp in tps})
    finally:
        await consumer.stop()
    return {tp: earliest[tp] for tp in tps}
