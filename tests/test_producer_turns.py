"""The per-worker exactly-once producers take turns (`runtime/txn_producers.WorkerProducer`)
against the real broker: one commits while the other's transaction takes the next records.
Committed offsets never move back (the group coordinator keeps the later-appended of two
committed transactions' offsets, whichever commit marker lands first), every record shows
exactly once to a read_committed reader, and a worker restarted under the same id aborts
what either producer left open."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from streamkit import aiokafka_internals as internals
from streamkit.aiokafka_internals import TransactionalProducer
from streamkit.runtime.txn_producers import Gate, WorkerProducer
from streamkit.settings import load_settings
from tests.kafkahelp import bootstrap, create_topic, read_all
from tests.test_aiokafka_internals import joined, member

PARTITIONS = 48  # each transaction touches them all: many commit markers to write
ROUNDS = 24


async def _round(gate: Gate, sink: str, i: int) -> None:
    """One record to each partition, in a batch of its own (as the collector hands them)."""
    sent = []
    for p in range(PARTITIONS):
        batch = gate.create_batch()
        batch.append(timestamp=None, key=None, value=f"{i}:{p}".encode())
        sent.append(await gate.send_batch(batch, sink, partition=p))
    await asyncio.gather(*sent)


def _identity(producer: Any) -> int:
    if isinstance(producer, TransactionalProducer):
        return producer.identity[0]
    return internals.producer_identity(producer)[0]


@pytest.mark.parametrize("client", ["streamkit", "aiokafka"])
async def test_turns_keep_offsets_moving_forward_and_records_exactly_once(
    uid: str, tmp_path: Path, client: str
) -> None:
    source, sink, group = f"turn-in-{uid}", f"turn-out-{uid}", f"turn-{uid}"
    await create_topic(source, 1)
    await create_topic(sink, PARTITIONS)
    tp0 = TopicPartition(source, 0)
    settings = load_settings(
        broker=bootstrap(),
        workdir=tmp_path,
        instance_id=f"w-{uid}",
        transactional_client=client,
    )
    async with member(source, group) as consumer:
        await joined(consumer, 1)
        worker = WorkerProducer(settings, group, f"turn-{uid}", consumer)
        try:
            gate = (await worker.acquire([tp0]))[tp0]
            identities = []
            for i in range(1, ROUNDS + 1):
                producer = gate.producer
                identities.append(_identity(producer))
                await _round(gate, sink, i)
                await producer.send_offsets_to_transaction({tp0: i}, group)
                await producer.commit_transaction()
                await worker.take_turns()
            # a transaction left open at the end: records and an offset that never commit
            await _round(gate, sink, ROUNDS + 1)
            await gate.producer.send_offsets_to_transaction({tp0: ROUNDS + 1}, group)
        except BaseException:
            await worker.close()
            raise
        # two producers, strictly alternating
        assert len(set(identities)) == 2
        assert all(a != b for a, b in itertools.pairwise(identities))
        # a worker restarted under this instance id gets the same ids: it aborts what is open
        again = WorkerProducer(settings, group, f"turn2-{uid}", consumer)
        assert again.transactional_id == worker.transactional_id
        try:
            await again.acquire([tp0])
            stable = await internals.fetch_stable_offsets(consumer, [tp0], within=30.0)
        finally:
            await again.close()
            await worker.close()
    assert stable == {tp0: ROUNDS}
    records = await read_all(sink)
    values = sorted(r.value for r in records)
    expected = sorted(f"{i}:{p}".encode() for i in range(1, ROUNDS + 1) for p in range(PARTITIONS))
    assert values == expected


class _Made(Exception):
    """The producer's options, caught where it would be made."""


async def test_transactional_producers_retry_a_concurrent_transaction_after_20_ms(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A transaction's produce request refused because the last transaction's markers are
    still being written (KIP-890; NOT_ENOUGH_REPLICAS for aiokafka) is sent again after the
    producer's backoff: 20 ms, not aiokafka's 100 ms default, for both kinds of
    transactional producer and both clients of the per-worker one."""
    from streamkit.runtime import txn_producers

    made: list[dict[str, Any]] = []

    def capture(settings: Any, client_id: str, **extra: Any) -> Any:
        made.append(extra)
        raise _Made

    monkeypatch.setattr(txn_producers, "make_producer", capture)
    monkeypatch.setattr(txn_producers, "make_transactional_producer", capture)
    settings = load_settings(broker="127.0.0.1:9", workdir=tmp_path, instance_id="w")
    per_partition = txn_producers.TransactionalProducers(settings, "app", "c")
    with pytest.raises(_Made):
        await per_partition._start(TopicPartition("t", 0))
    for client in ("streamkit", "aiokafka"):
        settings = load_settings(
            broker="127.0.0.1:9", workdir=tmp_path, instance_id="w", transactional_client=client
        )
        with pytest.raises(_Made):
            await WorkerProducer(settings, "app", "c", consumer=None)._start("txn", 0)
    assert [m["retry_backoff_ms"] for m in made] == [20, 20, 20]
    assert all("transactional_id" in m for m in made)
