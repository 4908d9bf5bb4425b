"""Topic: a declared Kafka topic with its codecs, partition count and topic configs.

Keys are `str` unless declared (as after `key_by` and in tables): UTF-8 text, and a key that
is not UTF-8 goes to the dead-letter topic with a reason that says so; `key_type=bytes` takes
keys as they are. Values are plain JSON unless declared (`serde.codec_for`)."""

from __future__ import annotations

import re
from typing import Any

from streamkit.context import CURRENT_COLLECTOR
from streamkit.events import Headers
from streamkit.eventtime import TimestampPolicy
from streamkit.serde import STR, Codec, DeclaredCodec, codec_for
from streamkit.settings import ConfigError
from streamkit.windows import seconds_ms

_LEGAL = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# Dead-letter and late topics: a record near the broker's 1 MB default plus streamkit's headers
# (reason, coordinates) would not fit a topic with the default limit; its transaction would fail
# again on every retry.
DLQ_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# Dead letters and late events keep their record's original timestamp (also in a header): the
# broker stamps them on arrival instead, so that time retention counts from when they were
# written, not from an event time that may be long past (which would delete them at once).
DEAD_LETTER_CONFIG = {
    "max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES),
    "message.timestamp.type": "LogAppendTime",
}
# Repartition topics carry event time in their record timestamps: no time retention (records
# of old event times would be deleted before the next stage reads them); the worker deletes
# what every reader has committed instead (`DeleteRecords`, like Kafka Streams).
REPARTITION_CONFIG = {"retention.ms": "-1"}


def check_topic_name(name: str) -> str:
    if not isinstance(name, str) or not _LEGAL.match(name) or name in {".", ".."}:
        raise ConfigError(
            f"{name!r} is not a legal Kafka topic name: use letters, digits, '.', '_' or '-'"
            " (at most 249)"
        )
    return name


class Topic:
    """A topic the app reads or writes. `partitions=None` means: whatever the broker has
    (the topic must then exist, or it is created with one partition)."""

    def __init__(
        self,
        name: str,
        *,
        key_type: Any = str,
        value_type: Any = None,
        partitions: int | None = None,
        config: dict[str, str] | None = None,
        internal: bool = False,
        timestamp: Any = None,
        timestamp_unit: str = "s",
        out_of_orderness: float = 0.0,
    ) -> None:
        self.name = check_topic_name(name)
        if partitions is not None and (
            isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1
        ):
            raise ConfigError(
                f"topic {name}: partitions must be a whole number >= 1, got {partitions!r}"
            )
        self.key_type = key_type  # as declared; None (an older spelling) means the default, str
        self.value_type = value_type
        # Keys are str unless declared (bytes: as they are); values are plain JSON unless declared.
        # A type pydantic cannot validate is refused here, at declaration.
        self.key_codec: Codec[Any] = (
            STR if key_type is None else codec_for(key_type, f"topic {name}: key_type")
        )
        self.value_codec: Codec[Any] = codec_for(value_type, f"topic {name}: value_type")
        # a schema-registry codec learns its subject ({topic}-key, {topic}-value)
        if isinstance(self.key_codec, DeclaredCodec):
            self.key_codec = self.key_codec.bind(name, "key")  # type: ignore[assignment]
        if isinstance(self.value_codec, DeclaredCodec):
            self.value_codec = self.value_codec.bind(name, "value")  # type: ignore[assignment]
        self.declared_partitions = partitions
        self.partitions: int | None = partitions  # the broker's count once verified
        self.config = dict(config or {})
        self.internal = internal
        if timestamp_unit not in ("s", "ms"):
            raise ConfigError(
                f"topic {name}: timestamp_unit must be 's' or 'ms', got {timestamp_unit!r}"
            )
        if timestamp is not None and not isinstance(timestamp, str) and not callable(timestamp):
            raise ConfigError(
                f"topic {name}: timestamp must be a field name, a function of the value, or "
                f"None (the record timestamp), got {timestamp!r}"
            )
        lateness = seconds_ms(out_of_orderness, f"topic {name}: out_of_orderness", zero_ok=True)
        self.timestamp_policy = TimestampPolicy(timestamp, timestamp_unit, lateness)

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, partitions={self.partitions})"

    def encode_key(self, key: Any) -> bytes | None:
        return None if key is None else self.key_codec.encode(key)

    def encode_value(self, value: Any) -> bytes | None:
        return None if value is None else self.value_codec.encode(value)

    def produce(
        self,
        value: Any = None,
        *,
        key: Any = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> bool:
        """`send` without awaiting, for plain functions that run inside an agent's task (timer
        callbacks): the record joins the task's outputs and goes out with its next batch.
        True when a batch filled up."""
        appended: bool = self._collector().append(
            self.name,
            self.encode_key(key),
            self.encode_value(value),
            headers=headers,
            timestamp_ms=timestamp_ms,
            partition=partition,
        )
        return appended

    def _collector(self) -> Any:
        collector = CURRENT_COLLECTOR.get(None)
        if collector is None:
            raise RuntimeError(
                f"Topic({self.name!r}).send() was called outside a running agent; "
                "use `async with app.producer() as p: await p.send(topic, ...)`"
            )
        return collector

    async def send(
        self,
        value: Any = None,
        *,
        key: Any = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Send from inside an agent: the record joins that agent's task outputs, so it is
        committed with the event being processed. Outside an agent use `app.producer()`."""
        if self.produce(
            value, key=key, headers=headers, partition=partition, timestamp_ms=timestamp_ms
        ):
            await self._collector().submit_full()
