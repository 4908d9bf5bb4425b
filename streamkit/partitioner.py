"""Kafka's default partitioner for keyed records, as the Java producer computes it.

Below `state/` (interactive queries find a key's partition) and `runtime/` (the collector and
the exchanges route records): both import it from here."""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2


@functools.lru_cache(maxsize=1 << 16)
def partition_for_key(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner: `toPositive(murmur2(key)) % partitions`, as in Java.
    (aiokafka's murmur2 is pure Python: hot keys are remembered.)"""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
