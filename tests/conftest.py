"""Test set-up: a real Kafka broker. `make test` starts one and sets KAFKA_BOOTSTRAP_SERVERS;
a bare `pytest` starts one itself (scripts/localkafka.py) and stops it at the end."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamkit.childproc import exit_on

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="session", autouse=True)
def unwind_on_sigterm() -> Iterator[None]:
    """A SIGTERM (`timeout`, a CI runner) unwinds the run like Ctrl-C: the tests' worker
    processes and the session's broker are stopped, not left running (they were, by default)."""
    previous = signal.signal(signal.SIGTERM, exit_on)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session", autouse=True)
def kafka(unwind_on_sigterm: None) -> Iterator[str]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    import localkafka

    broker = localkafka.start_broker()
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
        os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)


@pytest.fixture
def uid() -> str:
    """A short unique suffix so every test has its own topics and consumer group."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[dict[str, Any]]:
    """A second broker with SASL_PLAINTEXT, SASL_SSL and SSL listeners (localkafka --secure),
    started once for the tests that need it: its `security` description (ports, user,
    passwords, PEM files)."""
    import localkafka

    broker = localkafka.start_broker(secure=True)
    try:
        assert broker.security is not None
        yield broker.security
    finally:
        broker.stop()


REGISTRY_START = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The schema registry's start-up cost, shown after every run that started one."""
    started = config.stash.get(REGISTRY_START, None)
    if started is not None:
        terminalreporter.write_line(
            f"schema registry (started for the tests that need it): {started}"
        )


@pytest.fixture(scope="session")
def schema_registry(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Confluent-compatible schema registry's URL: STREAMKIT_SCHEMA_REGISTRY_URL when set,
    else an Apicurio Registry started here (streamkit/localregistry.py) once, for the tests
    that ask for it, and stopped at the end; its start-up time is reported."""
    given = os.environ.get("STREAMKIT_SCHEMA_REGISTRY_URL")
    if given:
        yield given
        return
    import time

    from streamkit import localregistry

    localregistry.resolve_app()  # a first run's Maven download is not start-up time
    started = time.monotonic()
    registry = localregistry.start_registry()
    took = time.monotonic() - started
    request.config.stash[REGISTRY_START] = f"Apicurio {registry.version} up in {took:.1f} s"
    try:
        yield registry.url
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL DSN: STREAMKIT_POSTGRES_DSN when set (`make test` starts a server and sets
    it), else a server started here (streamkit/localpg.py) for the session and stopped at its
    end."""
    given = os.environ.get("STREAMKIT_POSTGRES_DSN")
    if given:
        yield given
        return
    from streamkit.localpg import start_postgres

    server = start_postgres()
    try:
        yield server.dsn
    finally:
        server.stop()
