"""Routing at a stage's exit: where key_by, shuffle and rebalance send each value.

A router is per task (per producing partition), so rebalance's round-robin counter and
shuffle's random generator are the task's own: rebalance counts differ by at most one per task.
A key_by's per-value call runs in C when built (`_keyby.c`, `KeyBy`; its Python closure in
`Router.bind` is the reference, and what runs with STREAMKIT_PURE_PYTHON=1).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from streamkit.aiokafka_internals import NATIVE_BATCHES
from streamkit.keys import partition_for_key, partition_of
from streamkit.runtime.collector import RecordCollector
from streamkit.serde import StrCodec, dumps
from streamkit.streams import ExchangeNode
from streamkit.topics import Topic

try:
    from streamkit.runtime._keyby import KeyBy

    NATIVE_KEY_BY = NATIVE_BATCHES  # built, and not turned off (STREAMKIT_PURE_PYTHON=1)
except ImportError:  # pragma: no cover (no C compiler where it was installed)
    NATIVE_KEY_BY = False


class Router:
    def __init__(
        self, exchange: ExchangeNode, output: Topic, producer_partition: int, raw: bool = False
    ) -> None:
        self.exchange = exchange
        self.output = output
        # the values routed are their input records' values, unchanged and in the output's
        # encoding: the record's bytes are forwarded, not the value encoded again
        self.raw = raw
        self.topic = output.name
        self._count = output.partitions or 1
        self._next = producer_partition % self._count  # tasks start at different partitions
        seed = exchange.seed
        self._random = random.Random(
            None if seed is None else seed * 1_000_003 + producer_partition
        )
        self._key = exchange.key
        self._kind = exchange.kind

    def route(
        self, value: Any, rec: Any, collector: RecordCollector, event_ts: int | None = None
    ) -> bool:
        """Append `value` (from the consumed record `rec`) for its next partition, stamped
        with the event time if known (else `rec`'s timestamp); True when a batch filled up."""
        output = self.output
        key: bytes | None
        if self._kind == "key_by":
            assert self._key is not None
            key = output.key_codec.encode(self._key(value))
            partition = partition_for_key(key, self._count)
        elif self._kind == "rebalance":
            key = rec.key
            partition = self._next
            self._next = (partition + 1) % self._count
        else:  # shuffle
            key = rec.key
            partition = self._random.randrange(self._count)
        return collector.append(
            self.topic,
            key,
            rec.value if self.raw else output.encode_value(value),
            headers=rec.headers,
            timestamp_ms=rec.timestamp if event_ts is None else event_ts,
            partition=partition,
        )

    def bind(self, host: RouteHost) -> Callable[[Any], None]:
        """`route` as one function per task, for the task's hot path: it reads the record
        being processed and its event time from `host` and sets `host.full` when a batch
        filled up."""
        output = self.output
        if self._kind != "key_by":
            route = self.route

            def spread(value: Any) -> None:
                if route(value, host.record, host.collector, host.event_ts):
                    host.full = True

            return spread
        key_of = self._key
        assert key_of is not None
        encode_value = dumps(output.value_codec)
        raw = self.raw
        route, encode_key, utf8_keys = self.keyed(host.collector)
        if NATIVE_KEY_BY:  # what `key_by` below does, in C (`_keyby.c`)
            native: Callable[[Any], None] = KeyBy(
                host, route, self.exchange.key_field, key_of, encode_key, utf8_keys, raw,
                encode_value,
            )  # fmt: skip
            return native

        def key_by(value: Any) -> None:
            rec = host.record
            ts = host.event_ts
            if route(
                encode_key(key_of(value)),
                rec.value if raw else None if value is None else encode_value(value),
                rec.timestamp if ts is None else ts,
                rec.headers,
            ):
                host.full = True

        return key_by

    def keyed(
        self, collector: RecordCollector
    ) -> tuple[Callable[..., bool], Callable[[Any], bytes], bool]:
        """A key_by's route (key bytes, value bytes, timestamp, headers) → True when a batch
        filled up, to the key's partition, in C when built; the key's encoder; and whether
        a str key's bytes are its UTF-8 (what the encoder does with one)."""
        topic, count = self.topic, self._count
        tps = [(topic, p) for p in range(count)]  # the tuples the collector's batches key on
        known: dict[bytes, int] = {}  # the keys' partitions (`partition_of`)

        def place(key: bytes) -> int:
            return partition_of(known, key, count)

        def keyless(value: bytes | None, timestamp_ms: int | None, headers: Any) -> bool:
            raise ValueError(f"key_by to {topic!r}: the key encodes to None")

        route = collector.keyed_router(tps, known, place, keyless)
        codec = self.output.key_codec
        return route, dumps(codec), type(codec) is StrCodec


class RouteHost(Protocol):
    """What a bound router reads of its task."""

    record: Any
    event_ts: int | None
    full: bool
    collector: RecordCollector
