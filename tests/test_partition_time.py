"""A source partition's time survives a move (as Kafka Streams keeps its partition time in the
commit metadata): each commit of an event-time task's source partition carries `t=` the
greatest event time read before that offset, and the partition's next owner resumes from it.
Its task then says the watermark its predecessor reached even if it reads nothing more; before,
it said none, and a later stage waiting on every upstream could wait for good."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

import streamkit as sk
from streamkit.eventtime import NO_WATERMARK, read_control
from tests.kafkahelp import bootstrap, produce, read_all, running, wait_until

MODES = {
    "at_least_once": {"processing_guarantee": "at_least_once"},
    "exactly_once per worker": {"processing_guarantee": "exactly_once"},
    "exactly_once per partition": {
        "processing_guarantee": "exactly_once",
        "transactional_producer": "per_partition",
    },
}


async def commit_of(group: str, tp: TopicPartition) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
    await admin.start()
    try:
        return (await admin.list_consumer_group_offsets(group)).get(tp)
    finally:
        await admin.close()


def controls(records: list[Any]) -> list[tuple[int, int, int, bool]]:
    """(offset, upstream, watermark, idle) of the control records among `records`."""
    found = []
    for r in records:
        control = read_control(r.headers)
        if control is not None:
            found.append((r.offset, *control))
    return found


@pytest.mark.parametrize("mode", list(MODES))
async def test_a_moved_source_partition_resumes_its_partition_time(
    uid: str, tmp_path: Path, mode: str
) -> None:
    def make_app(workdir: Path) -> tuple[sk.App, str, str]:
        app = sk.App(
            f"pt-{uid}", workdir=workdir, commit_interval=0.2, idle_timeout=1.0, **MODES[mode]
        )
        clicks = app.topic(f"pt-in-{uid}", partitions=1, timestamp="ts")
        out = app.topic(f"pt-out-{uid}", partitions=1)
        counts = app.window("counts", sk.tumbling(10), sk.count(), output=out)

        @app.agent(app.stream(clicks).key_by("user", name="by-user"), state=[counts])
        async def per_user(stream: sk.Stream[Any]) -> None:
            async for c in stream:
                counts.add(c["user"])

        return app, clicks.name, out.name

    app, clicks, out = make_app(tmp_path / "a")
    repartition = f"{app.id}-by-user-repartition"
    async with running(app):
        await produce(clicks, [orjson.dumps({"user": "u", "ts": t}) for t in (1, 11, 21)])
        # [0, 10) and [10, 20) closed: the watermark reached 21 s
        await read_all(out, expect=2, within=30)
        tp = TopicPartition(clicks, 0)
        await wait_until(
            lambda: _at(commit_of(app.id, tp), 3), within=30, what="the offset after 3 events"
        )
    commit = await commit_of(app.id, tp)
    assert (commit.offset, commit.metadata) == (3, "t=21000")
    before = max(r.offset for r in await read_all(repartition, isolation="read_uncommitted"))

    # the next owner (a new worker, a new workdir) reads nothing more from the partition
    app, clicks, out = make_app(tmp_path / "b")
    async with running(app):

        async def said() -> bool:
            records = await read_all(repartition)
            return any(offset > before for offset, *_ in controls(records))

        await wait_until(said, within=30, what="the new task's first control record")
        records = await read_all(repartition)
    new = [(w, idle) for offset, _, w, idle in controls(records) if offset > before]
    assert new and all(w == 21_000 for w, _ in new), new
    assert NO_WATERMARK not in {w for w, _ in new}


async def _at(commit: Any, offset: int) -> bool:
    found = await commit
    return found is not None and found.offset >= offset
