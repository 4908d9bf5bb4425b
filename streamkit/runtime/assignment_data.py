"""The user data of one member's assignment (SyncGroup), encoded by the group's leader and
decoded by each member: what the plan gives that member besides its partitions.

- its own: its member id (as the leader saw it) and its standby partitions;
- the group's members (member id → HTTP endpoint), shown by `/status` and used as the set of
  peers a query may be forwarded to;
- the routing table, only for a member that serves HTTP (it has an endpoint): which endpoint
  owns each partition, so it can forward a query for any key to its owner.

SyncGroup carries every member's assignment and the coordinator stores them all in one record
of `__consumer_offsets` (1 MB at most by default), so what is sent to every member must not
grow as partitions times members. The routing table is therefore sent as the list of distinct
endpoints plus, per topic, one small integer per partition (the owner's index in that list,
-1 for none), and the whole user data is zlib-compressed JSON: at 1,000 partitions and 100
members it is a few KB per member (docs/rebalancing.md has the measurements). A member that
has no endpoint gets no routing table. Decoding also reads the earlier, uncompressed JSON
form (a leader of an older version during a rolling upgrade).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from aiokafka.structs import TopicPartition

TP = tuple[str, int]


@dataclass
class Routes:
    """The part of the user data every member that serves HTTP gets: built once per plan."""

    endpoints: list[str]
    owners: dict[str, list[int]]  # topic → per partition, an index in `endpoints` or -1

    @classmethod
    def build(cls, active: Mapping[str, list[TP]], members: Mapping[str, str | None]) -> Routes:
        endpoints = sorted({ep for ep in members.values() if ep})
        index = {ep: i for i, ep in enumerate(endpoints)}
        sizes: dict[str, int] = {}
        for tps in active.values():
            for topic, p in tps:
                sizes[topic] = max(sizes.get(topic, 0), p + 1)
        owners = {topic: [-1] * n for topic, n in sorted(sizes.items())}
        for member, tps in active.items():
            ep = members.get(member)
            if ep:
                for topic, p in tps:
                    owners[topic][p] = index[ep]
        return cls(endpoints, owners)

    def table(self) -> dict[TopicPartition, str]:
        return {
            TopicPartition(topic, p): self.endpoints[i]
            for topic, owned in self.owners.items()
            for p, i in enumerate(owned)
            if i >= 0
        }


@dataclass
class MemberData:
    """What a member learns from its assignment's user data."""

    member_id: str | None = None
    standbys: set[TopicPartition] = field(default_factory=set)
    members: dict[str, str | None] = field(default_factory=dict)  # member id → endpoint
    endpoints: dict[TopicPartition, str] = field(default_factory=dict)  # who serves each
    rounds: str | None = None  # "cooperative": the leader planned with `assignor.hold_back`
    group_rounds: bool = False  # every member would too (all of a version with `hold_back`)
    pending: int = 0  # partitions of the plan held back from it: a follow-up round gives them


def encode(
    member_id: str,
    standby: list[TP],
    members: Mapping[str, str | None],
    routes: Routes | None,
    group_rounds: bool = False,
    pending: int = 0,
) -> bytes:
    """One member's user data; `routes` only for a member that serves HTTP; `group_rounds`
    when every member of the group plans cooperative rounds when it leads; `pending`: how many
    partitions planned for it this round holds back (their holder revokes them first)."""
    data: dict[str, object] = {
        "member_id": member_id,
        "standby": sorted(standby),
        "members": dict(members),
        "rounds": "cooperative",  # planned with `assignor.hold_back`
        "group_rounds": group_rounds,
        "pending": pending,
    }
    if routes is not None:
        data["routes"] = {"endpoints": routes.endpoints, "owners": routes.owners}
    return zlib.compress(orjson.dumps(data))


def decode(raw: bytes | None) -> MemberData:
    if not raw:
        return MemberData()
    # the earlier form is plain JSON: an object starts with "{", a zlib stream with 0x78
    data = orjson.loads(raw if raw[:1] == b"{" else zlib.decompress(raw))
    if "routes" in data:
        routes = data["routes"]
        endpoints = Routes(list(routes["endpoints"]), dict(routes["owners"])).table()
    else:  # the earlier form: [topic, partition, endpoint] for every served partition
        endpoints = {TopicPartition(t, p): ep for t, p, ep in data.get("endpoints", [])}
    return MemberData(
        member_id=data.get("member_id"),
        standbys={TopicPartition(t, p) for t, p in data.get("standby", [])},
        members=dict(data.get("members", {})),
        endpoints=endpoints,
        rounds=data.get("rounds"),
        group_rounds=bool(data.get("group_rounds")),
        pending=int(data.get("pending", 0)),
    )
