"""The assignor with co-partitioned groups (the inputs of a merged stage): partition p of every
topic of a group goes to one member, every partition is assigned once, and balance holds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.runtime.assignor import MemberInfo, plan_together


@settings(max_examples=200, deadline=None)
@given(
    members=st.integers(1, 6),
    a=st.integers(1, 12),
    b=st.integers(1, 12),
    other=st.integers(1, 12),
    standbys=st.integers(0, 2),
)
def test_a_group_is_assigned_together_and_everything_once(
    members: int, a: int, b: int, other: int, standbys: int
) -> None:
    counts = {"a": a, "b": b, "other": other}
    infos = {f"m{i}": MemberInfo(set(counts)) for i in range(members)}
    result = plan_together(counts, infos, {"a", "b"}, standbys, [["a", "b"]])
    owner: dict[tuple[str, int], str] = {}
    for member, tps in result.active.items():
        for tp in tps:
            assert tp not in owner, f"{tp} assigned twice"
            owner[tp] = member
    assert sorted(owner) == sorted((t, p) for t, n in counts.items() for p in range(n))
    for p in range(min(a, b)):
        assert owner[("a", p)] == owner[("b", p)]
    per_member = [sum(1 for t, _ in tps if t != "other") for tps in result.active.values()]
    tasks = max(a, b)
    assert max(per_member) <= 2 * -(-tasks // members)  # at most the tasks' fair share, x2 topics
    for member, tps in result.standby.items():
        assert all(t == "a" for t, _ in tps)  # named by the group's first topic
        assert not any(owner.get(tp) == member for tp in tps)
