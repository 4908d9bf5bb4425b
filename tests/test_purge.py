"""Repartition topics against the broker: created without time retention (their record
timestamps are event times: the 2024 times of these tests were deleted by the broker's 7-day
retention before the next stage read them), consumed records deleted by the purger up to the
committed offsets; dead-letter topics stamped on arrival."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

import streamkit as sk
from streamkit.runtime.admin import ensure_app_topics
from streamkit.runtime.purge import RepartitionPurger
from streamkit.settings import load_settings
from tests.kafkahelp import bootstrap, produce


async def topic_configs(names: list[str]) -> dict[str, dict[str, str]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        found = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        )
    finally:
        await admin.close()
    out: dict[str, dict[str, str]] = {}
    for response in found:
        for _err, _msg, _type, name, entries in response.resources:
            out[name] = {e[0]: e[1] for e in entries}
    return out


async def log_start(tp: TopicPartition) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap())
    await consumer.start()
    try:
        return int((await consumer.beginning_offsets([tp]))[tp])
    finally:
        await consumer.stop()


async def test_internal_topics_are_created_for_event_times_and_dead_letters(uid: str) -> None:
    app = sk.App(f"purge-{uid}")
    src = app.topic(f"purge-in-{uid}", partitions=2)
    counts = app.window("counts", sk.tumbling(60), sk.count())

    @app.agent(app.stream(src).key_by("user", name="by-user"), state=[counts])
    async def count(stream: sk.Stream[Any]) -> None:
        async for v in stream:
            counts.add(v["user"])

    await ensure_app_topics(app, client_id=f"purge-{uid}")
    repartition, late = f"purge-{uid}-by-user-repartition", f"purge-{uid}-counts-late"
    configs = await topic_configs([repartition, app.dlq.name, late])
    assert configs[repartition]["retention.ms"] == "-1"
    assert configs[app.dlq.name]["message.timestamp.type"] == "LogAppendTime"
    assert configs[late]["message.timestamp.type"] == "LogAppendTime"


async def test_the_purger_deletes_up_to_the_committed_offsets_of_repartition_topics(
    uid: str,
) -> None:
    topic, other = f"purge-rep-{uid}", f"purge-other-{uid}"
    app = sk.App(f"purge2-{uid}")
    app.topic(topic, partitions=1, config={"retention.ms": "-1"})
    app.topic(other, partitions=1)
    await ensure_app_topics(app, client_id=f"purge2-{uid}")
    for name in (topic, other):
        await produce(name, [b"x"] * 10, partition=0)
    purger = RepartitionPurger(load_settings(), f"purge-{uid}", {topic}, every=0.0)
    try:
        await purger.after_checkpoint({TopicPartition(topic, 0): 6, TopicPartition(other, 0): 6})
        assert await log_start(TopicPartition(topic, 0)) == 6
        assert await log_start(TopicPartition(other, 0)) == 0  # not a repartition topic
        await purger.after_checkpoint({TopicPartition(topic, 0): 6})  # nothing new: no call
        assert purger.deleted_partitions == 1
    finally:
        await purger.close()
