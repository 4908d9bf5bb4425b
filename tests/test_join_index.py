"""A stream-stream join's in-memory index in C (`state/_joinindex.c`) against its Python class,
the reference (`state/join_index.py`): for any sequence of buffered records (repeated keys and
times, out of order), partner searches and purges (any watermark, dicts to forget the rows
from), both give the same answers in the same order and leave the same dicts; and both agree
with a brute-force list of what is buffered. The join's push in C (`state/_joinpush.c`)
against `JoinPartition._push`: the same calls in the same order."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.joins import JoinSpec, StreamJoin, pair
from streamkit.serde import codec_for
from streamkit.state import join_index
from streamkit.state.join_index import JoinIndex
from streamkit.state.stream_join import JoinPartition

try:
    from streamkit.state._joinindex import JoinIndex as NativeJoinIndex
except ImportError:  # pragma: no cover
    NativeJoinIndex = None  # type: ignore[assignment,misc]

_ROW = struct.Struct(">Bqq")
# a small grid: equal times (of one key, of different keys) and equal final times are common
_TIMES = st.integers(-6, 6) | st.sampled_from([-(2**40), 2**40])
_KEYS = st.sampled_from([b"", b"a", b"b", b"ab", b"\x00", b"\xff" * 3])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 1), _KEYS, _TIMES),
        st.tuples(st.just("between"), st.integers(0, 1), _KEYS, _TIMES, st.integers(0, 8)),
        st.tuples(st.just("purge"), st.integers(0, 1), _TIMES, st.booleans()),
    ),
    max_size=80,
)


def run(index: Any, ops: list[tuple[Any, ...]]) -> tuple[list[Any], list[dict[bytes, int]]]:
    """Apply `ops`; what each answered, and the dicts purges forgot rows from."""
    answers: list[Any] = []
    dicts: list[dict[bytes, int]] = [{}, {}]
    for seq, op in enumerate(ops):
        if op[0] == "add":
            _, side, key, ts = op
            index.add(side, key, ts, seq)
            dicts[seq % 2][_ROW.pack(side, ts, seq) + key] = seq
        elif op[0] == "between":
            _, side, key, lo, width = op
            answers.append(index.between(side, key, lo, lo + width))
        else:
            _, side, watermark, forget = op
            answers.append(index.purge(side, watermark, tuple(dicts) if forget else ()))
    return answers, dicts


@pytest.mark.skipif(NativeJoinIndex is None, reason="the C extension is not built")
@settings(max_examples=400, deadline=None)
@given(ops=_OPS, after=st.tuples(st.integers(-4, 4), st.integers(-4, 4)))
def test_the_c_index_answers_as_the_python_one(
    ops: list[tuple[Any, ...]], after: tuple[int, int]
) -> None:
    assert run(NativeJoinIndex(*after), ops) == run(JoinIndex(*after), ops)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS, after=st.tuples(st.integers(-4, 4), st.integers(-4, 4)))
def test_the_python_index_holds_what_a_list_holds(
    ops: list[tuple[Any, ...]], after: tuple[int, int]
) -> None:
    """Brute force: the buffered (side, key, ts, seq) in a list; `between` is a filter, a
    purge removes exactly the records with ts + final_after < watermark."""
    index = JoinIndex(*after)
    held: list[tuple[int, bytes, int, int]] = []
    for seq, op in enumerate(ops):
        if op[0] == "add":
            _, side, key, ts = op
            index.add(side, key, ts, seq)
            held.append((side, key, ts, seq))
        elif op[0] == "between":
            _, side, key, lo, width = op
            want = sorted(
                (ts, s)
                for sd, k, ts, s in held
                if sd == side and k == key and lo <= ts <= lo + width
            )
            got = index.between(side, key, lo, lo + width) or []
            assert [(ts, _ROW.unpack_from(row)[2]) for ts, row in got] == want
            assert all(row[_ROW.size :] == key for _, row in got)
        else:
            _, side, watermark, _ = op
            final = {r for r in held if r[0] == side and r[2] + after[side] < watermark}
            purged = index.purge(side, watermark, ())
            assert sorted(purged) == sorted(_ROW.pack(s, ts, q) + k for s, k, ts, q in final)
            held = [r for r in held if r not in final]


def test_the_index_in_use_is_the_c_one_unless_turned_off() -> None:
    index = join_index.new_index(0, 0)
    if join_index.NATIVE:
        assert NativeJoinIndex is not None and isinstance(index, NativeJoinIndex)
    else:
        assert type(index) is JoinIndex


@pytest.mark.skipif(NativeJoinIndex is None, reason="the C extension is not built")
def test_the_c_index_refuses_what_it_cannot_hold() -> None:
    index = NativeJoinIndex(0, 0)
    with pytest.raises(ValueError, match="side"):
        index.add(2, b"k", 0, 0)
    with pytest.raises(TypeError, match="bytes"):
        index.add(0, "k", 0, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dicts"):
        index.purge(0, 10, [{}])  # type: ignore[arg-type]


class Rows:
    """A join's rows as `JoinPartition` uses them, recording every read and write; its cache
    keeps the last three rows written (older ones are read back with `get`)."""

    def __init__(self, calls: list[Any]) -> None:
        self.calls = calls
        self.stored: dict[bytes, bytes] = {}
        self.cache: dict[bytes, bytes] = {}
        self.dirty: dict[bytes, bytes] = {}
        self.flushing: dict[bytes, bytes] = {}

    def get(self, row: bytes) -> bytes:
        self.calls.append(("get", row))
        return self.stored[row]

    def set(self, row: bytes, value: bytes) -> None:
        self.calls.append(("set", row, value))
        self.stored[row] = self.dirty[row] = self.cache[row] = value
        while len(self.cache) > 3:
            del self.cache[next(iter(self.cache))]


def run_pushes(native: bool, spec: JoinSpec, events: list[tuple[Any, ...]]) -> list[Any]:
    """Every call a JoinPartition makes over `events` (push or advance), the C push or the
    Python one, and its counters after each."""
    saved, join_index.NATIVE = join_index.NATIVE, native
    try:
        calls: list[Any] = []
        json = codec_for(None)
        part = JoinPartition(
            StreamJoin("j", spec, pair), Rows(calls), (json, json),  # type: ignore[arg-type]
            lambda s, t, w: calls.append(("late", s, t, w)),
        )  # fmt: skip
        assert (type(part.push) is not type(part._push)) == native
        part.emit = lambda *args: calls.append(("emit", *args))
        for i, (kind, side, key, ts, raw) in enumerate(events):
            if kind == "advance":
                part.advance(ts)
            else:
                value = {"id": i, "t": ts}
                part.push(side, key, ts, value, i - 3, orjson.dumps(value) if raw else None)
            calls.append((part._seq, part.newest_final, part.buffered, part.watermark))
        return calls
    finally:
        join_index.NATIVE = saved


@pytest.mark.skipif(NativeJoinIndex is None, reason="the C extension is not built")
@settings(max_examples=300, deadline=None)
@given(
    bounds=st.tuples(st.integers(-6, 6), st.integers(0, 8), st.integers(0, 5)),
    how=st.sampled_from(["inner", "left", "outer"]),
    events=st.lists(
        st.tuples(
            st.sampled_from(["push", "push", "advance"]),
            st.integers(0, 1),
            st.sampled_from([b"a", b"b"]),
            st.integers(0, 30),
            st.booleans(),
        ),
        max_size=40,
    ),
)
def test_the_c_push_makes_the_calls_of_the_python_one(
    bounds: tuple[int, int, int], how: str, events: list[tuple[Any, ...]]
) -> None:
    """Late records, partners (read from the cache or the rows), matched flags, records final
    on arrival, the rows written and the counters: call for call."""
    lower, width, grace = bounds
    spec = JoinSpec(lower, lower + width, grace, how)
    assert run_pushes(True, spec, events) == run_pushes(False, spec, events)
