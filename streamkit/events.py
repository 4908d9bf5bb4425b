"""Event: one decoded record with its coordinates; Record: an output with an explicit key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Headers = list[tuple[str, bytes]]


@dataclass(slots=True)
class Event:
    """A record as an agent sees it: decoded key and value plus where it came from."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    timestamp_ms: int
    headers: Headers
    raw_key: bytes | None
    raw_value: bytes | None

    @property
    def timestamp(self) -> float:
        """Record timestamp in epoch seconds."""
        return self.timestamp_ms / 1000.0

    def header(self, name: str) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Record:
    """What an agent yields (or sends) when it wants to choose the key, headers or time.

    A plain yielded value keeps the key of the event being processed, as Kafka Streams'
    `mapValues` does; yield `Record(key=..., value=...)` to set another."""

    value: Any
    key: Any = None
    headers: Headers = field(default_factory=list)
    timestamp_ms: int | None = None
