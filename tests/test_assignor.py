"""The assignor's plan (a pure function): balance, stickiness, state affinity, standbys."""

from __future__ import annotations

from streamkit.runtime.assignor import MemberInfo, plan

TOPICS = {"in": 4, "rep": 8}


def members(n: int, **extra: MemberInfo) -> dict[str, MemberInfo]:
    out = {f"m{i}": MemberInfo({"in", "rep"}) for i in range(n)}
    out.update(extra)
    return out


def count(p: list[tuple[str, int]], topic: str) -> int:
    return sum(1 for t, _ in p if t == topic)


def test_balanced_per_topic_and_complete() -> None:
    result = plan(TOPICS, members(3), set(), 0)
    assigned = sorted(tp for tps in result.active.values() for tp in tps)
    assert assigned == sorted([("in", p) for p in range(4)] + [("rep", p) for p in range(8)])
    for tps in result.active.values():
        assert count(tps, "in") in (1, 2) and count(tps, "rep") in (2, 3)


def test_previous_owners_keep_their_partitions() -> None:
    owned = {("rep", 5), ("rep", 6), ("in", 3)}
    before = members(2, m1=MemberInfo({"in", "rep"}, owned=owned))
    result = plan(TOPICS, before, {"rep"}, 0)
    assert owned <= set(result.active["m1"])
    # a third member joins: the sticky ones stay as long as the limit allows
    result3 = plan(TOPICS, {**before, "m9": MemberInfo({"in", "rep"})}, {"rep"}, 0)
    assert {("rep", 5), ("rep", 6), ("in", 3)} <= set(result3.active["m1"])


def test_unowned_partitions_go_where_their_state_is() -> None:
    warm = MemberInfo({"in", "rep"}, state={("rep", 1), ("rep", 2)})
    result = plan(TOPICS, members(2, m1=warm), {"rep"}, 0)
    assert {("rep", 1), ("rep", 2)} <= set(result.active["m1"])


def test_standbys_are_never_the_owner_and_prefer_warm_members() -> None:
    warm = MemberInfo({"in", "rep"}, state={("rep", 0)})
    result = plan(TOPICS, members(3, m2=warm), {"rep"}, 1)
    owners = {tp: m for m, tps in result.active.items() for tp in tps}
    standbys = [(m, tp) for m, tps in result.standby.items() for tp in tps]
    assert sorted(tp for _, tp in standbys) == [("rep", p) for p in range(8)]  # stateful only
    assert all(owners[tp] != m for m, tp in standbys)
    if owners[("rep", 0)] != "m2":
        assert ("rep", 0) in result.standby["m2"]
    assert plan(TOPICS, members(1), {"rep"}, 1).standby == {"m0": []}


def test_a_member_that_joins_gets_partitions_though_the_others_could_keep_the_ceiling() -> None:
    """Two members own 2 + 2 of 4 partitions of each topic; a third joins: it gets some of
    each topic (3 members over 4 partitions: 2, 1, 1), not nothing."""
    owned = {
        "m0": {("in", 0), ("in", 2), ("rep", 0), ("rep", 2)},
        "m1": set(),
        "m2": {("in", 1), ("in", 3), ("rep", 1), ("rep", 3)},
    }
    members = {m: MemberInfo({"in", "rep"}, owned=o) for m, o in owned.items()}
    result = plan({"in": 4, "rep": 4}, members, set(), 0)
    assert count(result.active["m1"], "in") == 1 and count(result.active["m1"], "rep") == 1
    assert sorted(count(tps, "in") for tps in result.active.values()) == [1, 1, 2]
