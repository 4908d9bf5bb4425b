"""`OpenBatch` fills a real aiokafka batch through its C record builder: what aiokafka's
reader reads back is what was appended, the count is where aiokafka reads it, and a full batch
refuses the record that does not fit."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from aiokafka.record.memory_records import MemoryRecords

from streamkit.aiokafka_internals import OpenBatch


async def test_what_an_open_batch_holds_reads_back_from_the_built_batch() -> None:
    producer = AIOKafkaProducer(max_batch_size=1024)  # never started: batches only
    batch = OpenBatch(producer.create_batch())
    appended = []
    while True:
        n = batch.count
        record = (1_700_000_000_000 + n, b"k%d" % n, b"v" * 40 + b"%d" % n, [("h", b"%d" % n)])
        if batch.append(n, *record) is None:
            break
        batch.count += 1
        appended.append(record)
    assert 5 < len(appended) < 30  # 1 KiB holds some, not all
    built = batch.closed()
    assert built.record_count() == len(appended)
    assert built.append(timestamp=None, key=b"x", value=b"y", headers=[]) is None  # closed
    records = MemoryRecords(bytes(built._build()))
    read = []
    while records.has_next():
        for rec in records.next_batch():
            read.append((rec.timestamp, rec.key, rec.value, list(rec.headers)))
            assert rec.offset == len(read) - 1
    assert read == appended


async def test_another_producers_batch_is_filled_through_its_own_append() -> None:
    class Batch:
        def __init__(self) -> None:
            self.records: list[tuple[object, ...]] = []

        def append(
            self, *, timestamp: object, key: object, value: object, headers: object
        ) -> object:
            if len(self.records) == 2:
                return None
            self.records.append((timestamp, key, value, headers))
            return True

    batch = OpenBatch(Batch())
    assert batch.append(0, 1, b"a", b"1", []) is not None
    assert batch.append(1, 2, b"b", b"2", []) is not None
    assert batch.append(2, 3, b"c", b"3", []) is None
    assert batch.closed().records == [(1, b"a", b"1", []), (2, b"b", b"2", [])]
