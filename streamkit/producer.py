"""Producer: sending with a topic's codecs from outside agents (scripts, tests, the CLI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from streamkit.clients import make_producer
from streamkit.events import Headers
from streamkit.settings import Settings
from streamkit.topics import Topic


@asynccontextmanager
async def open_producer(settings: Settings, client_id: str) -> AsyncIterator[Producer]:
    """A started producer, flushed and stopped on the way out (`App.producer`)."""
    producer = make_producer(settings, client_id=client_id)
    await producer.start()
    try:
        yield Producer(producer)
        await producer.flush()
    finally:
        await producer.stop()


class Producer:
    """Sends with a topic's codecs; `send` waits only for the local buffer, `flush` for acks."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer

    async def send(
        self,
        topic: Topic,
        value: Any = None,
        *,
        key: Any = None,
        headers: Headers | None = None,
        partition: int | None = None,
    ) -> None:
        await self._producer.send(
            topic.name,
            topic.encode_value(value),
            key=topic.encode_key(key),
            headers=headers,
            partition=partition,
        )

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> None:
        """Send bytes as they are (no codec): for replaying or forging records."""
        await self._producer.send(topic, value, key=key, partition=partition)

    async def flush(self) -> None:
        await self._producer.flush()
