"""The consumer's rebalance listener: aiokafka's two callbacks handed to the worker's
(`Worker.on_revoked`, `Worker.on_assigned`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

Callback = Callable[[set[TopicPartition]], Awaitable[None]]


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, revoked: Callback, assigned: Callback) -> None:
        self._revoked = revoked
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._assigned(assigned)
