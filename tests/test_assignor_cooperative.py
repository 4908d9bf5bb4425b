"""Cooperative rounds of the assignor (KIP-429, a pure function): a membership change, then
rounds of `plan` + `hold_back` until no cooperative member revokes anything, checked against
a brute-force replay of the group: no partition is ever held twice or given while another
member holds it, a cooperative member revokes exactly the partitions the plan moves and keeps
the others through every round, and the group ends complete and within the plan's limits:
in at most two rounds when every member is cooperative, in a few when some are eager (a
group in a rolling switch)."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata
from aiokafka.structs import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.runtime import assignment_data
from streamkit.runtime.assignor import (
    TP,
    MemberInfo,
    StreamkitAssignor,
    awaits_follow_up,
    hold_back,
    plan,
    planned_cooperatively,
)


@st.composite
def groups(draw: Any) -> dict[str, Any]:
    topics = {f"t{i}": draw(st.integers(1, 12)) for i in range(draw(st.integers(1, 2)))}
    before = [f"m{i}" for i in range(draw(st.integers(1, 4)))]
    leaving = draw(st.sets(st.sampled_from(before), max_size=len(before) - 1))
    joining = [f"n{i}" for i in range(draw(st.integers(0, 2)))]
    if not leaving and not joining:
        joining = ["n0"]
    after = [m for m in before if m not in leaving] + joining
    every = [(t, p) for t, n in topics.items() for p in range(n)]
    return {
        "topics": topics,
        "before": before,
        "after": after,
        "cooperative": {m: draw(st.booleans()) for m in after},
        "state": {m: draw(st.sets(st.sampled_from(every), max_size=4)) for m in after},
    }


def replay(g: dict[str, Any]) -> tuple[list[dict[str, set[TP]]], dict[str, list[TP]]]:
    """The group's holdings before the first round and after each, and the first round's
    (eager) target plan."""
    topics, coop, state = g["topics"], g["cooperative"], g["state"]
    names = set(topics)
    start = plan(topics, {m: MemberInfo(names) for m in g["before"]}, set(), 0).active
    holding = {m: set(start.get(m, [])) for m in g["after"]}  # leavers' partitions are free
    last = dict(holding)  # what each member held before the round (eager: for stickiness)
    rounds: list[dict[str, set[TP]]] = [holding]
    target1: dict[str, list[TP]] = {}
    for _ in range(6):
        infos = {
            m: MemberInfo(names, set(holding[m] if coop[m] else last[m]), state[m], coop[m])
            for m in g["after"]
        }
        held = {tp: m for m in g["after"] if coop[m] for tp in holding[m]}  # not released
        target = plan(topics, infos, set(), 0).active
        target1 = target1 or target
        got = hold_back(target, infos)
        for m, tps in got.items():  # never given while another member still holds it
            assert all(held.get(tp, m) == m for tp in tps), (m, tps, held)
        revoked = {m: holding[m] - set(got[m]) for m in g["after"] if coop[m]}
        for m, gone in revoked.items():  # a cooperative member revokes what moves, only
            assert gone == {tp for tp in holding[m] if tp not in target[m]}
        last = {m: set(got[m]) for m in g["after"]}
        holding = dict(last)
        everything = [tp for tps in holding.values() for tp in tps]
        assert len(everything) == len(set(everything)), "a partition held twice"
        rounds.append(holding)
        if not any(revoked.values()):
            return rounds, target1
    raise AssertionError(f"no stable assignment after {len(rounds) - 1} rounds: {rounds}")


@settings(max_examples=300, deadline=None)
@given(groups())
def test_cooperative_rounds_revoke_only_what_moves_and_end_at_the_eager_plan(
    g: dict[str, Any],
) -> None:
    rounds, target = replay(g)
    if all(g["cooperative"].values()):  # the change, and one follow-up round at most
        assert len(rounds) <= 3, rounds
    # (with eager members too, their stickiness to what a round gave them may move a
    # partition once more: the replay bounds the rounds at 5)
    final = rounds[-1]
    every = {(t, p) for t, n in g["topics"].items() for p in range(n)}
    assert set().union(*final.values()) == every
    for topic, n in g["topics"].items():  # within the plan's limit, as the eager plan is
        counts = [sum(1 for t, _ in tps if t == topic) for tps in final.values()]
        assert max(counts) <= -(-n // len(final)), counts
    # of what a cooperative member held, it keeps what the first plan left it, in every round:
    # those tasks never stop
    for m, held in rounds[0].items():
        if g["cooperative"][m]:
            kept = held & set(target[m])
            assert all(kept <= r[m] for r in rounds[1:])


def test_a_warm_member_does_not_take_the_ceiling_a_sticky_member_already_holds() -> None:
    """6 partitions over 5 members: one member may own 2. m0 keeps its two (sticky); m3 has
    the state of a free partition but is at its floor, so the partition goes to a newcomer:
    else n1 is left with nothing and a later round takes a partition back from m0 (a
    cooperative member's task stopped; found by hypothesis)."""
    members = {
        "m0": MemberInfo({"t0"}, owned={("t0", 0), ("t0", 4)}, cooperative=True),
        "m1": MemberInfo({"t0"}, owned={("t0", 1), ("t0", 5)}, cooperative=True),
        "m3": MemberInfo({"t0"}, owned={("t0", 3)}, state={("t0", 2)}),
        "n0": MemberInfo({"t0"}),
        "n1": MemberInfo({"t0"}),
    }
    active = plan({"t0": 6}, members, set(), 0).active
    assert sorted(len(tps) for tps in active.values()) == [1, 1, 1, 1, 2]
    assert set(active["m0"]) == {("t0", 0), ("t0", 4)}


def test_a_partition_held_by_a_cooperative_member_goes_to_nobody_when_it_moves() -> None:
    members = {
        "a": MemberInfo({"t"}, owned={("t", 0), ("t", 1)}, cooperative=True),
        "b": MemberInfo({"t"}),
    }
    target = plan({"t": 2}, members, set(), 0).active
    moved = next(tp for tp in target["b"])
    assert hold_back(target, members) == {"a": target["a"], "b": []}
    assert moved in members["a"].owned
    # held by an eager member (released before it joined): given at once
    eager = {**members, "a": MemberInfo({"t"}, owned={("t", 0), ("t", 1)})}
    assert hold_back(target, eager) == target
    # claimed by two cooperative members: given to neither
    both = {**members, "b": MemberInfo({"t"}, owned={moved}, cooperative=True)}
    assert moved not in hold_back(target, both)["a"] + hold_back(target, both)["b"]


class _Cluster:
    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1, 2, 3}


def _assignor(cooperative: bool, owned: set[TopicPartition]) -> StreamkitAssignor:
    assignor = StreamkitAssignor(set, 0, lambda: owned, set, None, cooperative=cooperative)
    assignor.group_rounds = True  # its last assignment: every member plans cooperative rounds
    return assignor


def test_the_assignor_holds_back_through_its_metadata_and_marks_its_assignments() -> None:
    coop = _assignor(True, {TopicPartition("t", p) for p in range(4)})
    eager = _assignor(False, set())
    assert coop.name == eager.name == "streamkit"  # one protocol: the two kinds mix
    meta = {"a": coop.metadata(["t"]), "b": eager.metadata(["t"])}
    assert orjson.loads(meta["a"].user_data)["protocol"] == "cooperative"
    first = {m: a.partitions() for m, a in coop.assign(_Cluster(), meta).items()}
    assert len(first["a"]) == 2 and first["b"] == []  # the 2 that move: to nobody yet
    assert all(planned_cooperatively(a.user_data) for a in coop.assign(_Cluster(), meta).values())
    pending = {m: awaits_follow_up(a.user_data) for m, a in coop.assign(_Cluster(), meta).items()}
    assert pending == {"a": False, "b": True}  # b: 2 partitions wait for it
    assert not planned_cooperatively(orjson.dumps({"standby": []}))  # an older leader's
    # the follow-up round: a no longer holds them
    follow = {"a": _assignor(True, set(first["a"])).metadata(["t"]), "b": meta["b"]}
    second = {m: a.partitions() for m, a in eager.assign(_Cluster(), follow).items()}
    assert second["a"] == first["a"] and len(second["b"]) == 2
    assert not any(awaits_follow_up(a.user_data) for a in eager.assign(_Cluster(), follow).values())
    # an old member's metadata (no protocol field) is eager: its owned list is not held back
    old = ConsumerProtocolMemberMetadata(1, ["t"], orjson.dumps({"owned": [["t", 0]]}))
    third = eager.assign(_Cluster(), {"a": old, "b": meta["b"]})
    assert sum(len(a.partitions()) for a in third.values()) == 4
    # every assignment says whether every member is current (has the protocol field)
    marks = [assignment_data.decode(a.user_data).group_rounds for a in third.values()]
    assert marks == [False, False]
    again = eager.assign(_Cluster(), follow).values()
    marks = [assignment_data.decode(a.user_data).group_rounds for a in again]
    assert marks == [True, True]


def test_a_cooperative_member_holds_only_once_its_group_is_known_current() -> None:
    """A rolling upgrade from a version without cooperative rounds: until an assignment says
    every member is current, a cooperative member says "eager" (it releases all before each
    join); an assignment from a group with an older member takes that back."""
    member = StreamkitAssignor(set, 0, set, set, None, cooperative=True)
    assert not member.may_hold()
    assert orjson.loads(member.metadata(["t"]).user_data)["protocol"] == "eager"
    old = ConsumerProtocolMemberMetadata(1, ["t"], orjson.dumps({"owned": []}))
    leader = _assignor(False, set())
    current = {"a": member.metadata(["t"]), "b": leader.metadata(["t"])}
    member.on_assignment(leader.assign(_Cluster(), current)["a"])
    assert member.may_hold()
    assert orjson.loads(member.metadata(["t"]).user_data)["protocol"] == "cooperative"
    member.on_assignment(leader.assign(_Cluster(), {**current, "c": old})["a"])
    assert not member.may_hold()
    assert not _assignor(False, set()).may_hold()  # eager: never
