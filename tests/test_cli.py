"""The command line: real subprocesses, one clear line and a non-zero exit on every mistake."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

import streamkit as sk
from streamkit.registry import Avro
from streamkit.registry.codec import connect_codecs
from tests.kafkahelp import ROOT, read_all
from tests.regcliapp import Order


def streamkit(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "streamkit.cli", *args],
        input=stdin.encode(),
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    return proc.returncode, (proc.stdout + proc.stderr).decode()


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["worker", "apps.hello"], {}, "is not MODULE:APP"),
        (["worker", "apps.nope:app"], {}, "cannot import module 'apps.nope'"),
        (["worker", "apps.hello:nope"], {}, "has no attribute 'nope'"),
        (["worker", "apps.hello:BaseModel"], {}, "not a streamkit.App"),
        (["worker", "apps.hello:app", "--commit-interval", "0"], {}, "commit_interval"),
        (["worker", "apps.hello:app"], {"STREAMKIT_ON_AGENT_ERROR": "ignore"}, "on_agent_error"),
        (["worker", "apps.hello:app"], {"STREAMKIT_LINGER_MS": "soon"}, "linger_ms"),
        (["worker", "apps.hello:app"], {"STREAMKIT_COMMITINTERVAL": "1"}, "unknown setting"),
        (
            ["worker", "apps.hello:app"],
            {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"},
            "cannot reach Kafka at 127.0.0.1:1",
        ),
        (["topics", "apps.hello:app"], {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "cannot reach"),
        (["send", "apps.hello:app", "nosuch", "--value", "1"], {}, "declares no topic 'nosuch'"),
        (["send", "apps.hello:app", "orders"], {}, "not JSON"),
    ],
)
def test_mistakes_fail_with_one_clear_line(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    stdin = "{oops\n" if args[-1] == "orders" else ""
    code, output = streamkit(*args, env=env, stdin=stdin)
    assert code != 0
    assert expected in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1, output


async def test_send_json_lines_and_list_topics(uid: str) -> None:
    # apps.hello's topics are shared by tests; count what this test adds by a unique id.
    lines = "".join(
        orjson.dumps({"id": i, "amount": 500.0, "tag": uid}).decode() + "\n" for i in range(5)
    )
    code, output = streamkit("send", "apps.hello:app", "orders", "--key-field", "id", stdin=lines)
    assert code == 0, output
    assert "sent 5 records to orders" in output
    records = [r for r in await read_all("orders") if uid.encode() in r.value]
    assert sorted(int(r.key) for r in records) == [0, 1, 2, 3, 4]

    code, output = streamkit("topics", "apps.hello:app")
    assert code == 0, output
    table = {line.split()[0]: line.split()[1:] for line in output.splitlines()[1:]}
    assert table["orders"] == ["4", "4", "source"]
    # big-orders exists only once a worker ran (created at start): declared 4, a sink
    assert table["big-orders"][0::2] == ["4", "sink"]
    assert table["big-orders"][1] in ("4", "missing")
    assert table["hello-dlq"][2] == "internal"


async def test_send_to_a_registry_topic_registers_its_schemas_first(
    uid: str, schema_registry: str
) -> None:
    """`streamkit send` to a topic with schema-registry codecs registers (or looks up) their
    schemas as a worker does, then writes the Confluent wire format."""
    env = {"SKTEST_ID": uid, "STREAMKIT_SCHEMA_REGISTRY_URL": schema_registry}
    lines = '{"id": 1, "amount": 5.5}\n{"id": 2, "amount": 150}\n'
    code, output = streamkit(
        "send", "tests.regcliapp:app", f"regcli-orders-{uid}", "--key-field", "id",
        env=env, stdin=lines,
    )  # fmt: skip
    assert code == 0, output
    records = await read_all(f"regcli-orders-{uid}", expect=2)
    assert all(r.value[:1] == b"\x00" and r.key[:1] == b"\x00" for r in records)  # magic byte
    reader = sk.App(f"regcli-reader-{uid}")  # the same declarations, decoding what was sent
    topic = reader.topic(f"regcli-orders-{uid}", key_type=Avro(str), value_type=Avro(Order))
    connect_codecs([topic], schema_registry)
    decoded = sorted((topic.key_codec.decode(r.key), topic.value_codec.decode(r.value).amount)
                     for r in records)  # fmt: skip
    assert decoded == [("1", 5.5), ("2", 150.0)]
