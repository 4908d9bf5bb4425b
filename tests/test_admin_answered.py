"""Topic administration at start asks again while the broker the admin client picked is down
(`runtime/admin.answered`; found by the three-broker chaos test: a worker restarted while a
node was dead failed at start when the client happened to pick that node)."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError, NodeNotReadyError, UnknownTopicOrPartitionError

from streamkit.runtime import admin


async def test_a_request_to_a_dead_broker_is_asked_again_until_one_answers() -> None:
    failures = [NodeNotReadyError("node 3"), KafkaConnectionError("closed")]
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        return "answer"

    assert await admin.answered(call) == "answer"
    assert calls == 3


async def test_it_gives_up_after_its_deadline_and_lets_other_errors_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(admin, "NODE_DOWN_WITHIN", 0.3)

    async def down() -> None:
        raise NodeNotReadyError("node 3")

    with pytest.raises(NodeNotReadyError):
        await admin.answered(down)

    async def refused() -> None:
        raise UnknownTopicOrPartitionError()

    with pytest.raises(UnknownTopicOrPartitionError):  # not a broker being down: at once
        await admin.answered(refused)
