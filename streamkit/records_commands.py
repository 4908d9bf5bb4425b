"""Bodies of `streamkit dlq show|replay` and `streamkit tail`: records read back from Kafka.

Every read is `read_committed` and group-less (nothing is committed, no group is joined). A
topic the app declares is decoded with its codecs; a dead letter or late event (the DLQ and
late topics hold the original bytes) is decoded with the codecs of the topic it came from
(`streamkit.source.topic`) and shown with its reason and source coordinates.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.structs import TopicPartition

from streamkit.app import App
from streamkit.clients import make_consumer, make_producer
from streamkit.registry.codec import connect_codecs
from streamkit.runtime.admin import describe, open_admin
from streamkit.runtime.dlq import ERROR, ERROR_TYPE, SOURCE_PARTITION, SOURCE_TOPIC
from streamkit.runtime.dlq import describe as streamkit_headers

REPLAY_HEADER = "streamkit.replay.of"  # on a replayed record: the dead letter it came from
PREVIEW = 300


class NoSuchTopic(Exception):
    pass


async def partitions_of(app: App, topic: str) -> int:
    admin = await open_admin(app.settings, f"{app.id}-cli")
    try:
        found = await describe(admin, [topic])
    finally:
        await admin.close()
    count = found.get(topic)
    if count is None:
        raise NoSuchTopic(f"topic {topic} does not exist on the broker")
    return count


async def read(
    app: App,
    topic: str,
    *,
    from_beginning: bool,
    follow: bool,
    partitions: list[int] | None = None,
    idle_timeout: float | None = None,
) -> AsyncGenerator[Any, None]:
    """The committed records of `topic`, in each partition's order: from the start (or the
    current end), up to the end as it was at the start (or on and on with `follow`, until
    `idle_timeout` seconds pass with nothing new)."""
    count = await partitions_of(app, topic)
    connect_codecs(app.topics.values(), app.settings.schema_registry_url)  # Avro... readable
    tps = [TopicPartition(topic, p) for p in (partitions or range(count)) if p < count]
    consumer = make_consumer(app.settings, None, f"{app.id}-cli-read")
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            for tp in tps:
                consumer.seek(tp, ends[tp])
        quiet_since = time.monotonic()
        while True:
            if not follow:
                positions = {tp: await consumer.position(tp) for tp in tps}
                if all(positions[tp] >= ends[tp] for tp in tps):
                    return
            batch = await consumer.getmany(timeout_ms=300)
            if batch:
                quiet_since = time.monotonic()
            for tp in sorted(batch):
                for record in batch[tp]:
                    if follow or record.offset < ends[tp]:
                        yield record
            if idle_timeout is not None and time.monotonic() - quiet_since > idle_timeout:
                return
    finally:
        await consumer.stop()


def _decode(app: App, topic_name: str | None, raw_key: Any, raw_value: Any) -> tuple[Any, Any]:
    """Key and value with the codecs of `topic_name` if the app declares it, else as text."""
    topic = app.topics.get(topic_name or "")

    def one(raw: bytes | None, codec: Any) -> Any:
        if raw is None:
            return None
        if codec is not None:
            try:
                return codec.loads(raw)
            except Exception:  # not decodable with the declared codec: show the bytes
                pass
        return raw[:PREVIEW].decode(errors="replace")

    if topic is None:
        return one(raw_key, None), one(raw_value, None)
    return one(raw_key, topic.key_codec), one(raw_value, topic.value_codec)


def _show(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if isinstance(value, bytes):
        value = value[:PREVIEW].decode(errors="replace")
    try:
        text = orjson.dumps(value, default=str).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"


def describe_record(app: App, record: Any) -> dict[str, Any]:
    """One record as JSON-able fields; dead letters and late events with why and whence."""
    meta = streamkit_headers(record.headers or ())
    source = meta.get(SOURCE_TOPIC)
    row: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
    }
    key, value = _decode(app, source if ERROR in meta else record.topic, record.key, record.value)
    row["key"], row["value"] = key, value
    if ERROR in meta:
        row["error_type"] = meta.get(ERROR_TYPE)
        row["error"] = meta.get(ERROR)
        row["agent"] = meta.get("streamkit.agent")
        row["source"] = {
            "topic": source,
            "partition": meta.get(SOURCE_PARTITION),
            "offset": meta.get("streamkit.source.offset"),
        }
    if REPLAY_HEADER in meta:
        row["replay_of"] = meta[REPLAY_HEADER]
    return row


def format_record(row: dict[str, Any]) -> str:
    line = f"{row['topic']}[{row['partition']}]@{row['offset']}  key={_show(row['key'])}  "
    line += f"value={_show(row['value'])}"
    if "error" in row:
        src = row["source"]
        line += (
            f"\n    {row['error_type']}: {row['error']}"
            f"\n    from {src['topic']}[{src['partition']}]@{src['offset']} (agent {row['agent']})"
        )
    if "replay_of" in row:
        line += f"\n    replayed from {row['replay_of']}"
    return line


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    plain: dict[str, Any] = orjson.loads(orjson.dumps(row, default=_plain))
    return plain


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


# -- dlq replay ---------------------------------------------------------------------------------


@dataclass
class Replayed:
    dead_letter: str  # dlq[partition]@offset
    to: str  # topic[partition]


def chosen(
    record: Any, *, offsets: set[int], error_type: str | None, source_topic: str | None
) -> bool:
    meta = streamkit_headers(record.headers or ())
    if offsets and record.offset not in offsets:
        return False
    if error_type is not None and meta.get(ERROR_TYPE) != error_type:
        return False
    return source_topic is None or meta.get(SOURCE_TOPIC) == source_topic


async def replay(
    app: App,
    *,
    offsets: set[int],
    error_type: str | None,
    source_topic: str | None,
    dry_run: bool,
) -> list[Replayed]:
    """Send the chosen dead letters back to the partition of their source topic they came
    from, with their original key, value and headers (the streamkit.* ones dropped, one
    `streamkit.replay.of` added), and return what was (or, dry run, would be) sent."""
    dlq = app.dlq.name
    picked = []
    async for record in read(app, dlq, from_beginning=True, follow=False):
        if chosen(record, offsets=offsets, error_type=error_type, source_topic=source_topic):
            picked.append(record)
    sent = []
    producer = make_producer(app.settings, f"{app.id}-dlq-replay")
    await producer.start()
    try:
        for record in picked:
            meta = streamkit_headers(record.headers or ())
            topic, partition = meta.get(SOURCE_TOPIC), meta.get(SOURCE_PARTITION)
            if not topic or partition is None:
                continue
            origin = f"{dlq}[{record.partition}]@{record.offset}"
            headers = [(k, v) for k, v in record.headers or () if not k.startswith("streamkit.")]
            headers.append((REPLAY_HEADER, origin.encode()))
            if not dry_run:
                await producer.send(
                    topic, record.value, key=record.key, partition=int(partition), headers=headers
                )
            sent.append(Replayed(origin, f"{topic}[{partition}]"))
        await producer.flush()
    finally:
        await producer.stop()
    return sent
