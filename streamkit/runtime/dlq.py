"""Dead letters: a record that failed keeps its bytes and gains headers saying why and where.

Headers added (values UTF-8): `streamkit.error`, `streamkit.error.type`, `streamkit.agent`,
`streamkit.source.topic`, `streamkit.source.partition`, `streamkit.source.offset`,
`streamkit.source.timestamp`. The original key, value and headers are kept untouched.
"""

from __future__ import annotations

from typing import Any

from streamkit.runtime.collector import RecordCollector

ERROR = "streamkit.error"
ERROR_TYPE = "streamkit.error.type"
AGENT = "streamkit.agent"
SOURCE_TOPIC = "streamkit.source.topic"
SOURCE_PARTITION = "streamkit.source.partition"
SOURCE_OFFSET = "streamkit.source.offset"
SOURCE_TIMESTAMP = "streamkit.source.timestamp"

MAX_REASON = 4000


def dead_letter(
    collector: RecordCollector,
    dlq_topic: str,
    record: Any,
    *,
    agent: str,
    reason: str,
    error_type: str,
) -> None:
    """Append `record` (an aiokafka ConsumerRecord) to the DLQ through the task's collector."""
    headers = [
        *(record.headers or ()),
        (ERROR, reason[:MAX_REASON].encode()),
        (ERROR_TYPE, error_type.encode()),
        (AGENT, agent.encode()),
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
        (SOURCE_TIMESTAMP, str(record.timestamp).encode()),
    ]
    collector.append(
        dlq_topic, record.key, record.value, headers=headers, timestamp_ms=record.timestamp
    )


def describe(headers: Any) -> dict[str, str]:
    """The streamkit.* headers of a dead letter as text (for tools and tests). The original
    record's headers come first and may use the same names with any bytes (or None): ours,
    added last, win."""
    return {
        k: v.decode(errors="replace")
        for k, v in headers
        if k.startswith("streamkit.") and v is not None
    }
