"""The hot paths' partition memo (`keys.partition_of`) gives Kafka's partition and stays
bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamkit import keys
from streamkit.keys import partition_for_key, partition_of


@given(st.lists(st.binary(max_size=12), max_size=50), st.integers(1, 64))
def test_a_memo_gives_the_partition_kafka_gives(keys_: list[bytes], partitions: int) -> None:
    known: dict[bytes, int] = {}
    for key in keys_ + keys_:  # a miss, then a hit
        hit = known.get(key)
        assert (hit if hit is not None else partition_of(known, key, partitions)) == (
            partition_for_key(key, partitions)
        )


def test_a_memo_starts_again_once_full() -> None:
    keys.KNOWN_KEYS, saved = 8, keys.KNOWN_KEYS
    try:
        known: dict[bytes, int] = {}
        for i in range(20):
            partition_of(known, b"k%d" % i, 3)
            assert len(known) <= 8
        assert b"k19" in known
    finally:
        keys.KNOWN_KEYS = saved
