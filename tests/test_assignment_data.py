"""The assignment's user data (streamkit/runtime/assignment_data.py): what each member decodes
equals what the plan says (a brute-force oracle over random plans), the earlier plain-JSON
form still decodes, and at 1,000 partitions and 100 members the whole SyncGroup fits in one
`__consumer_offsets` record (it was ~6.5 MB when every member got the endpoint of every
partition as JSON triples)."""

from __future__ import annotations

import uuid

import orjson
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.runtime import assignment_data
from streamkit.runtime.assignor import StreamkitAssignor

TP = tuple[str, int]


@st.composite
def plans(draw: st.DrawFn) -> tuple[dict[str, list[TP]], dict[str, str | None]]:
    """Members (some without an HTTP endpoint, some sharing one) and a partial assignment of
    a few topics' partitions to them."""
    n = draw(st.integers(1, 6))
    ids = [f"m{i}" for i in range(n)]
    endpoint = st.one_of(st.none(), st.sampled_from(["h1:1", "h2:2", "h3:3", "h4:4"]))
    members = {m: draw(endpoint) for m in ids}
    active: dict[str, list[TP]] = {m: [] for m in ids}
    for topic in draw(st.lists(st.sampled_from(["a", "b", "c"]), unique=True, max_size=3)):
        for p in range(draw(st.integers(1, 12))):
            owner = draw(st.one_of(st.none(), st.sampled_from(ids)))
            if owner is not None:
                active[owner].append((topic, p))
    return active, members


@settings(max_examples=60)
@given(plans(), st.data())
def test_each_member_decodes_its_own_part_and_the_routes_it_needs(
    planned: tuple[dict[str, list[TP]], dict[str, str | None]], data: st.DataObject
) -> None:
    active, members = planned
    routes = assignment_data.Routes.build(active, members)
    oracle = {
        TopicPartition(t, p): members[m] for m, tps in active.items() if members[m] for t, p in tps
    }
    for member_id in members:
        standby = data.draw(st.lists(st.tuples(st.just("a"), st.integers(0, 11)), unique=True))
        serving = members[member_id] is not None
        raw = assignment_data.encode(member_id, standby, members, routes if serving else None)
        got = assignment_data.decode(raw)
        assert got.member_id == member_id
        assert got.standbys == {TopicPartition(t, p) for t, p in standby}
        assert got.members == members
        assert got.endpoints == (oracle if serving else {})


def test_the_earlier_plain_json_form_still_decodes() -> None:
    earlier = orjson.dumps(
        {
            "standby": [["a", 1]],
            "member_id": "m0",
            "members": {"m0": "h1:1", "m1": None},
            "endpoints": [["a", 0, "h1:1"], ["a", 2, "h1:1"]],
        }
    )
    got = assignment_data.decode(earlier)
    assert got.member_id == "m0" and got.standbys == {TopicPartition("a", 1)}
    assert got.members == {"m0": "h1:1", "m1": None}
    assert got.endpoints == {TopicPartition("a", 0): "h1:1", TopicPartition("a", 2): "h1:1"}
    assert assignment_data.decode(b"") == assignment_data.MemberData()


class _Cluster:
    def __init__(self, partitions: dict[str, int]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._partitions[topic]))


def test_1000_partitions_and_100_serving_members_fit_one_offsets_record() -> None:
    topics = {"source": 1000, "by-user-repartition": 1000}  # pipeline A's two input stages
    leader = StreamkitAssignor(lambda: {"by-user-repartition"}, 1, set, set)
    metas = {}
    for i in range(100):
        info = {"owned": [], "state": [], "endpoint": f"10.0.{i // 250}.{i % 250}:6066"}
        member_id = f"streamkit-{uuid.uuid4()}"
        metas[member_id] = ConsumerProtocolMemberMetadata(1, sorted(topics), orjson.dumps(info))
    result = leader.assign(_Cluster(topics), metas)
    sizes = {m: len(a.encode()) for m, a in result.items()}
    assert sum(sizes.values()) < 1_000_000  # offsets.max.bytes / message.max.bytes default ~1 MB
    assert max(sizes.values()) < 8_000
    one = next(iter(result))
    got = assignment_data.decode(result[one].user_data)
    assert len(got.endpoints) == 2000 and len(got.members) == 100
