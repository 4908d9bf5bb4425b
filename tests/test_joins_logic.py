"""Stream-stream join logic without a broker: the real JoinPartition (over a real SQLite store,
with a cache small enough to evict, restarted from its store now and then) against a
brute-force join of both inputs, for every join kind, on a time grid that hits the window and
grace edges; and proof that the oracle catches a one-off shift of either edge. Each test runs
with the join index in C (`state/_joinindex.c`) and with its Python reference."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.eventtime import NO_WATERMARK
from streamkit.joins import LEFT, RIGHT, JoinSpec, StreamJoin, join_spec, pair
from streamkit.serde import codec_for
from streamkit.state import join_index
from streamkit.state.store import PartitionStore, open_store
from streamkit.state.stream_join import WATERMARK_ROW, JoinPartition, final_ranges
from streamkit.state.table import TablePartition

END_OF_TIME = 2**62
_RUNS = itertools.count()

Event = tuple[int, str, int]  # side, key, event time (ms)
Result = tuple[str, int | None, int | None, int]  # kind, left id, right id, time


@dataclasses.dataclass
class Case:
    spec: JoinSpec
    events: list[Event]
    ooo: int
    restarts: set[int]
    end: int  # the last watermark (END_OF_TIME: every record final)
    # restarts that rebuild the store from the changelog alone (a new disk), replayed in
    # batches of this many checkpoints (the last value of a key wins within a batch)
    rebuilds: set[int] = dataclasses.field(default_factory=set)
    batch: int = 1


@pytest.fixture(autouse=True, scope="module", params=["c index", "python index"])
def index_kind(request: pytest.FixtureRequest) -> Any:
    """The join index the tests' JoinPartitions build: the C one, then the reference."""
    native = request.param == "c index"
    if native and not join_index.NATIVE:
        pytest.skip("the C join index is not built (or turned off)")
    saved, join_index.NATIVE = join_index.NATIVE, native
    yield request.param
    join_index.NATIVE = saved


def run_join(tmp: Path, case: Case) -> tuple[list[Result], list[int], list[str], int]:
    """The real JoinPartition over the events: results, late ids, early emissions, and the
    records still buffered at the end."""
    app = sk.App(f"joinlogic{next(_RUNS)}")
    join = StreamJoin("j", case.spec, pair)
    app.join_state(join)
    store = new_store(tmp, join)
    changelog: list[dict[bytes, bytes | None]] = []  # what each checkpoint appended
    results: list[Result] = []
    late: list[int] = []
    early: list[str] = []
    current = [0]
    json = codec_for(None)

    def emit(key: bytes, ts: int, left: Any, right: Any, offset: int) -> None:
        kind = "pair" if left and right else "left" if left else "right"
        results.append((kind, left and left["id"], right and right["id"], ts))
        if kind != "pair":
            rec = left or right
            side = LEFT if left else RIGHT
            if not part.watermark > last_chance(case.spec, side, rec["t"]):
                early.append(f"{kind} {rec['id']} emitted at watermark {part.watermark}")

    def open_part() -> JoinPartition:
        rows = TablePartition(join.table, 0, store, 16, lambda: None)
        opened = JoinPartition(join, rows, (json, json), lambda s, t, w: late.append(current[0]))
        opened.emit = emit
        opened.load()
        return opened

    part = open_part()
    watermark = NO_WATERMARK
    for i, (side, key, ts) in enumerate(case.events):
        if i in case.restarts:  # a checkpoint, then a new owner opens the partition's store
            changes = part.rows.take_dirty()
            assert None not in changes.values(), "a tombstone: purged rows write none"
            changelog.append(changes)
            store.apply({"j": changes}, {})
            assert_nothing_final(store, case.spec)
            if i in case.rebuilds:  # a new disk: the changelog is all there is
                store.close()
                store = new_store(tmp, join)
                for at in range(0, len(changelog), case.batch):
                    batch: dict[bytes, bytes | None] = {}
                    for replayed in changelog[at : at + case.batch]:
                        batch.update(replayed)
                    store.apply({"j": batch}, {})
            part = open_part()
            assert part.watermark == watermark
        current[0] = i
        watermark = max(watermark, ts - case.ooo)
        part.advance(watermark)
        part.push(side, key.encode(), ts, {"id": i, "t": ts}, i)
    part.advance(max(watermark, case.end))
    store.close()
    return results, late, early, part.buffered


def new_store(tmp: Path, join: StreamJoin) -> PartitionStore:
    store = open_store(tmp / f"{next(_RUNS)}.sqlite", {"t": "1"}, ["j"])
    store.purges = {"j": join.table.purge}
    return store


def assert_nothing_final(store: PartitionStore, spec: JoinSpec) -> None:
    """The store holds no row its own watermark row has made final."""
    rows = dict(store.scan("j"))
    if WATERMARK_ROW not in rows:
        return
    watermark = struct.unpack(">q", rows.pop(WATERMARK_ROW))[0]
    for row in rows:
        side, ts = struct.unpack_from(">Bq", row)
        assert not watermark > last_chance(spec, side, ts), f"final row {side} {ts} at {watermark}"


def last_chance(spec: JoinSpec, side: int, ts: int) -> int:
    """The oracle's own: the watermark after which no on-time partner of the record can come."""
    if side == LEFT:
        return ts + spec.upper_ms + spec.grace_ms
    return ts - spec.lower_ms + spec.grace_ms


def oracle(case: Case) -> tuple[list[Result], list[int]]:
    """Brute force: which records are on time, every on-time pair of the same key within the
    bounds, and every unmatched on-time record whose last chance the final watermark passed."""
    spec = case.spec
    watermark = NO_WATERMARK
    on_time: list[tuple[int, int, str, int]] = []
    late = []
    for i, (side, key, ts) in enumerate(case.events):
        watermark = max(watermark, ts - case.ooo)
        if watermark > ts + spec.grace_ms:
            late.append(i)
        else:
            on_time.append((i, side, key, ts))
    results: list[Result] = []
    matched: set[int] = set()
    for li, ls, lk, lt in on_time:
        for ri, rs, rk, rt in on_time:
            within = lt + spec.lower_ms <= rt <= lt + spec.upper_ms
            if ls == LEFT and rs == RIGHT and lk == rk and within:
                results.append(("pair", li, ri, max(lt, rt)))
                matched |= {li, ri}
    end = max(watermark, case.end)
    for i, side, _, ts in on_time:
        keeps = spec.how == "outer" or (spec.how == "left" and side == LEFT)
        if keeps and i not in matched and end > last_chance(spec, side, ts):
            if side == LEFT:
                results.append(("left", i, None, ts))
            else:
                results.append(("right", None, i, ts))
    return results, late


def check(tmp: Path, case: Case) -> None:
    results, late, early, buffered = run_join(tmp, case)
    expected, expected_late = oracle(case)
    assert collections.Counter(results) == collections.Counter(expected)
    assert late == expected_late
    assert early == []
    if case.end == END_OF_TIME:
        assert buffered == 0, "records left in the join's state after the end of time"


@st.composite
def cases(draw: Any, spec_type: type[JoinSpec] = JoinSpec) -> Case:
    lower = draw(st.integers(-6, 6))
    spec = spec_type(
        lower,
        lower + draw(st.integers(0, 8)),
        draw(st.integers(0, 5)),
        draw(st.sampled_from(["inner", "left", "outer"])),
    )
    events = draw(
        st.lists(
            st.tuples(
                st.sampled_from([LEFT, RIGHT]), st.sampled_from(["a", "b"]), st.integers(0, 30)
            ),
            max_size=30,
        )
    )
    restarts = draw(st.sets(st.integers(1, 29), max_size=3))
    end = draw(st.sampled_from([END_OF_TIME, 0, 15, 30]))
    rebuilds = draw(st.sets(st.sampled_from(sorted(restarts)))) if restarts else set()
    batch = draw(st.integers(1, 3))
    return Case(spec, events, draw(st.integers(0, 6)), restarts, end, rebuilds, batch)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases())
def test_every_join_kind_matches_the_brute_force_oracle(tmp_path: Path, case: Case) -> None:
    check(tmp_path, case)


class UpperEdgeExclusive(JoinSpec):
    """A mutant: right records exactly at the left record's time + upper no longer match."""

    def partners(self, side: int, ts: int) -> tuple[int, int]:
        lo, hi = super().partners(side, ts)
        return (lo, hi - 1) if side == LEFT else (lo + 1, hi)


class GraceOneMsShort(JoinSpec):
    """A mutant: records turn final (purged, emitted unmatched) 1 ms before the grace ends."""

    def final_after(self, side: int, ts: int) -> int:
        return super().final_after(side, ts) - 1


@pytest.mark.parametrize("mutant", [UpperEdgeExclusive, GraceOneMsShort])
def test_the_oracle_catches_a_one_off_shift_of_the_window_or_the_grace_edge(
    tmp_path: Path, mutant: type[JoinSpec]
) -> None:
    @settings(
        max_examples=1000,
        deadline=None,
        derandomize=True,
        database=None,
        report_multiple_bugs=False,
        phases=[Phase.generate],  # found is enough: no shrinking
    )
    @given(case=cases(mutant))
    def run(case: Case) -> None:
        check(tmp_path, case)

    with pytest.raises(AssertionError):
        run()


def test_both_ends_of_the_interval_are_included(tmp_path: Path) -> None:
    spec = JoinSpec(-3, 5, 0, "left")  # right records in [tl - 3, tl + 5] match
    events = [(LEFT, "k", 10), (RIGHT, "k", 7), (RIGHT, "k", 15), (RIGHT, "k", 6), (RIGHT, "k", 16)]
    results, late, early, _ = run_join(tmp_path, Case(spec, events, 100, set(), END_OF_TIME))
    assert sorted(r for r in results if r[0] == "pair") == [
        ("pair", 0, 1, 10),
        ("pair", 0, 2, 15),
    ]
    assert late == [] and early == []


def test_a_left_record_is_emitted_unmatched_only_after_its_window_and_grace(tmp_path: Path) -> None:
    spec = join_spec(within=0.01, between=None, grace=0.005, how="left", what="t")
    assert (spec.lower_ms, spec.upper_ms, spec.grace_ms) == (-10, 10, 5)
    # ooo 100: the watermark is the newest time - 100; the left record at 100 is final once
    # the watermark passes 100 + 10 + 5 = 115, i.e. once a record at 216 arrives
    events = [(LEFT, "k", 100), (RIGHT, "x", 215), (RIGHT, "k", 110)]
    results, _, _, _ = run_join(tmp_path, Case(spec, events, 100, set(), 0))
    assert results == [("pair", 0, 2, 110)]  # a right record at the last moment still joins
    events = [(LEFT, "k", 100), (RIGHT, "x", 216), (RIGHT, "k", 110)]
    results, late, _, _ = run_join(tmp_path, Case(spec, events, 100, set(), 0))
    assert results == [("left", 0, None, 100)]
    assert late == [2]  # the watermark (116) has passed 110 + grace: late, as the oracle says


@settings(max_examples=500, deadline=None)
@given(
    lower=st.integers(-50, 50),
    width=st.integers(0, 50),
    grace=st.integers(0, 20),
    watermark=st.one_of(st.integers(-200, 200), st.sampled_from([NO_WATERMARK, 2**62])),
    rows=st.lists(
        st.tuples(
            st.sampled_from([LEFT, RIGHT]),
            st.one_of(st.integers(-300, 300), st.sampled_from([-(2**63), 2**63 - 1, 0, -1])),
            st.integers(0, 2**40),
        ),
        max_size=20,
    ),
)
def test_the_final_key_ranges_hold_exactly_the_rows_the_watermark_made_final(
    lower: int, width: int, grace: int, watermark: int, rows: list[tuple[int, int, int]]
) -> None:
    """Rule 2 as key ranges (what the store deletes with a watermark row): a row is in one
    exactly when the watermark has passed its last chance, negative event times included."""
    spec = JoinSpec(lower, lower + width, grace)
    ranges = final_ranges(spec, watermark)
    for side, ts, seq in rows:
        key = struct.pack(">Bqq", side, ts, seq) + b"user-key"
        inside = any(lo <= key < hi for lo, hi in ranges)
        assert inside == (watermark > last_chance(spec, side, ts)), (side, ts, ranges)
    assert not any(lo <= WATERMARK_ROW < hi for lo, hi in ranges)
