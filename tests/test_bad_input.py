"""Bad input never stops a worker: every record that does not decode, validate, have an event
time, or survive the agent ends in the dead-letter topic with its bytes, a reason and its
coordinates, and in = out + DLQ exactly. First the real Task with no broker (hypothesis, many
mixes), then a generated batch through a real worker and broker."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings

from tests.badinput import Made, batches, check_outcomes, fuzz_app, run_task


def run_pure(made: list[Made], event_time: bool) -> None:
    app, orders, out = fuzz_app("pure")

    async def scenario() -> None:
        task, collector = await run_task(app, orders, made, event_time=event_time)
        try:
            runner = task.runner
            assert runner is not None and not runner.done(), "the task stopped"
            assert task.committable == len(made)
            sink = [r.value for r in collector.records if r.topic == out.name]
            dead = [
                (r.key, r.value, r.headers) for r in collector.records if r.topic == app.dlq.name
            ]
            check_outcomes(made, sink, dead, topic=orders.name, event_time=event_time)
            assert task.dead_letters == len(dead)
        finally:
            await task.close(1.0)

    asyncio.run(scenario())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(made=batches())
def test_decode_and_dispatch_send_every_bad_record_to_the_dlq(made: list[Made]) -> None:
    run_pure(made, event_time=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(made=batches())
def test_with_event_time_bad_times_and_odd_headers_go_to_the_dlq_too(made: list[Made]) -> None:
    run_pure(made, event_time=True)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(made=batches(max_size=6, big=True))
def test_huge_records_go_through_or_to_the_dlq_whole(made: list[Made]) -> None:
    run_pure(made, event_time=True)
