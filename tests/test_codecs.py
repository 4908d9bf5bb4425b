"""The requests streamkit encodes and decodes by hand (`aiokafka_internals/`), without a
broker: Produce v7 byte for byte what aiokafka's generic encoder writes, and its response read
as aiokafka's decoder reads it; Produce v12 and ApiVersions v3 against Kafka's schemas written
in aiokafka's flexible types (with tagged fields, which aiokafka's own encoder cannot write);
the fetch session's Fetch v11 request and response (`sessions.py`) against aiokafka's;
TxnOffsetCommit v3/v5 against aiokafka's schema (`groups.py`)."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from aiokafka.protocol.fetch import FetchRequest_v11, FetchResponse_v11
from aiokafka.protocol.produce import ProduceRequest_v7, ProduceResponse_v7
from aiokafka.protocol.types import (
    CompactArray,
    CompactBytes,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from streamkit.aiokafka_internals import sessions
from streamkit.aiokafka_internals.api_versions import ApiVersionsV3
from streamkit.aiokafka_internals.groups import (
    TxnOffsetCommitRequest_v3,
    TxnOffsetCommitResponse_v3,
)
from streamkit.aiokafka_internals.produce import (
    FlexibleProduceResult,
    ProduceBatches,
    ProduceResult,
    uvarint,
)

# -- the Produce request and response, without a broker -----------------------------------------

_topics = st.dictionaries(
    st.text(min_size=1, max_size=20),
    st.lists(st.tuples(st.integers(0, 2**31 - 1), st.binary(max_size=64)), max_size=5),
    max_size=5,
)


@settings(max_examples=200, deadline=None)
@given(
    txn_id=st.one_of(st.none(), st.text(max_size=30)),
    timeout=st.integers(0, 2**31 - 1),
    topics=_topics,
)
def test_the_produce_request_is_what_aiokafkas_encoder_writes(
    txn_id: str | None, timeout: int, topics: dict[str, list[tuple[int, bytes]]]
) -> None:
    ours = ProduceBatches(txn_id, timeout, topics).build(None).encode()  # type: ignore[arg-type]
    theirs = ProduceRequest_v7(txn_id, -1, timeout, list(topics.items())).encode()
    assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(
    answers=st.dictionaries(
        st.text(min_size=1, max_size=20),
        st.lists(
            st.tuples(
                st.integers(0, 2**31 - 1),
                st.integers(-(2**15), 2**15 - 1),
                st.integers(-1, 2**63 - 1),
                st.integers(-1, 2**40),
                st.integers(-1, 2**40),
            ),
            max_size=5,
        ),
        max_size=5,
    ),
    throttle=st.integers(0, 10_000),
)
def test_the_produce_response_is_read_as_aiokafka_reads_it(
    answers: dict[str, list[tuple[int, int, int, int, int]]], throttle: int
) -> None:
    body = ProduceResponse_v7(list(answers.items()), throttle).encode()
    frame = BytesIO(b"\x00\x00\x00\x07" + body)  # as the connection hands it over:
    frame.read(4)  # the response header (correlation id) already read
    read = ProduceResult.decode(frame)
    expected = [
        (t, p, code, offset) for t, parts in answers.items() for p, code, offset, _, _ in parts
    ]
    assert read.partitions == expected


class _Tags:
    """Tagged fields as Kafka writes them: count, then each tag, size and bytes (aiokafka's
    `TaggedFields.encode` leaves the sizes out, so it cannot make them)."""

    @classmethod
    def encode(cls, value: dict[int, bytes]) -> bytes:
        out = uvarint(len(value))
        for tag, data in sorted(value.items()):
            out += uvarint(tag) + uvarint(len(data)) + data
        return out


_TAGS = ("tags", _Tags)
# Produce v12 as Kafka's message spec has it, in aiokafka's generic flexible types
_PRODUCE_V12 = Schema(
    ("transactional_id", CompactString("utf-8")),
    ("acks", Int16),
    ("timeout", Int32),
    (
        "topics",
        CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(("index", Int32), ("records", CompactBytes), _TAGS)),
            _TAGS,
        ),
    ),
    _TAGS,
)
_PRODUCE_RESPONSE_V12 = Schema(
    (
        "responses",
        CompactArray(
            ("name", CompactString("utf-8")),
            (
                "partitions",
                CompactArray(
                    ("index", Int32),
                    ("error_code", Int16),
                    ("base_offset", Int64),
                    ("log_append_time_ms", Int64),
                    ("log_start_offset", Int64),
                    (
                        "record_errors",
                        CompactArray(
                            ("batch_index", Int32), ("message", CompactString("utf-8")), _TAGS
                        ),
                    ),
                    ("error_message", CompactString("utf-8")),
                    _TAGS,
                ),
            ),
            _TAGS,
        ),
    ),
    ("throttle_time_ms", Int32),
    _TAGS,
)


@settings(max_examples=200, deadline=None)
@given(
    txn_id=st.one_of(st.none(), st.text(max_size=200)),
    timeout=st.integers(0, 2**31 - 1),
    topics=st.dictionaries(
        st.text(min_size=1, max_size=200),
        st.lists(st.tuples(st.integers(0, 2**31 - 1), st.binary(max_size=300)), max_size=5),
        max_size=5,
    ),
)
def test_the_flexible_produce_request_is_kafkas_v12(
    txn_id: str | None, timeout: int, topics: dict[str, list[tuple[int, bytes]]]
) -> None:
    ours = ProduceBatches(txn_id, timeout, topics, flexible=True).build(None).encode()  # type: ignore[arg-type]
    theirs = _PRODUCE_V12.encode(
        [
            txn_id,
            -1,
            timeout,
            [(t, [(p, r, {}) for p, r in parts], {}) for t, parts in topics.items()],
            {},
        ]
    )
    assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(
    answers=st.dictionaries(
        st.text(min_size=1, max_size=200),
        st.lists(
            st.tuples(
                st.integers(0, 2**31 - 1),
                st.integers(-(2**15), 2**15 - 1),
                st.integers(-1, 2**63 - 1),
                st.lists(
                    st.tuples(st.integers(0, 100), st.one_of(st.none(), st.text(max_size=200))),
                    max_size=3,
                ),
                st.one_of(st.none(), st.text(max_size=200)),
                st.dictionaries(st.integers(0, 300), st.binary(max_size=200), max_size=2),
            ),
            max_size=5,
        ),
        max_size=5,
    ),
    tags=st.dictionaries(st.integers(0, 300), st.binary(max_size=200), max_size=2),
)
def test_the_flexible_produce_response_is_read_past_what_it_does_not_need(
    answers: dict[str, list[tuple[int, int, int, list[tuple[int, str | None]], str | None, Any]]],
    tags: dict[int, bytes],
) -> None:
    body = _PRODUCE_RESPONSE_V12.encode(
        [
            [
                (
                    t,
                    [
                        (p, code, off, 0, 0, [(i, m, {}) for i, m in errs], msg, ptags)
                        for p, code, off, errs, msg, ptags in parts
                    ],
                    tags,
                )
                for t, parts in answers.items()
            ],
            7,
            tags,
        ]
    )
    read = FlexibleProduceResult.decode(body)
    expected = [(t, p, code, off) for t, parts in answers.items() for p, code, off, *_ in parts]
    assert read.partitions == expected


_API_VERSIONS_V3 = Schema(
    ("error_code", Int16),
    ("api_keys", CompactArray(("key", Int16), ("min", Int16), ("max", Int16), _TAGS)),
    ("throttle_time_ms", Int32),
    _TAGS,
)
_FEATURES = CompactArray(("name", CompactString("utf-8")), ("max", Int16), ("min", Int16), _TAGS)


@settings(max_examples=100, deadline=None)
@given(
    apis=st.dictionaries(st.integers(0, 80), st.tuples(st.integers(0, 5), st.integers(0, 20))),
    features=st.dictionaries(st.text(min_size=1, max_size=30), st.integers(0, 30), max_size=5),
    other=st.dictionaries(st.sampled_from([0, 1, 3, 200]), st.binary(max_size=50), max_size=3),
)
def test_api_versions_v3_yields_the_ranges_and_the_finalized_features(
    apis: dict[int, tuple[int, int]], features: dict[str, int], other: dict[int, bytes]
) -> None:
    tags = dict(other)
    if features:
        tags[2] = _FEATURES.encode([(name, level, 1, {}) for name, level in features.items()])
    body = _API_VERSIONS_V3.encode([0, [(k, a, b, {}) for k, (a, b) in apis.items()], 0, tags])
    struct = ApiVersionsV3().build(None)  # type: ignore[arg-type]
    read = struct.RESPONSE_TYPE.decode(body).versions
    assert read.apis == apis and read.features == features and read.error_code == 0


# -- the fetch session's Fetch v11, encoded and decoded by hand (`sessions.py`) -------------------

_names = st.text(min_size=1, max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    head=st.tuples(
        st.integers(-1, 2**31 - 1),
        st.integers(0, 2**31 - 1),
        st.integers(0, 2**31 - 1),
        st.integers(0, 2**31 - 1),
        st.integers(0, 1),
        st.integers(0, 2**31 - 1),
        st.integers(-1, 2**31 - 1),
    ),
    topics=st.lists(
        st.tuples(
            _names,
            st.lists(
                st.tuples(
                    st.integers(0, 2**31 - 1),
                    st.integers(-1, 100),
                    st.integers(0, 2**63 - 1),
                    st.integers(-1, 2**63 - 1),
                    st.integers(0, 2**31 - 1),
                ),
                max_size=4,
            ),
        ),
        max_size=4,
    ),
    forgotten=st.lists(st.tuples(_names, st.lists(st.integers(0, 2**31 - 1), max_size=4))),
    rack=st.text(max_size=10),
)
def test_the_session_fetch_request_is_what_aiokafkas_encoder_writes(
    head: tuple[int, ...], topics: list[Any], forgotten: list[Any], rack: str
) -> None:
    fields = [*head, topics, forgotten, rack]
    ours = sessions._SessionFetchRequest(fields).build(FetchRequest_v11).encode()
    assert ours == FetchRequest_v11(*fields).encode()


@settings(max_examples=200, deadline=None)
@given(
    top=st.tuples(st.integers(0, 10_000), st.integers(-1, 100), st.integers(0, 2**31 - 1)),
    topics=st.lists(
        st.tuples(
            _names,
            st.lists(
                st.tuples(
                    st.integers(0, 2**31 - 1),
                    st.integers(-1, 100),
                    st.integers(-1, 2**63 - 1),
                    st.integers(-1, 2**63 - 1),
                    st.integers(-1, 2**63 - 1),
                    st.one_of(
                        st.none(),
                        st.lists(st.tuples(st.integers(0, 2**62), st.integers(0, 2**62))),
                    ),
                    st.integers(-1, 5),
                    st.one_of(st.none(), st.binary(max_size=100)),
                ),
                max_size=4,
            ),
        ),
        max_size=4,
    ),
)
def test_the_session_fetch_response_is_read_as_aiokafka_reads_it(
    top: tuple[int, int, int], topics: list[Any]
) -> None:
    body = FetchResponse_v11(*top, topics).encode()
    ours = sessions.SessionFetchResponse.decode(BytesIO(body))
    theirs = FetchResponse_v11.decode(BytesIO(body))
    assert (ours.throttle_time_ms, ours.error_code, ours.session_id) == top
    assert ours.topics == theirs.topics


# -- TxnOffsetCommit v3 (and v5, the same layout): one checkpoint's offsets ---------------------

_TXN_OFFSET_COMMIT_RESPONSE = Schema(
    ("throttle_time_ms", Int32),
    (
        "topics",
        CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(("partition", Int32), ("error_code", Int16), _TAGS)),
            _TAGS,
        ),
    ),
    _TAGS,
)
_maybe_text = st.one_of(st.none(), st.text(max_size=200))


@settings(max_examples=200, deadline=None)
@given(
    head=st.tuples(
        st.text(max_size=200),
        st.text(max_size=200),
        st.integers(-1, 2**63 - 1),
        st.integers(-1, 2**15 - 1),
        st.integers(-1, 2**31 - 1),
        st.text(max_size=200),
        _maybe_text,
    ),
    topics=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=200),
            st.lists(
                st.tuples(
                    st.integers(0, 2**31 - 1),
                    st.integers(-1, 2**63 - 1),
                    st.integers(-1, 2**31 - 1),
                    _maybe_text,
                    st.just({}),
                ),
                max_size=5,
            ),
            st.just({}),
        ),
        max_size=5,
    ),
)
def test_the_txn_offset_commit_request_is_what_aiokafkas_encoder_writes(
    head: tuple[Any, ...], topics: list[Any]
) -> None:
    fields = [*head, topics, {}]
    ours = TxnOffsetCommitRequest_v3(*fields).encode()
    assert ours == TxnOffsetCommitRequest_v3.SCHEMA.encode(fields)


@settings(max_examples=200, deadline=None)
@given(
    throttle=st.integers(0, 2**31 - 1),
    topics=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=200),
            st.lists(
                st.tuples(
                    st.integers(0, 2**31 - 1),
                    st.integers(-(2**15), 2**15 - 1),
                    st.dictionaries(st.integers(0, 300), st.binary(max_size=200), max_size=2),
                ),
                max_size=5,
            ),
            st.dictionaries(st.integers(0, 300), st.binary(max_size=200), max_size=2),
        ),
        max_size=5,
    ),
    tags=st.dictionaries(st.integers(0, 300), st.binary(max_size=200), max_size=2),
)
def test_the_txn_offset_commit_response_is_read_past_its_tagged_fields(
    throttle: int, topics: list[Any], tags: dict[int, bytes]
) -> None:
    body = _TXN_OFFSET_COMMIT_RESPONSE.encode([throttle, topics, tags])
    read = TxnOffsetCommitResponse_v3.decode(body)
    assert read.throttle_time_ms == throttle
    assert read.topics == [
        (name, [(p, code, {}) for p, code, _ in parts], {}) for name, parts, _ in topics
    ]
    at = BytesIO(b"header" + body)  # read from where the frame's header ended
    at.seek(6)
    assert TxnOffsetCommitResponse_v3.decode(at).topics == read.topics
