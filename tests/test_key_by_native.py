"""A key_by exchange's per-value call in C (`runtime/_keyby.c`) against its Python closure,
the reference: for any value (a dict with or without the field, an object with the attribute,
keys of any type, a key function), record (raw bytes forwarded or not, headers, an event time
or none) and route answer, both make the same route calls, set `full` alike, and raise the
same error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.runtime import exchange
from streamkit.runtime.exchange import NATIVE_KEY_BY, Router


@dataclass
class Rec:
    value: bytes | None
    timestamp: int
    headers: Any


@dataclass
class Obj:
    user_id: Any


class Collector:
    def __init__(self, answer: bool) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.answer = answer

    def keyed_router(self, tps: Any, known: Any, place: Any, keyless: Any) -> Any:
        def route(key: Any, value: Any, ts: Any, headers: Any = None) -> bool:
            self.calls.append((key, value, ts, headers))
            return self.answer

        return route


class Host:
    def __init__(self, rec: Rec, event_ts: int | None, answer: bool) -> None:
        self.record = rec
        self.event_ts = event_ts
        self.full = False
        self.collector = Collector(answer)


_KEYS = st.one_of(st.text(max_size=8), st.integers(), st.none(), st.just("\ud800"), st.just(b"raw"))
_VALUES = st.one_of(
    st.dictionaries(st.sampled_from(["user_id", "other"]), _KEYS, max_size=2),
    st.builds(Obj, _KEYS),
    st.none(),
    st.integers(),
)


def _outcome(native: bool, key: Any, value: Any, rec: Rec, event_ts: int | None,
             answer: bool, key_type: Any) -> tuple[Any, ...]:  # fmt: skip
    app = sk.App("keyby-native")
    source = app.topic("kb-in", partitions=1)
    stream = app.stream(source).key_by(key, name="kb", key_type=key_type)
    app.agent(stream)(_body)
    node = app.stages[0].exchanges[0]
    assert node.output is not None
    host = Host(rec, event_ts, answer)  # (a stand-in collector: no RecordCollector)
    saved = exchange.NATIVE_KEY_BY
    exchange.NATIVE_KEY_BY = native
    try:
        push = Router(node, node.output, 0, raw=rec.value is not None).bind(host)  # type: ignore[arg-type]
    finally:
        exchange.NATIVE_KEY_BY = saved
    assert (type(push).__name__ == "KeyBy") == native
    try:
        push(value)
        error = None
    except Exception as exc:  # the same type and message both ways
        error = (type(exc), str(exc))
    return host.collector.calls, host.full, error


async def _body(stream: Any) -> None:
    async for _ in stream:
        pass


@pytest.mark.skipif(not NATIVE_KEY_BY, reason="the C extension is not built (or turned off)")
@settings(max_examples=300, deadline=None)
@given(
    key=st.one_of(
        st.just("user_id"), st.just(lambda v: v["user_id"] if isinstance(v, dict) else v)
    ),
    value=_VALUES,
    raw=st.one_of(st.none(), st.binary(max_size=8)),
    timestamp=st.integers(0, 2**40),
    headers=st.sampled_from([(), [], [("h", b"1")], (("h", b"2"),)]),
    event_ts=st.one_of(st.none(), st.integers(0, 2**40)),
    answer=st.booleans(),
    key_type=st.sampled_from([str, int]),
)
def test_native_key_by_does_what_the_python_one_does(
    key: Any, value: Any, raw: bytes | None, timestamp: int, headers: Any,
    event_ts: int | None, answer: bool, key_type: Any,
) -> None:  # fmt: skip
    rec = Rec(raw, timestamp, headers)
    native = _outcome(True, key, value, rec, event_ts, answer, key_type)
    reference = _outcome(False, key, value, rec, event_ts, answer, key_type)
    assert native == reference
