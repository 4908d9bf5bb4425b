"""Sinks beyond Kafka: PostgreSQL, SQLite and JSON lines (docs/sinks.md)."""

from streamkit.sinks.base import Sink, SinkUnavailable, Writer, is_sink
from streamkit.sinks.jsonlines import JsonLinesSink
from streamkit.sinks.postgres import PostgresSink
from streamkit.sinks.sqlite import SqliteSink

__all__ = [
    "JsonLinesSink",
    "PostgresSink",
    "Sink",
    "SinkUnavailable",
    "SqliteSink",
    "Writer",
    "is_sink",
]
