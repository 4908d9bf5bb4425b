"""The pure logic of versioned tables and table joins (no broker), against brute-force oracles:
version lookup with out-of-order puts and deletes, the retention's refusals and purge, the
stream-table sync decision, what a table-table join emits, and a versioned partition's rows
written to SQLite and loaded again."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.state.store import open_store
from streamkit.state.table import Table, TablePartition
from streamkit.state.table_join import row_exists, table_join_change
from streamkit.state.versioned_table import VersionedPartition, VersionedTable
from streamkit.versions import (
    TOMBSTONE,
    Versioned,
    Versions,
    as_of,
    cutoff,
    purge,
    put,
    row_key,
    split_row_key,
    sync_delay,
)

DELETE = None  # a delete in the generated operations

times = st.integers(min_value=0, max_value=40)
ops = st.lists(
    st.tuples(times, st.one_of(st.none(), st.integers(min_value=1, max_value=9))),
    max_size=30,
)


def oracle_as_of(puts: list[tuple[int, Any]], t: int, oldest: int | None) -> tuple[bool, Any]:
    """Every accepted put ever made; the last one at the latest time <= t."""
    if oldest is not None and t < oldest:
        return False, None
    best: tuple[int, int, Any] | None = None
    for seq, (ts, value) in enumerate(puts):
        if ts <= t and (best is None or (ts, seq) >= best[:2]):
            best = (ts, seq, value)
    if best is None or best[2] is DELETE:
        return False, None
    return True, best[2]


@settings(max_examples=400, deadline=None)
@given(ops, st.integers(min_value=1, max_value=15))
def test_as_of_after_puts_and_purges_is_the_brute_force_answer(
    operations: list[tuple[int, Any]], retention: int
) -> None:
    versions: Versions = []
    accepted: list[tuple[int, Any]] = []
    observed: int | None = None
    for ts, value in operations:
        oldest = cutoff(observed, retention)
        ok = put(versions, ts, TOMBSTONE if value is DELETE else value, oldest)
        assert ok == (oldest is None or ts >= oldest)  # refused exactly before the cutoff
        if not ok:
            continue
        accepted.append((ts, value))
        observed = ts if observed is None else max(observed, ts)
        oldest = cutoff(observed, retention)
        purge(versions, oldest)
        assert [v[0] for v in versions] == sorted({v[0] for v in versions})
        for t in range(-1, 45):
            found, got = as_of(versions, t, oldest)
            want = oracle_as_of(accepted, t, oldest)
            assert (found, got if found else None) == want, (t, versions, accepted)
        # nothing kept that no lookup at or after the cutoff can see
        for _, (nxt, _) in itertools.pairwise(versions):
            assert oldest is None or nxt > oldest
        if versions and versions[-1][1] is TOMBSTONE and oldest is not None:
            assert versions[-1][0] > oldest or len(versions) > 1


def test_the_latest_value_is_kept_however_old_and_a_late_delete_is_purged() -> None:
    versions: Versions = [(10, "a")]
    assert purge(versions, 1000) == []
    assert as_of(versions, 1000, 1000) == (True, "a")
    versions = [(10, "a"), (20, TOMBSTONE)]
    assert purge(versions, 20) == [10, 20]
    assert versions == []
    versions = [(10, "a"), (20, TOMBSTONE)]
    assert purge(versions, 19) == []  # as_of(19) still answers "a"


def test_a_put_at_the_same_time_replaces_and_earlier_puts_go_in_place() -> None:
    versions: Versions = []
    for ts, value in [(30, "c"), (10, "a"), (20, "b"), (20, "B")]:
        assert put(versions, ts, value, None)
    assert versions == [(10, "a"), (20, "B"), (30, "c")]
    assert as_of(versions, 25, None) == (True, "B")
    assert as_of(versions, 9, None) == (False, None)


@given(st.binary(max_size=20), st.integers(min_value=-(2**62), max_value=2**62))
def test_row_keys_split_back_and_sort_by_time(key: bytes, ts: int) -> None:
    assert split_row_key(row_key(key, ts)) == (key, ts)
    assert row_key(key, ts) < row_key(key, ts + 1)


def test_versioned_retention_must_be_positive() -> None:
    with pytest.raises(ValueError, match="retention"):
        Versioned(retention=0)
    assert Versioned(retention=1.5).retention_ms == 1500


def oracle_sync(
    record_ts: int,
    arrived: float,
    now: float,
    table_time: int | None,
    caught_up_at: float | None,
    max_wait: float,
    progressed_at: float | None,
) -> float:
    """The first moment (on a 10 ms grid) from `now` at which one of the conditions holds."""
    step = 0.01  # every input is on this grid
    tau = now
    while True:
        waited_since = max(arrived, progressed_at if progressed_at is not None else arrived)
        if (
            (table_time is not None and table_time >= record_ts)
            or (caught_up_at is not None and caught_up_at >= arrived)
            or tau >= waited_since + max_wait - 1e-9
        ):
            return tau - now
        tau = round(tau + step, 6)


grid = st.integers(min_value=0, max_value=300).map(lambda n: n / 100)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=20),
    grid,
    grid,
    st.one_of(st.none(), st.integers(min_value=0, max_value=20)),
    st.one_of(st.none(), grid),
    st.integers(min_value=1, max_value=200).map(lambda n: n / 100),
    st.one_of(st.none(), grid),
)
def test_sync_delay_is_the_first_moment_a_condition_holds(
    record_ts: int,
    arrived: float,
    extra: float,
    table_time: int | None,
    caught_up_at: float | None,
    max_wait: float,
    progressed_at: float | None,
) -> None:
    now = arrived + extra
    got = sync_delay(record_ts, arrived, now, table_time, caught_up_at, max_wait, progressed_at)
    want = oracle_sync(record_ts, arrived, now, table_time, caught_up_at, max_wait, progressed_at)
    assert got == pytest.approx(want, abs=1e-6)


def test_sync_edges() -> None:
    # read up to exactly the record's time: go; one ms short: wait
    assert sync_delay(100, 0.0, 0.0, 100, None, 2.0) == 0
    assert sync_delay(100, 0.0, 0.0, 99, None, 2.0) == 2.0
    # caught up by a fetch that started when the record arrived: go; just before: wait
    assert sync_delay(100, 5.0, 5.0, None, 5.0, 2.0) == 0
    assert sync_delay(100, 5.0, 5.5, None, 4.999, 2.0) == pytest.approx(1.5)
    # still reading: the wait counts from the last progress
    assert sync_delay(100, 5.0, 6.0, None, None, 2.0, progressed_at=5.9) == pytest.approx(1.9)


sides = st.sampled_from(["left", "right"])
updates = st.lists(
    st.tuples(sides, st.integers(0, 3), st.one_of(st.none(), st.integers(1, 9))), max_size=25
)


@settings(max_examples=300, deadline=None)
@given(updates, st.sampled_from(["inner", "left", "outer"]))
def test_table_join_output_materializes_to_the_join_of_both_tables(
    changes: list[tuple[str, int, int | None]], how: str
) -> None:
    left: dict[int, int] = {}
    right: dict[int, int] = {}
    out: dict[int, tuple[int | None, int | None]] = {}
    for side, key, value in changes:
        table = left if side == "left" else right
        old_l, old_r = key in left, key in right
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
        change = table_join_change(how, old_l, old_r, key in left, key in right)
        if change == "row":
            out[key] = (left.get(key), right.get(key))
        elif change == "delete":
            assert key in out  # a tombstone only for a row that was emitted
            del out[key]
        else:
            assert key not in out  # nothing to say: no row before, none now
    want = {
        k: (left.get(k), right.get(k))
        for k in set(left) | set(right)
        if row_exists(how, k in left, k in right)
    }
    assert out == want


stored_ops = st.lists(
    st.tuples(
        st.sampled_from(["a", "b"]),
        times,
        st.one_of(st.none(), st.integers(min_value=1, max_value=9)),
        st.booleans(),  # a checkpoint after this put
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(stored_ops, st.integers(min_value=1, max_value=15))
def test_a_versioned_partition_reloaded_from_its_store_answers_as_before(
    operations: list[tuple[str, int, int | None, bool]], retention: int
) -> None:
    """Puts through a `VersionedPartition` over a real SQLite store, checkpointed (dirty rows
    written, deletes as row deletions) at random moments and at the end, then loaded afresh:
    every as_of answer, the observed time and the rows kept equal the oracle's."""
    with tempfile.TemporaryDirectory() as tmp:
        rows_table: Table[Any, Any] = Table(
            "v", cast(Any, SimpleNamespace(name="v-changelog")), key_type=bytes, value_type=bytes
        )
        rows_table.checked_keys = False
        vt: VersionedTable[Any, Any] = VersionedTable(
            "v", rows_table, Versioned(retention=retention / 1000)
        )
        store = open_store(Path(tmp) / "s.sqlite", {"app": "t"}, ["v"])

        def partition() -> VersionedPartition:
            rows = TablePartition(rows_table, 0, store, 1000, lambda: None)
            return VersionedPartition(vt, rows)

        def checkpoint(part: VersionedPartition) -> None:
            store.apply({"v": part.rows.take_dirty()}, {})
            part.rows.flushing = {}

        part = partition()
        accepted: dict[bytes, list[tuple[int, Any]]] = {b'"a"': [], b'"b"': []}
        observed: int | None = None
        for key, ts, value, flush in operations:
            encoded = orjson.dumps(key)
            raw = None if value is None else orjson.dumps(value)
            if part.put(encoded, ts, TOMBSTONE if value is None else value, raw):
                accepted[encoded].append((ts, value))
                observed = ts if observed is None else max(observed, ts)
            if flush:
                checkpoint(part)
        checkpoint(part)
        again = partition()
        store.close()
    assert again.observed == observed
    oldest = cutoff(observed, retention)
    for encoded, puts in accepted.items():
        for t in range(-1, 45):
            assert again.as_of(encoded, t) == oracle_as_of(puts, t, oldest), (encoded, t)
    assert again.index == {k: v for k, v in part.index.items() if v}
