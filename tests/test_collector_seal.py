"""The exactly-once collector when a checkpoint seals it while a batch is being handed to the
producer (a revoked task's last submit, in the instant the worker's shared collector is sealed):
each batch goes to the producer once, the one in hand joins the sealed transaction, and what
fills up after the seal waits for the release."""

from __future__ import annotations

import asyncio
from typing import Any

from streamkit.runtime.collector import RecordCollector

PER_BATCH = 2  # records a fake batch holds


class FakeBuilder:
    def __init__(self) -> None:
        self.values: list[bytes | None] = []

    def append(self, *, timestamp: Any, key: Any, value: bytes | None, headers: Any) -> Any:
        if len(self.values) >= PER_BATCH:
            return None
        self.values.append(value)
        return object()

    def record_count(self) -> int:
        return len(self.values)


class Meta:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset


class SlowProducer:
    """Hands over batches; the first `send_batch` waits until `go` is set."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.sent: list[list[bytes | None]] = []
        self.entered = asyncio.Event()

    def create_batch(self) -> FakeBuilder:
        return FakeBuilder()

    async def send_batch(self, builder: FakeBuilder, topic: str, *, partition: int) -> Any:
        self.entered.set()
        await self.go.wait()
        offset = sum(len(b) for b in self.sent)
        self.sent.append(builder.values)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(Meta(topic, partition, offset))
        return fut


async def test_a_seal_during_a_hand_over_loses_and_repeats_no_batch() -> None:
    producer = SlowProducer()
    collector = RecordCollector(producer, {"out": 1}, transactional=True)
    for v in (b"a1", b"a2", b"b1"):  # batch a full, b open
        collector.append("out", None, v, partition=0)
    handing = asyncio.create_task(collector.submit_full())  # batch a, stuck in send_batch
    await producer.entered.wait()
    sealed = collector.seal()  # the checkpoint: everything so far is this transaction's
    for v in (b"b2", b"c1", b"c2", b"d1"):  # after the seal: held for the next one
        collector.append("out", None, v, partition=0)
    producer.go.set()
    await handing
    await collector.flush_sealed(sealed)
    assert producer.sent == [[b"a1", b"a2"], [b"b1"]]  # a once, then b; nothing after the seal
    collector.release()
    await collector.submit_full()
    await collector.flush()
    sent = [v for batch in producer.sent for v in batch]
    assert sent == [b"a1", b"a2", b"b1", b"b2", b"c1", b"c2", b"d1"]


async def test_a_flush_during_a_hand_over_waits_for_the_batch_in_hand() -> None:
    """At least once the checkpoint flushes while the task runs: a batch another coroutine is
    handing to the producer is delivered before the flush returns, and counted once."""
    producer = SlowProducer()
    collector = RecordCollector(producer, {"out": 1})
    for v in (b"a1", b"a2"):  # batch a, open
        collector.append("out", None, v, partition=0)
    handing = asyncio.create_task(collector.submit())  # the task's buffer ran dry: a goes
    await producer.entered.wait()  # ... and is stuck in send_batch; nothing else is left
    flushing = asyncio.create_task(collector.flush())
    await asyncio.sleep(0.05)
    assert not flushing.done()
    producer.go.set()
    await handing
    assert await asyncio.wait_for(flushing, 5) == {("out", 0): 1}  # a's last offset
    assert collector.delivered == {("out", 0): 2}
    assert producer.sent == [[b"a1", b"a2"]]
