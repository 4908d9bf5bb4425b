"""The group's partition assignor: balanced per topic, sticky, state-aware, with standbys.

Each worker's JoinGroup metadata carries (as JSON user data) the partitions it owned before
this rebalance and those it holds local state for (a store on disk, warm from a standby or an
earlier ownership). The leader's `plan` is a pure function of that:

1. Per topic, each member may own at most ceil(partitions / members), and only as many
   members as the remainder allows own that many.
2. A partition stays with its previous owner while that owner is under its limit (sticky).
3. Otherwise it goes to a member with room under step 1's limits holding its state, else to
   the least-loaded member.
4. For partitions of stateful stages, `standby_replicas` other members (those with state
   first, then the least-loaded) tail its changelogs; each member learns its standbys from the
   assignment's user data.

5. Cooperative rebalancing (KIP-429): a member that says `"protocol": "cooperative"` in its
   metadata still holds the partitions it lists as `owned` while the group rebalances (an
   eager member released them before joining: its `owned` only steers stickiness). A
   partition the plan moves away from a cooperative member that holds it goes to nobody in
   this round (`hold_back`): its holder revokes it, rejoins, and the follow-up round gives it
   to its new owner. The partitions that stay are in both rounds: their tasks never stop.
   The new owner's assignment says how many partitions wait for it (`pending`), so that it
   looks for the follow-up round at once rather than at its next heartbeat.

Eager and cooperative members mix in one group (a rolling switch): the same assignor
(`streamkit`) plans for both. A leader of a version without step 5 would move a partition a
cooperative member still holds, so a cooperative member holds its partitions through a join
only when its last assignment said that every member of the group is of a version with step
5 (`"group_rounds"`: every member's metadata has the `protocol` field); until then it
releases them all before joining, as an eager member (`may_hold`). Every assignment of this
version says `"rounds": "cooperative"`, and a cooperative member that held partitions through
a join and gets one without it (an older member became the leader in that very round) stops
at once, committing nothing more (`planned_cooperatively`).
(aiokafka 0.14 cannot offer two protocols: with two assignors it sends JoinGroup once per
assignor in one join, and the group rebalances again and again.)

Each member also advertises its HTTP endpoint (`host:port`, or nothing when its server is off)
in its metadata, and every assignment carries the member's own id, the group's members and,
for a member that serves HTTP, the map partition → endpoint of the whole group, so it can
route an interactive query to the owner of a key (Kafka Streams does the same with
`application.server`); `assignment_data` encodes it compactly.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.structs import TopicPartition

from streamkit.runtime import assignment_data

TP = tuple[str, int]


@dataclass
class MemberInfo:
    topics: set[str]
    owned: set[TP] = field(default_factory=set)
    state: set[TP] = field(default_factory=set)
    cooperative: bool = False  # still holds `owned` while the group rebalances


@dataclass
class Plan:
    active: dict[str, list[TP]]
    standby: dict[str, list[TP]]


def plan(
    partitions: Mapping[str, int],
    members: Mapping[str, MemberInfo],
    stateful: set[str],
    standby_replicas: int,
) -> Plan:
    ids = sorted(members)
    active: dict[str, list[TP]] = {m: [] for m in ids}
    load: Counter[str] = Counter()
    owner: dict[TP, str] = {}
    for topic in sorted(partitions):
        subscribed = [m for m in ids if topic in members[m].topics]
        if not subscribed:
            continue
        limit = math.ceil(partitions[topic] / len(subscribed))
        per_topic: Counter[str] = Counter()

        def give(tp: TP, member: str, per_topic: Counter[str] = per_topic) -> None:
            active[member].append(tp)
            per_topic[member] += 1
            load[member] += 1
            owner[tp] = member

        tps = [(topic, p) for p in range(partitions[topic])]
        rest = []
        # only `extra` members may keep the ceiling: the others stop at the floor, so a member
        # that just joined is left partitions to take (3 members over 4: 2, 1, 1, not 2, 2, 0)
        floor, extra = divmod(partitions[topic], len(subscribed))
        for tp in tps:  # 2. sticky
            previous = next((m for m in subscribed if tp in members[m].owned), None)
            at_ceiling = sum(1 for m in subscribed if per_topic[m] > floor)
            if previous is not None and (
                per_topic[previous] < floor or (per_topic[previous] == floor and at_ceiling < extra)
            ):
                give(tp, previous)
            else:
                rest.append(tp)
        for tp in rest:  # 3. where its state is, else the least loaded; the ceiling still
            # for `extra` members only, else a warm member over its share starves a newcomer
            at_ceiling = sum(1 for m in subscribed if per_topic[m] > floor)
            cap = limit if at_ceiling < extra else floor
            room = [m for m in subscribed if per_topic[m] < cap]
            warm = [m for m in room if tp in members[m].state]
            pick = min(warm or room, key=lambda m: (per_topic[m], load[m], m))
            give(tp, pick)
    standby: dict[str, list[TP]] = {m: [] for m in ids}
    if standby_replicas > 0:
        standby_load: Counter[str] = Counter()
        for tp in sorted(owner):
            if tp[0] not in stateful:
                continue
            others = [m for m in ids if m != owner[tp] and tp[0] in members[m].topics]
            others.sort(key=lambda m: (tp not in members[m].state, standby_load[m], m))
            for m in others[:standby_replicas]:
                standby[m].append(tp)
                standby_load[m] += 1
    return Plan(active, standby)


def plan_together(
    partitions: Mapping[str, int],
    members: Mapping[str, MemberInfo],
    stateful: set[str],
    standby_replicas: int,
    groups: list[list[str]],
) -> Plan:
    """`plan`, with the topics of each group (the inputs of one stage, read by one task per
    partition) assigned together: partition p of all of them to the owner of the group's
    first topic's partition p (planned over the group's largest partition count). Standbys
    are named by the first topic's partition only."""
    counts = dict(partitions)
    followers: dict[str, str] = {}
    for group in groups:
        if len(group) < 2:
            continue
        leader = group[0]
        counts[leader] = max(partitions[t] for t in group)
        for topic in group[1:]:
            followers[topic] = leader
            counts.pop(topic, None)
    planned = plan(counts, members, stateful, standby_replicas)
    if not followers:
        return planned
    led: dict[str, list[str]] = {}
    for topic, leader in followers.items():
        led.setdefault(leader, []).append(topic)

    def expand(tps: list[TP]) -> list[TP]:
        out = []
        for topic, p in tps:
            if p < partitions.get(topic, 0):
                out.append((topic, p))
            out.extend((f, p) for f in led.get(topic, []) if p < partitions[f])
        return out

    # standbys stay named by the group's first topic: one store per task, kept warm once
    return Plan({m: expand(tps) for m, tps in planned.active.items()}, planned.standby)


def hold_back(
    active: Mapping[str, list[TP]], members: Mapping[str, MemberInfo]
) -> dict[str, list[TP]]:
    """A cooperative round of `active`: a partition that a cooperative member other than its
    planned owner still holds goes to nobody (its holder revokes it; the next round gives
    it). Claimed by two cooperative members (never in a sound group): to neither."""
    holders: dict[TP, set[str]] = defaultdict(set)
    for m, info in members.items():
        if info.cooperative:
            for tp in info.owned:
                holders[tp].add(m)
    return {m: [tp for tp in tps if holders.get(tp, {m}) == {m}] for m, tps in active.items()}


def _tps(items: Iterable[Any]) -> set[TP]:
    return {(str(t), int(p)) for t, p in items}


class StreamkitAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """aiokafka's pluggable assignor interface, fed by the worker's callbacks."""

    name = "streamkit"
    version = 1

    def __init__(
        self,
        stateful_topics: Callable[[], set[str]],
        standby_replicas: int,
        owned: Callable[[], set[TopicPartition]],
        local_state: Callable[[], set[TopicPartition]],
        endpoint: str | None = None,
        copartitioned: Callable[[], list[list[str]]] | None = None,
        cooperative: bool = False,
    ) -> None:
        self.cooperative = cooperative
        self._endpoint = endpoint
        self._copartitioned = copartitioned or (lambda: [])
        self._stateful_topics = stateful_topics
        self._standby_replicas = standby_replicas
        self._owned = owned
        self._local_state = local_state
        self.standbys: set[TopicPartition] = set()
        self.member_id: str | None = None  # ours, as the leader saw it
        self.endpoints: dict[TopicPartition, str] = {}  # who serves each partition over HTTP
        self.members: dict[str, str | None] = {}  # member id → its endpoint
        self.rebalances = 0  # assignments received
        self.group_rounds = False  # the last assignment: every member plans cooperative rounds

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        info = {
            "owned": sorted((tp.topic, tp.partition) for tp in self._owned()),
            "state": sorted((tp.topic, tp.partition) for tp in self._local_state()),
            "endpoint": self._endpoint,
            "protocol": "cooperative" if self.may_hold() else "eager",
        }
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), orjson.dumps(info))

    def assign(
        self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        infos = {}
        endpoints: dict[str, str | None] = {}
        group_rounds = True  # an older member's metadata has no protocol: it would not hold back
        for member_id, meta in members.items():
            data = orjson.loads(meta.user_data) if meta.user_data else {}
            endpoints[member_id] = data.get("endpoint")
            group_rounds = group_rounds and "protocol" in data
            infos[member_id] = MemberInfo(
                set(meta.subscription),
                _tps(data.get("owned", [])),
                _tps(data.get("state", [])),
                cooperative=data.get("protocol") == "cooperative",
            )
        topics = {t for info in infos.values() for t in info.topics}
        partitions = {}
        for topic in topics:
            found = cluster.partitions_for_topic(topic)
            if found:
                partitions[topic] = max(found) + 1
        groups = [[t for t in g if t in partitions] for g in self._copartitioned()]
        result = plan_together(
            partitions, infos, self._stateful_topics(), self._standby_replicas, groups
        )
        planned = {m: len(tps) for m, tps in result.active.items()}
        result.active = hold_back(result.active, infos)
        routes = assignment_data.Routes.build(result.active, endpoints)
        assignments = {}
        for member_id in members:
            by_topic: dict[str, list[int]] = defaultdict(list)
            for topic, p in result.active[member_id]:
                by_topic[topic].append(p)
            user = assignment_data.encode(
                member_id,
                result.standby[member_id],
                endpoints,
                routes if endpoints.get(member_id) else None,
                group_rounds,
                planned[member_id] - len(result.active[member_id]),
            )
            assignments[member_id] = ConsumerProtocolMemberAssignment(
                self.version, sorted((t, sorted(ps)) for t, ps in by_topic.items()), user
            )
        return assignments

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        data = assignment_data.decode(assignment.user_data)
        self.standbys = data.standbys
        self.member_id = data.member_id
        self.members = data.members
        self.endpoints = data.endpoints
        self.group_rounds = data.group_rounds
        self.rebalances += 1

    def may_hold(self) -> bool:
        """Whether this member may hold its partitions through the next join (cooperative,
        and every member of the group plans cooperative rounds if it leads)."""
        return self.cooperative and self.group_rounds


def planned_cooperatively(user_data: bytes) -> bool:
    """Whether an assignment's leader plans cooperative rounds (`hold_back`)."""
    return assignment_data.decode(user_data).rounds == "cooperative"


def awaits_follow_up(user_data: bytes) -> bool:
    """Whether an assignment holds back partitions planned for its member (step 5): a
    follow-up round gives them once their holder has revoked them."""
    return assignment_data.decode(user_data).pending > 0
