"""Everything streamkit takes from aiokafka's internals (`client`, `protocol`, `record`, `conn`,
private attributes), in this one package, pinned to the aiokafka version it was written
against; nothing else in streamkit imports them. `fetch`: raw Fetch, ListOffsets and topic ids
for the reader of compacted topics and for the input partitions' fetch path, the connection
probe. `records`: a fetch response's read_committed batches, read with aiokafka's C record
reader, and the input partitions' `InputRecord`. `sessions`: incremental fetch sessions
(KIP-227) for the input partitions' fetch. `groups`: group fencing of transactional offset
commits (KIP-447, TxnOffsetCommit v3), the consumer's group metadata, OffsetFetch with
`require_stable`, the consumer's metadata refreshed until it knows the topics. `cooperative`:
incremental cooperative rebalancing (KIP-429) on aiokafka's eager group coordinator. `batches`:
the producer's batches filled through aiokafka's C record builder, without its per-record
Python wrapper, and the collector's per-record calls (in C when built). `txn_producer`:
streamkit's own transactional producer for the per-worker producers, on aiokafka's client, with
Produce encoded and decoded by hand (`produce`), its coordinator requests in `txn_coordinator`,
transaction version 2 (KIP-890) when the cluster's finalized features (`api_versions`,
ApiVersions v3) have it. None imports anything from streamkit."""

from __future__ import annotations

from streamkit.aiokafka_internals.batches import (
    BATCH_ATTRIBUTES,
    NATIVE_BATCHES,
    Add,
    OpenBatch,
    Route,
    adder,
    router,
)
from streamkit.aiokafka_internals.cooperative import (
    ASSIGNMENT_ATTRIBUTES,
    COOPERATIVE_COORDINATOR_ATTRIBUTES,
    CooperativeRebalance,
    check_coordinator,
)
from streamkit.aiokafka_internals.fetch import (
    EARLIEST,
    FETCH_BYTES,
    LATEST,
    OFFSET_OUT_OF_RANGE,
    PARTITION_BYTES,
    Fetched,
    FetchFailed,
    InputFetched,
    RawClient,
    probe_connection,
)
from streamkit.aiokafka_internals.groups import (
    _TAGS,
    AIOKAFKA_VERSION,
    CONSUMER_ATTRIBUTES,
    COORDINATOR_ATTRIBUTES,
    FENCED_INSTANCE_ID,
    GROUP_FENCING_ERRORS,
    ILLEGAL_GENERATION,
    NO_GENERATION,
    PRODUCER_ATTRIBUTES,
    PRODUCER_FENCED,
    SENDER_ATTRIBUTES,
    UNKNOWN_MEMBER_ID,
    UNSTABLE_OFFSET_COMMIT,
    CommitVerdict,
    GroupFenced,
    GroupMetadata,
    GroupTxnOffsetCommitRequest,
    InternalsMoved,
    TxnOffsetCommitRequest_v3,
    TxnOffsetCommitResponse_v3,
    check_consumer,
    check_producer,
    check_version,
    commit_verdict,
    enable_group_fencing,
    group_metadata,
    know_topics,
    moved_on,
    producer_identity,
)
from streamkit.aiokafka_internals.offsets import (
    Commits,
    OffsetFetchRequest_v7,
    OffsetFetchResponse_v7,
    OffsetsUnstable,
    StableOffsetFetchRequest,
    fetch_stable_commits,
    fetch_stable_offsets,
    stable_commits_once,
)
from streamkit.aiokafka_internals.produce_queue import Delivered
from streamkit.aiokafka_internals.records import InputRecord, committed_batches, input_records
from streamkit.aiokafka_internals.sessions import FetchSession
from streamkit.aiokafka_internals.txn_producer import TransactionalProducer

__all__ = [
    "AIOKAFKA_VERSION",
    "ASSIGNMENT_ATTRIBUTES",
    "BATCH_ATTRIBUTES",
    "CONSUMER_ATTRIBUTES",
    "COOPERATIVE_COORDINATOR_ATTRIBUTES",
    "COORDINATOR_ATTRIBUTES",
    "EARLIEST",
    "FENCED_INSTANCE_ID",
    "FETCH_BYTES",
    "GROUP_FENCING_ERRORS",
    "ILLEGAL_GENERATION",
    "LATEST",
    "NATIVE_BATCHES",
    "NO_GENERATION",
    "OFFSET_OUT_OF_RANGE",
    "PARTITION_BYTES",
    "PRODUCER_ATTRIBUTES",
    "PRODUCER_FENCED",
    "SENDER_ATTRIBUTES",
    "UNKNOWN_MEMBER_ID",
    "UNSTABLE_OFFSET_COMMIT",
    "_TAGS",
    "Add",
    "CommitVerdict",
    "Commits",
    "CooperativeRebalance",
    "Delivered",
    "FetchFailed",
    "FetchSession",
    "Fetched",
    "GroupFenced",
    "GroupMetadata",
    "GroupTxnOffsetCommitRequest",
    "InputFetched",
    "InputRecord",
    "InternalsMoved",
    "OffsetFetchRequest_v7",
    "OffsetFetchResponse_v7",
    "OffsetsUnstable",
    "OpenBatch",
    "RawClient",
    "Route",
    "StableOffsetFetchRequest",
    "TransactionalProducer",
    "TxnOffsetCommitRequest_v3",
    "TxnOffsetCommitResponse_v3",
    "adder",
    "check_consumer",
    "check_coordinator",
    "check_producer",
    "check_version",
    "commit_verdict",
    "committed_batches",
    "enable_group_fencing",
    "fetch_stable_commits",
    "fetch_stable_offsets",
    "group_metadata",
    "input_records",
    "know_topics",
    "moved_on",
    "probe_connection",
    "producer_identity",
    "router",
    "stable_commits_once",
]
