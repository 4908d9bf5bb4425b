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


class _Answer:
    def __init__(self, *resources: tuple[object, ...]) -> None:
        self.resources = list(resources)


async def test_a_config_request_is_asked_again_while_a_broker_has_not_learnt_of_the_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers start together on a cluster: one creates the changelogs, the other finds
    them in the metadata and asks their settings of a broker that does not know them yet."""
    answers = [
        _Answer((admin.UNKNOWN_TOPIC, "unknown", 2, "t-changelog", [])),
        _Answer((0, None, 2, "t-changelog", [("cleanup.policy", "compact", False, 1)])),
    ]
    calls = 0

    async def describe_configs() -> list[_Answer]:
        nonlocal calls
        calls += 1
        return [answers.pop(0)]

    found = await admin.known(describe_configs)
    assert calls == 2 and found[0][0] == 0 and found[0][3] == "t-changelog"

    monkeypatch.setattr(admin, "NODE_DOWN_WITHIN", 0.3)

    async def never_learns() -> list[_Answer]:
        return [_Answer((admin.UNKNOWN_TOPIC, "unknown", 2, "gone", []))]

    # past the deadline the answer comes back as it is (the caller reports the code)
    assert (await admin.known(never_learns))[0][0] == admin.UNKNOWN_TOPIC
