"""An exchange forwards its input record's value bytes when the value reaching it is the one
decoded, unchanged, in the output's encoding (no encode per event); anything a map made, or
another encoding, is encoded again. Run through the real tasks in the testing kit."""

from __future__ import annotations

from typing import Any

import orjson

import streamkit as sk
from streamkit.graph import passed_unchanged
from streamkit.streams import ExchangeNode
from streamkit.testing import AsyncTestDriver

SENT = [b'{"u": "a",   "n": 1}', b'{ "n": 2, "u": "b" }', b'{"u":"c","n":-3, "x": [1, 2]}']


def _app() -> tuple[sk.App, dict[str, list[Any]]]:
    app = sk.App("fwd")
    src = app.topic("fwd-in", partitions=2)
    events = app.stream(src)
    seen: dict[str, list[Any]] = {}
    streams = {
        "direct": events.key_by("u", name="direct"),
        "filtered": events.filter(lambda v: v["n"] != 0).key_by("u", name="filtered"),
        "branched": events.branch(lambda v: v["n"] > 0, default=True)[1].key_by(
            lambda v: v["u"], name="branched"
        ),
        "shuffled": events.shuffle(name="shuffled"),
        "merged": events.filter(lambda v: v["n"] > 0).merge(events).rebalance(name="merged"),
        "mapped": events.map(lambda v: v).key_by("u", name="mapped"),
        "typed": events.key_by("u", name="typed", value_type=dict[str, Any]),
    }
    for label, stream in streams.items():
        got = seen.setdefault(label, [])

        async def body(stream: sk.Stream[Any], got: list[Any] = got) -> None:
            async for value in stream:
                got.append(value)

        app.agent(stream, name=f"read-{label}")(body)
    return app, seen


def test_which_exchanges_see_their_inputs_values_unchanged() -> None:
    app, _ = _app()
    unchanged = {
        node.name: passed_unchanged(stage, node)
        for stage in app.stages
        for node in stage.exchanges
        if isinstance(node, ExchangeNode)
    }
    assert unchanged == {
        "direct": True, "filtered": True, "branched": True, "shuffled": True, "merged": True,
        "mapped": False, "typed": True,
    }  # fmt: skip


async def test_unchanged_values_are_forwarded_as_their_bytes_the_rest_encoded_again() -> None:
    app, seen = _app()
    async with AsyncTestDriver(app) as driver:
        for value in SENT:
            await driver.send_raw("fwd-in", value)
        written = {
            label: sorted(r.value for r in driver.log.written(f"fwd-{label}-repartition"))
            for label in seen
        }
    compact = sorted(orjson.dumps(orjson.loads(v)) for v in SENT)
    assert compact != sorted(SENT)  # the test's input is not what an encoder writes
    assert written["direct"] == sorted(SENT)
    assert written["shuffled"] == sorted(SENT)
    assert written["filtered"] == sorted(SENT[:2] + SENT[2:])  # no n == 0 among them
    assert written["branched"] == sorted(SENT[2:])  # the default branch: n <= 0
    assert written["merged"] == sorted(SENT[:2] * 2 + SENT[2:])
    assert written["mapped"] == compact  # a map's result is encoded
    # another codec (JSON validated into a type, not plain JSON): encoded again
    assert not set(written["typed"]) & set(SENT)
    # and every reader decoded the same values either way
    want = sorted(orjson.loads(v)["u"] for v in SENT)
    for label in ("direct", "shuffled", "mapped", "typed"):
        assert sorted(v["u"] for v in seen[label]) == want, label


async def test_a_join_buffers_its_input_records_bytes_when_the_values_come_unchanged() -> None:
    app = sk.App("fwdj")
    src, out = app.topic("fwdj-in", partitions=2), app.topic("fwdj-out", partitions=2)
    events = app.stream(src)
    left = events.filter(lambda v: v["n"] > 0).key_by("u", name="l")
    right = events.filter(lambda v: v["n"] <= 0).key_by("u", name="r")
    left.join(right, within=60, name="j").to(out)
    sent = [b'{"u": "a",  "n": 1}', b'{"u": "a",  "n": 0}', b'{ "u": "b", "n": -1 }']
    async with AsyncTestDriver(app) as driver:
        for value in sent:
            await driver.send_raw("fwdj-in", value, key=b"a")
        await driver.checkpoint()
        rows = [r.value for r in driver.log.written("fwdj-j-changelog")]
        joined = driver.read_values(out)
    buffered = sorted(v[9:] for v in rows if v is not None and len(v) > 9)  # (matched, offset)
    assert buffered == sorted(sent)  # as sent, spaces and all: not encoded again
    assert joined == [[{"u": "a", "n": 1}, {"u": "a", "n": 0}]]
