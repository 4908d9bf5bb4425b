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


KNOWN_KEYS = 1 << 16  # keys a hot path's partition memo holds before it starts again


def partition_of(known: dict[bytes, int], key: bytes, partitions: int) -> int:
    """`partition_for_key` for a hot path that looks in its own memo first (`known.get(key)`,
    inline: a dict lookup is a third of the cached call's cost); call this when that misses.
    One memo per destination partition count."""
    if len(known) >= KNOWN_KEYS:
        known.clear()
    partition = known[key] = partition_for_key(key, partitions)
    return partition
