"""Repartition topics against the broker: created without time retention (their record
timestamps are event times: the 2024 times of these tests were deleted by the broker's 7-day
retention before the next stage read them), consumed records deleted by the purger up to the
committed offsets; dead-letter topics stamped on arrival."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
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


async def test_an_existing_join_changelog_gets_the_declared_retention_and_keeps_its_settings(
    uid: str,
) -> None:
    """A join changelog an earlier version created `compact` only (it then wrote a tombstone
    per purged row; now it writes none and needs the time retention, else it grows for
    good) gets `compact,delete` and the retention at start; a setting an operator added to
    it stays; a user's topic is not the app's to change."""
    app = sk.App(f"recon-{uid}")
    left, right = (
        app.topic(f"recon-l-{uid}", partitions=1),
        app.topic(f"recon-r-{uid}", partitions=1),
    )
    out = app.topic(f"recon-out-{uid}", partitions=1, config={"retention.ms": "3600000"})
    app.stream(left).join(app.stream(right), within=600, grace=60, name="j").to(out)
    (changelog,) = [
        t for t in app.topics.values() if t.config.get("cleanup.policy") == "compact,delete"
    ]
    assert changelog.internal
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    changelog.name,
                    1,
                    1,
                    topic_configs={"cleanup.policy": "compact", "segment.ms": "600000"},
                ),
                NewTopic(out.name, 1, 1, topic_configs={"retention.ms": "60000"}),
            ]
        )
    finally:
        await admin.close()
    await ensure_app_topics(app, client_id=f"recon-{uid}")
    configs = await topic_configs([changelog.name, out.name])
    assert configs[changelog.name]["cleanup.policy"] == "compact,delete"
    assert configs[changelog.name]["retention.ms"] == changelog.config["retention.ms"]
    assert int(changelog.config["retention.ms"]) == (600 + 600 + 60) * 1000 + 86_400_000
    assert configs[changelog.name]["segment.ms"] == "600000"
    assert configs[out.name]["retention.ms"] == "60000"
    await ensure_app_topics(app, client_id=f"recon-{uid}")  # settled: nothing to change
