"""The native reader of record batches (`aiokafka_internals/_records.c`) against the reference,
aiokafka's reader (`records.py`, STREAMKIT_PURE_PYTHON=1): the same records, field for field,
for any batches (keys, values and header values null or not, headers, timestamps, log append
time, compressed batches beside plain ones, a partial batch at the end), from any position,
a few at a time; and a damaged batch is a ValueError, never a crash."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.aiokafka_internals import records
from streamkit.aiokafka_internals.records import batch_rows, committed_batches, input_records

pytestmark = pytest.mark.skipif(not records.BUILT, reason="the extension was not built")

FIELDS = records._FIELDS
BASE_TS = 1_700_000_000_000

maybe_bytes = st.none() | st.binary(max_size=40)
header = st.tuples(st.text(max_size=8), maybe_bytes)
record = st.tuples(
    maybe_bytes,  # key
    maybe_bytes,  # value
    st.lists(header, max_size=3),
    st.integers(-5_000, 5_000),  # timestamp, from the base
    st.integers(1, 3),  # offset step (compaction leaves gaps)
)
batch = st.tuples(
    st.lists(record, min_size=1, max_size=12),
    st.sampled_from([0, 0, 1]),  # compression: none, or gzip (the reference reads those)
    st.booleans(),  # log append time
)


def build(batches: list[Any]) -> tuple[bytes, int]:
    """The batches as a fetch response's record set; the offset after the last record."""
    data, offset = bytearray(), 0
    for recs, compression, log_append in batches:
        builder = DefaultRecordBatchBuilder(
            magic=2,
            compression_type=compression,
            is_transactional=0,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=-1,
            batch_size=1 << 20,
        )
        delta = last = 0
        for key, value, headers, ts, step in recs:
            builder.append(delta, timestamp=BASE_TS + ts, key=key, value=value, headers=headers)
            delta, last = delta + step, delta
        buf = builder.build()
        buf[0:8] = struct.pack(">q", offset)
        if log_append:  # as a broker with LogAppendTime writes it: the max timestamp for all
            attributes = struct.unpack_from(">h", buf, 21)[0] | 0x08
            struct.pack_into(">h", buf, 21, attributes)
            struct.pack_into(">q", buf, 35, BASE_TS + 99_999)
            struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))
        data += buf
        offset += last + 1 + 2  # (and a gap: compaction)
    return bytes(data), offset - 2


def read(data: bytes, start: int, want: int, native: bool) -> list[tuple[Any, ...]]:
    saved, records.NATIVE = records.NATIVE, native
    try:
        batches, _ = committed_batches(data, None, start)
        got = []
        while batches:
            got += input_records("t", 3, batches, start, want)
        return [tuple(getattr(r, f) for f in FIELDS) for r in got]
    finally:
        records.NATIVE = saved


def rows(data: bytes, start: int, native: bool, timed: bool) -> tuple[list[Any], list[int]]:
    saved, records.NATIVE = records.NATIVE, native
    try:
        batches, _ = committed_batches(data, None, start)
        out: list[Any] = []
        times: list[int] = []
        for b in batches:
            batch_rows(b, start, out, times if timed else None)
        return out, times
    finally:
        records.NATIVE = saved


@settings(max_examples=150, deadline=None)
@given(
    st.lists(batch, min_size=1, max_size=5),
    st.integers(0, 80),
    st.integers(1, 20),
    st.integers(0, 30),
    st.booleans(),
)
def test_the_native_reader_reads_what_aiokafkas_reads(
    batches: list[Any], start: int, want: int, cut: int, timed: bool
) -> None:
    data, end = build(batches)
    data = data[: len(data) - cut]  # a partial batch at the end is left for the next fetch
    native = read(data, start, want, native=True)
    assert native == read(data, start, want, native=False)
    assert all(r[2] >= start for r in native)
    assert rows(data, start, True, timed) == rows(data, start, False, timed)
    if not cut:
        assert committed_batches(data, None, start)[1] == max(start, end)


def test_the_plain_batches_are_read_natively_the_compressed_by_the_reference() -> None:
    data, _ = build([([(b"k", b"v", [], 0, 1)], 0, False), ([(b"k", b"v", [], 0, 1)], 1, False)])
    plain, gzip = committed_batches(data, None, 0)[0]
    assert plain.native and not gzip.native
    saved, records.NATIVE = records.NATIVE, False
    try:
        assert not any(b.native for b in committed_batches(data, None, 0)[0])
    finally:
        records.NATIVE = saved


@settings(max_examples=300, deadline=None)
@given(st.lists(batch, min_size=1, max_size=2), st.data())
def test_a_damaged_batch_is_an_error_never_a_crash(batches: list[Any], data: Any) -> None:
    raw = bytearray(build([(recs, 0, ts) for recs, _, ts in batches])[0])
    first_end = 12 + struct.unpack_from(">i", raw, 8)[0]
    for _ in range(data.draw(st.integers(1, 4))):  # bytes of the first batch's records
        at = data.draw(st.integers(61, first_end - 1))
        raw[at] = data.draw(st.integers(0, 255))
    for reading in (
        lambda: read(bytes(raw), 0, 5, native=True),
        lambda: rows(bytes(raw), 0, True, True),
    ):
        with contextlib.suppress(ValueError):  # (a header key not UTF-8 is one too)
            reading()


def test_a_batch_shorter_than_its_header_is_an_error() -> None:
    data = bytearray(build([([(b"k", b"v", [], 0, 1)], 0, False)])[0])
    struct.pack_into(">i", data, 8, 20)  # 20 bytes after the length: no room for a v2 header
    with pytest.raises(ValueError, match="malformed record batch"):
        committed_batches(bytes(data[:32]), None, 0)
