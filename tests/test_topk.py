"""Top-k over hopping windows (`sk.top_k`, `sk.merge_top`) and the demo's session aggregation,
with known answers worked out by hand and a brute-force oracle; and the e-commerce oracle's
own sessions against a hand-made click list."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from apps.ecommerce import generator
from streamkit.keys import partition_for_key
from streamkit.windows import Hopping, Session
from tests.test_windows_logic import run_windows


def test_top_k_over_hopping_windows_by_hand(tmp_path: Path) -> None:
    # 20 s windows every 10 s; the value is the product. Times in ms.
    events: list[tuple[int, str, Any]] = [
        (1_000, "all", "b"),
        (2_000, "all", "a"),
        (3_000, "all", "b"),
        (11_000, "all", "c"),
        (12_000, "all", "c"),
        (13_000, "all", "c"),
        (14_000, "all", "a"),
        (25_000, "all", "a"),
    ]
    task, _ = run_windows(tmp_path, Hopping(20_000, 10_000), sk.top_k(2), events, 0, 0)
    got = {o["start"]: o["top_k"] for o in task.out}
    assert got == {
        -10_000: [["b", 2], ["a", 1]],  # [-10 s, 10 s): b b a
        0: [["c", 3], ["a", 2]],  # [0, 20 s): b a b c c c a → c 3, a 2 = b 2, a first
        10_000: [["c", 3], ["a", 2]],  # [10 s, 30 s): c c c a a
        20_000: [["a", 1]],  # [20 s, 40 s)
    }


def test_top_k_is_exact_per_window_against_brute_force(tmp_path_factory: Any) -> None:
    @settings(max_examples=40, deadline=None)
    @given(
        events=st.lists(
            st.tuples(
                st.integers(0, 60).map(lambda t: t * 50),
                st.just("all"),
                st.sampled_from("abcdefg"),
            ),
            max_size=80,
        ),
        k=st.integers(1, 4),
    )
    def check(events: list[tuple[int, str, Any]], k: int) -> None:
        kind = Hopping(400, 100)
        events.sort()  # in order: nothing is late, every window is complete
        task, _ = run_windows(tmp_path_factory.mktemp("k"), kind, sk.top_k(k), events, 0, 0)
        counts: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for ts, _, item in events:
            for start, _end in kind.windows_for(ts):
                counts[start][item] += 1
        expected = {
            start: [[i, n] for i, n in sorted(c.items(), key=lambda x: (-x[1], x[0]))[:k]]
            for start, c in counts.items()
        }
        assert {o["start"]: o["top_k"] for o in task.out} == expected

    check()


@settings(max_examples=100, deadline=None)
@given(
    counts=st.dictionaries(st.text("abcdefghij", min_size=1, max_size=3), st.integers(1, 9)),
    k=st.integers(1, 5),
    parts=st.integers(1, 4),
)
def test_merge_top_of_partitions_is_the_overall_top(
    counts: dict[str, int], k: int, parts: int
) -> None:
    per_part: dict[int, dict[str, int]] = collections.defaultdict(dict)
    for item, n in counts.items():  # every item in exactly one partition, as after key_by
        per_part[partition_for_key(item.encode(), parts)][item] = n
    lists = [sk.merge_top([[[i, n] for i, n in c.items()]], k) for c in per_part.values()]
    overall = sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:k]
    assert sk.merge_top(lists, k) == [[i, n] for i, n in overall]


def test_top_k_rejects_k_below_one() -> None:
    with pytest.raises(ValueError, match="k >= 1"):
        sk.top_k(0)


def test_the_demo_session_aggregation_by_hand(tmp_path: Path) -> None:
    # gap 30 s: u's clicks at 0, 10, 35 s are one session [0, 65 s) (35 < 10 + 30);
    # 100 s starts another; 70 s arrives late (out of order) and bridges nothing (65 <= 70,
    # 70 + 30 = 100: touching, not overlapping); v has one click.
    def one(spend: int) -> dict[str, int]:
        return {"pages": 1, "spend": spend}

    def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return {"pages": a["pages"] + b["pages"], "spend": a["spend"] + b["spend"]}

    events: list[tuple[int, str, Any]] = [
        (0, "u", one(0)),
        (10_000, "u", one(500)),
        (20_000, "v", one(0)),
        (35_000, "u", one(0)),
        (100_000, "u", one(250)),
        (70_000, "u", one(100)),
    ]
    task, _ = run_windows(tmp_path, Session(30_000), sk.reduce(add), events, 40_000, 0)
    got = sorted((o["key"], o["start"], o["end"], o["reduce"]) for o in task.out)
    assert got == [
        ("u", 0, 65_000, {"pages": 3, "spend": 500}),
        ("u", 70_000, 100_000, {"pages": 1, "spend": 100}),
        ("u", 100_000, 130_000, {"pages": 1, "spend": 250}),
        ("v", 20_000, 50_000, {"pages": 1, "spend": 0}),
    ]
    # the demo's oracle computes the same sessions from the same clicks
    clicks = [
        {"id": f"c{i}", "user_id": key, "product_id": "p", "ts": ts / 1000, "cents": v["spend"]}
        for i, (ts, key, v) in enumerate(events)
    ]
    data = generator.Input(catalog=[], clicks=[], purchases=[], flush=[], valid=clicks)
    truth = generator.oracle(generator.Config(gap_s=30), data)
    assert truth.sessions == [(k, s, e, acc["pages"], acc["spend"]) for k, s, e, acc in got]
