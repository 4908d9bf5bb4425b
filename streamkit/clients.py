"""Builds the Kafka clients from settings: the one place connection options live.

Every client streamkit makes (consumers, producers incl. transactional ones, the admin client,
the compacted-topic reader's `RawClient`, the CLI's) takes `connection_options`: the bootstrap
servers plus the TLS/SASL options of `streamkit.security`. Below `state/` and `runtime/`: both
build their clients here."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streamkit.aiokafka_internals import RawClient, TransactionalProducer
from streamkit.security import kafka_security_options
from streamkit.settings import Settings


def connection_options(settings: Settings) -> dict[str, Any]:
    return {"bootstrap_servers": settings.bootstrap_servers, **kafka_security_options(settings)}


def make_producer(settings: Settings, client_id: str, **extra: Any) -> Any:
    return AIOKafkaProducer(
        **connection_options(settings),
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=settings.linger_ms,
        max_batch_size=settings.max_batch_size,
        **extra,
    )


def make_transactional_producer(
    settings: Settings, client_id: str, **extra: Any
) -> TransactionalProducer:
    """streamkit's own transactional producer (`transactional_client="streamkit"`)."""
    return TransactionalProducer(
        connection_options(settings),
        client_id=client_id,
        max_batch_size=settings.max_batch_size,
        **extra,
    )


def make_consumer(settings: Settings, group_id: str | None, client_id: str, **extra: Any) -> Any:
    return AIOKafkaConsumer(
        **connection_options(settings),
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        isolation_level="read_committed",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        **extra,
    )


def make_admin(settings: Settings, client_id: str) -> Any:
    return AIOKafkaAdminClient(**connection_options(settings), client_id=client_id)


def make_raw_client(settings: Settings, client_id: str) -> RawClient:
    """The compacted-topic reader's client (raw Fetch, ListOffsets and Metadata requests)."""
    return RawClient(connection_options(settings), client_id)
