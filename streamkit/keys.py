"""Kafka's default partitioner for keyed records, shared by the runtime's routing and the
state layer's check that a key belongs to the task writing it."""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2


@functools.lru_cache(maxsize=1 << 16)
def partition_for_key(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner: `toPositive(murmur2(key)) % partitions`, as in Java.
    (aiokafka's murmur2 is pure Python: hot keys are remembered.)"""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
