"""A relay stage (`runtime/relay.py`, `_relay.c`): records routed in batches without decoding.

The scanner is sound: whatever document it is sure of, orjson decodes to a dict with that
field's value, same type (any JSON, byte mutations of it, hand-picked edges); and it is sure
of the common case (ASCII documents, the field a plain str or an int), else the fast path
would never run. Through the real tasks in the testing kit, a relay stage writes exactly what
the per-record path writes (repartitioned records, watermark control records, dead letters,
committed offsets) for a mix of good and bad records past the loop's every-1024 look."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.runtime import relay
from streamkit.testing import AsyncTestDriver

if relay.NATIVE_RELAY:
    from streamkit.runtime._relay import scan_field

pytestmark = pytest.mark.skipif(not relay.NATIVE_RELAY, reason="the C relay is not built")

FIELD = "user_id"
_TEXT = st.text(max_size=6) | st.sampled_from(["u1", 'a"b', "a\\b", "tab\t", "é", "\x7f", ""])
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from([FIELD, "x", "user", "é"]) | _TEXT, inner, max_size=3)
    ),
    max_leaves=8,
)


def _encodings(value: Any, style: int) -> bytes:
    """JSON text of `value`: compact, ASCII-escaped, as it is, indented by 0 or 1."""
    if style == 0:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    indent = style - 3 if style > 2 else None
    return json.dumps(value, ensure_ascii=style == 1, indent=indent).encode()


def _check_sound(data: bytes) -> Any:
    got = scan_field(data, FIELD)
    if got is not None:
        decoded = orjson.loads(data)  # raises if the scanner accepted what orjson refuses
        assert type(decoded) is dict
        assert decoded[FIELD] == got and type(decoded[FIELD]) is type(got), (data, got)
    return got


@settings(max_examples=1500, deadline=None)
@given(
    st.dictionaries(st.sampled_from([FIELD, "x", "y"]), _JSON, max_size=4) | _JSON,
    st.integers(0, 4),
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 10_000), st.binary(max_size=2)), max_size=3
    ),
)
def test_what_the_scanner_is_sure_of_orjson_decodes_alike(
    value: Any, style: int, mutations: list[tuple[int, int, bytes]]
) -> None:
    data = _encodings(value, style)
    _check_sound(data)
    for kind, at, some in mutations:  # delete, insert, replace bytes anywhere
        at %= len(data) + 1
        data = (
            data[:at] + data[at + 1 :]
            if kind == 0
            else data[:at] + some + data[at:]
            if kind == 1
            else data[:at] + some + data[at + len(some) :]
        )
        _check_sound(data)


EDGES = [
    b'{"user_id":1e400}', b'{"user_id":"a","x":1e400}', b'{"x":1e99,"user_id":"a"}',
    b'{"x":1' + b"0" * 40 + b',"user_id":"a"}', b'{"x":1' + b"0" * 39 + b',"user_id":"a"}',
    b'{"x":1' + b"0" * 300 + b'e99,"user_id":"a"}', b'{"x":1' + b"0" * 400 + b',"user_id":"a"}',
    b'{"user_id":"a","user_id":"b"}', b'{"user\\u005fid":"a"}', b'{"user_id":"\\u0041"}',
    b'{"user_id":01}', b'{"user_id":-}', b'{"user_id":1.0}', b'{"user_id":-0}',
    b'{"user_id":123456789012345678}', b'{"user_id":1234567890123456789}',
    b'{"user_id":"a",}', b'{"user_id":"a"} x', b'{"user_id":"a"}\n ',
    b'\xef\xbb\xbf{"user_id":"a"}', b'{"user_id":"a\x00"}', b'{"x":"a\nb","user_id":"a"}',
    b'{"x":"a\x1fb","user_id":"a"}', b'{"user_id":"a","x":[1,]}', b'{"user_id":"a","x":{"y":}}',
    b'{"user_id":"a","x":"\\q"}', b'{"user_id":"a","x":tru}', b'{"user_id":"a","x":nulll}',
    b"[" * 70 + b"]" * 70, b'{"x":' + b"[" * 63 + b"]" * 63 + b',"user_id":"a"}',
    b'{"x":' + b"[" * 64 + b"]" * 64 + b',"user_id":"a"}', b'{"user_id":"a"', b"", b"{",
    b'{"user_id":"a\\tb"}', b'{"user\\/id":"a"}', b'{"user_id":"caf\xc3\xa9"}',
    b'{"user_id":"a","x":"\xff"}', b'{"user_id":[1]}',
]  # fmt: skip


@pytest.mark.parametrize("data", EDGES)
def test_edges(data: bytes) -> None:
    _check_sound(data)


@pytest.mark.parametrize(
    ("data", "field"),
    [(b'{"a\\nb":1}', "a\\nb"), (b'{"a\\/b":1}', "a/b"), (b'{"a\\/b":1}', "a\\/b")],
)
def test_a_member_name_with_an_escape_is_not_sure(data: bytes, field: str) -> None:
    assert scan_field(data, field) is None  # whatever it unescapes to


def test_the_scanner_is_sure_of_the_common_case() -> None:
    rnd = random.Random(7)
    for i in range(300):
        doc = {
            "id": i, "kind": rnd.choice(["view", "purchase"]), "amount": rnd.random() * 100,
            FIELD: rnd.choice([f"user-{rnd.randrange(1000)}", rnd.randrange(-(10**17), 10**17)]),
            "tags": [rnd.choice(["a", "b"]), None, True, {"n": -1.5e-7}],
        }  # fmt: skip
        for style in range(5):
            data = _encodings(doc, style)
            assert _check_sound(data) == doc[FIELD], data


# -- through the real tasks ----------------------------------------------------------------

GOOD = [
    b'{"user_id": "u1", "n": 1}', b'{"n":2,"user_id":"u2"}', b' {"user_id":7,"n":[1,{"a":null}]}',
    b'{"user_id":"u3","n":1.5e3}',
]  # fmt: skip
BAD = [
    b"not json", b'{"n": 1}', b'{"user_id": "caf\xc3\xa9"}', b'{"user_id": "a\\tb"}',
    b"[1, 2]", b'{"user_id": [1]}', b'{"user_id": "u1", "n": 1e400}', b"\xff\xfe",
    b'{"user_id": 1.5}', b'{"user_id": null}', b'{"user_id": 123456789012345678901}',
]  # fmt: skip


def _records(
    count: int, seed: int, bad: float
) -> list[tuple[bytes | None, bytes | None, float, Any]]:
    rnd = random.Random(seed)
    out: list[tuple[bytes | None, bytes | None, float, Any]] = []
    for i in range(count):
        value: bytes | None = rnd.choice(BAD) if rnd.random() < bad else rnd.choice(GOOD)
        value = None if rnd.random() < 0.01 else value
        key = (
            rnd.choice([b"\xff", "ключ".encode()])
            if rnd.random() < 0.05
            else rnd.choice([None, b"k"])
        )
        headers = [("h", b"1")] if rnd.random() < 0.2 else None
        out.append((key, value, 1_700_000_000 + seed * count + i + rnd.randrange(-5, 5), headers))
    return out


def _app(seen: list[Any]) -> sk.App:
    app = sk.App("relay")
    src = app.topic("relay-in", partitions=2, out_of_orderness=3)
    out = app.topic("relay-out", partitions=2)
    moved = app.stream(src).key_by(FIELD, name="by-user")
    counts = app.window("per-user", sk.tumbling(20), sk.count(), output=out)  # on the watermark

    @app.agent(moved, state=[counts])
    async def read(stream: sk.Stream[Any]) -> None:
        async for value in stream:
            seen.append((value, stream.event.timestamp))
            counts.add(value[FIELD])

    return app


async def _run(native: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, int]:
    taken = [0]
    real = relay.Relay  # type: ignore[attr-defined]  # (what relay.py calls, wrapped)

    def counting(*args: Any) -> Any:
        inner = real(*args)

        def call(limit: int) -> Any:
            got = inner(limit)
            if got is not None:
                assert 0 < got[0] <= limit
                taken[0] += got[0]
            return got

        return call

    monkeypatch.setattr(relay, "NATIVE_RELAY", native)
    monkeypatch.setattr(relay, "Relay", counting)
    seen: list[Any] = []
    async with AsyncTestDriver(_app(seen)) as driver:
        for batch in range(3):
            records = _records(1500, batch, bad=0.1 * batch)  # the first: all good
            target = driver.topic("relay-in")
            for key, value, ts, headers in records[:-1]:  # one fetch: pumped by the last
                driver.topics.append(target, key, value, ts, None, headers)
            key, value, ts, headers = records[-1]
            await driver.send_raw("relay-in", value, key=key, timestamp=ts, headers=headers)
            await driver.checkpoint()
        written = {
            name: [
                (r.partition, r.key, r.value, r.timestamp, tuple(r.headers or ()))
                for r in driver.log.written(name)
            ]
            for name in sorted(driver.log.topics())
        }
        committed = driver.committed("relay-in")
    return (written, committed, seen), taken[0]


async def test_a_relay_stage_writes_what_the_per_record_path_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference, none_taken = await _run(False, monkeypatch)
    relayed, taken = await _run(True, monkeypatch)
    assert none_taken == 0
    assert taken > 3000  # most records went through the relay (the bad ones did not)
    written, committed, seen = relayed
    assert committed == reference[1] and sum(committed.values()) == 4500
    assert written.keys() == reference[0].keys()
    for name in written:
        assert written[name] == reference[0][name], name
    assert sorted(seen, key=repr) == sorted(reference[2], key=repr)
    dead = [r for name, rs in written.items() if "dlq" in name for r in rs]
    assert len(dead) > 300  # the bad records, dead-lettered by the per-record path
