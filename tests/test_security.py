"""TLS and SASL against a real broker with such listeners (scripts/localkafka.py --secure):
a whole exactly-once pipeline (key_by + table) over each kind of listener, a wrong password
that stops the worker at start with a line naming the setting, and a password that never shows
in logs (DEBUG, aiokafka included), errors, or the settings' repr and dumps."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.structs import TopicPartition

import streamkit as sk
from streamkit.clients import make_consumer
from streamkit.settings import Settings
from tests.kafkahelp import WorkerProcess, running, wait_until
from tests.test_cli import streamkit

HOST = "127.0.0.1"
USERS = ["ann", "bo", "cy", "dee", "eve", "flo", "gus"]


def listener(security: dict[str, Any], kind: str) -> tuple[str, dict[str, Any]]:
    """The bootstrap address and streamkit settings of one of the secured listeners."""
    ports = security["listeners"]
    sasl = {"sasl_username": security["username"], "sasl_password": security["password"]}
    if kind == "sasl_ssl_scram512":
        options = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", **sasl}
        return f"{HOST}:{ports['SASL_SSL']}", options | {"ssl_cafile": security["cafile"]}
    if kind == "sasl_plaintext_plain":
        options = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", **sasl}
        return f"{HOST}:{ports['SASL_PLAINTEXT']}", options
    assert kind == "ssl_client_certificate"
    return f"{HOST}:{ports['SSL']}", {
        "security_protocol": "SSL",
        "ssl_cafile": security["cafile"],
        "ssl_certfile": security["client_certfile"],
        "ssl_keyfile": security["client_keyfile"],
        "ssl_password": security["client_key_password"],
    }


def as_env(options: dict[str, Any]) -> dict[str, str]:
    return {f"STREAMKIT_{name.upper()}": str(value) for name, value in options.items()}


def totals_app(uid: str, workdir: Path, options: dict[str, Any]) -> sk.App:
    app = sk.App(f"sec-{uid}", workdir=workdir, processing_guarantee="exactly_once", **options)
    orders = app.topic(f"sec-orders-{uid}", partitions=3)
    totals = app.topic(f"sec-totals-{uid}", partitions=2)
    spent = app.table("spent", default=int)

    @app.agent(app.stream(orders).key_by("user", partitions=2), sink=totals, state=[spent])
    async def add_up(stream: sk.Stream[Any]) -> AsyncIterator[dict[str, Any]]:
        async for order in stream:
            spent[order["user"]] += order["amount"]
            yield {"user": order["user"], "total": spent[order["user"]]}

    return app


async def read_committed(settings: Settings, topic: str, expect: int) -> list[Any]:
    """Every committed record of `topic` once `expect` are there (and a second more, to see
    any extra), read with the app's own secured settings."""
    consumer = make_consumer(settings, None, "sec-reader")
    await consumer.start()
    records: list[Any] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(2)])
        await consumer.seek_to_beginning()

        async def enough() -> bool:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            return len(records) >= expect

        await wait_until(enough, within=60, what=f"{expect} records on {topic}")
        for batch in (await consumer.getmany(timeout_ms=1000)).values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


@pytest.mark.parametrize(
    "kind", ["sasl_ssl_scram512", "sasl_plaintext_plain", "ssl_client_certificate"]
)
async def test_exactly_once_pipeline_over_a_secured_listener(
    kind: str,
    secure_kafka: dict[str, Any],
    uid: str,
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, options = listener(secure_kafka, kind)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", server)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="aiokafka")
    orders: list[dict[str, Any]] = [
        {"user": USERS[i % len(USERS)], "amount": i % 13 + 1} for i in range(400)
    ]
    # Two runs; the second starts with an empty workdir, so its table state can only come
    # back through the changelog restore (the raw AIOKafkaClient fetcher) over this listener.
    for run, part, folder in ((1, orders[:250], workdir), (2, orders[250:], workdir / "lost")):
        app = totals_app(uid, folder, options)
        async with running(app) as worker:
            async with app.producer() as producer:
                for order in part:
                    topic = app.topics[f"sec-orders-{uid}"]
                    await producer.send(topic, order, key=order["user"])
            expect = 250 if run == 1 else len(orders)
            records = await read_committed(app.settings, f"sec-totals-{uid}", expect)
            assert worker.producers is not None  # exactly-once: transactional producers ran

    # every order counted once, in order per user: the running totals of each user
    expected: dict[str, list[int]] = {}
    for order in orders:
        previous = expected.get(order["user"], [0])[-1]
        expected.setdefault(order["user"], []).append(previous + order["amount"])
    got: dict[str, list[int]] = {}
    for record in records:
        value = orjson.loads(record.value)
        got.setdefault(value["user"], []).append(value["total"])
    assert got == {user: sorted(totals) for user, totals in expected.items()}
    assert got == {user: sorted(totals) for user, totals in got.items()}

    # the secrets never reach a log line (aiokafka's DEBUG ones included)
    secrets = [secure_kafka["password"], secure_kafka["client_key_password"]]
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert "started" in caplog.text and len(caplog.records) > 50
    assert not [s for s in secrets if s in logged]
    for shown in (repr(app.settings), str(app.settings), app.settings.model_dump_json()):
        assert not [s for s in secrets if s in shown]
        if "password" in options or "sasl_password" in options:
            assert "**********" in shown


def test_wrong_password_fails_at_start_naming_the_setting(secure_kafka: dict[str, Any]) -> None:
    server, options = listener(secure_kafka, "sasl_ssl_scram512")
    wrong = "wrong-" + secure_kafka["password"][:6]
    env = as_env(options | {"sasl_password": wrong}) | {"KAFKA_BOOTSTRAP_SERVERS": server}
    code, output = streamkit("worker", "apps.hello:app", "--log-level", "DEBUG", env=env)
    assert code == 3, output
    assert "SASL authentication as 'alice' failed" in output
    assert "STREAMKIT_SASL_PASSWORD" in output
    assert wrong not in output and secure_kafka["password"] not in output
    assert "Traceback" not in output
    assert [line for line in output.splitlines() if "error" in line.lower()] == [
        output.strip().splitlines()[-1]
    ], output  # at DEBUG other lines come first, but one error line says it all


def test_untrusted_broker_certificate_fails_at_start(secure_kafka: dict[str, Any]) -> None:
    server, options = listener(secure_kafka, "sasl_ssl_scram512")
    options.pop("ssl_cafile")  # the system CAs do not know our test CA
    env = as_env(options) | {"KAFKA_BOOTSTRAP_SERVERS": server}
    code, output = streamkit("topics", "apps.hello:app", env=env)
    assert code == 3, output
    assert "certificate was not accepted" in output and "STREAMKIT_SSL_CAFILE" in output
    assert secure_kafka["password"] not in output


def test_worker_process_at_debug_never_logs_the_password(
    secure_kafka: dict[str, Any], tmp_path: Path
) -> None:
    server, options = listener(secure_kafka, "sasl_plaintext_plain")
    env = as_env(options) | {
        "KAFKA_BOOTSTRAP_SERVERS": server,
        "STREAMKIT_LOG_LEVEL": "DEBUG",
        "STREAMKIT_WORKDIR": str(tmp_path / "state"),
    }
    worker = WorkerProcess("apps.hello:app", env, tmp_path / "worker.log").start()
    try:
        deadline = time.monotonic() + 60
        while "started: app hello" not in worker.log():
            assert worker.alive and time.monotonic() < deadline, worker.log()
            time.sleep(0.2)
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.stop()
    log = worker.log()
    assert "(SASL_PLAINTEXT, PLAIN as 'alice')" in log
    assert "DEBUG" in log
    assert secure_kafka["password"] not in log


def test_every_kafka_client_is_built_in_one_place() -> None:
    """The security options reach every client only if no module builds one by itself."""
    constructors = ("AIOKafkaConsumer(", "AIOKafkaProducer(", "AIOKafkaAdminClient(",
                    "AIOKafkaClient(", "create_conn(")  # fmt: skip
    allowed = {
        "clients.py",
        "aiokafka_internals/fetch.py",
        "aiokafka_internals/groups.py",
        "aiokafka_internals/txn_producer.py",
    }
    package = Path(sk.__file__).parent
    offenders = [
        f"{path.relative_to(package)}: {name}"
        for path in package.rglob("*.py")
        if str(path.relative_to(package)) not in allowed
        for name in constructors
        if name in path.read_text()
    ]
    assert not offenders
