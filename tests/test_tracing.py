"""OpenTelemetry (the optional extra): a span per checkpoint and per rebalance from a real
worker on the real broker, a `traceparent` carried through a repartition hop, and a clear
error when tracing is asked for without the package."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import streamkit as sk
from streamkit.runtime.tracing import Tracing, context_of
from tests.kafkahelp import bootstrap, produce, read_all, running, wait_until

EXPORTER = InMemorySpanExporter()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(tracer_provider)  # once per process


def spans(name: str) -> list[Any]:
    return [s for s in EXPORTER.get_finished_spans() if s.name == name]


async def test_spans_per_checkpoint_and_rebalance_and_trace_context_through_a_hop(
    uid: str,
) -> None:
    app = sk.App(f"otel-{uid}", commit_interval=0.2, otel_enabled=True)
    source = app.topic(f"otel-in-{uid}", partitions=2)
    out = app.topic(f"otel-out-{uid}", partitions=2)

    @app.agent(app.stream(source).key_by("k", partitions=2), sink=out)
    async def relay(stream: sk.Stream[Any]) -> AsyncIterator[Any]:
        async for v in stream:
            yield v

    async with running(app):
        await wait_until(lambda: bool(spans("streamkit.rebalance")), what="a rebalance span")
        producer_headers = [("traceparent", TRACEPARENT.encode())]
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap())
        await producer.start()
        try:
            await producer.send_and_wait(
                source.name, orjson.dumps({"k": "a", "n": 1}), headers=producer_headers
            )
        finally:
            await producer.stop()
        await produce(source.name, [orjson.dumps({"k": str(i), "n": i}) for i in range(20)])
        await read_all(out.name, expect=21, within=60)
        await wait_until(
            lambda: any(
                s.attributes["streamkit.records"] > 0 for s in spans("streamkit.checkpoint")
            ),
            what="a checkpoint span with records",
        )
    (rebalance, *_) = spans("streamkit.rebalance")
    assert rebalance.attributes["streamkit.partitions"] > 0
    assert rebalance.attributes["streamkit.member_id"]
    checkpoint = spans("streamkit.checkpoint")[-1]
    assert checkpoint.end_time >= checkpoint.start_time
    assert checkpoint.attributes["streamkit.failed"] is False
    # the producer's trace context crossed the repartition topic with the record
    hop = await read_all(f"otel-{uid}-otel-in-{uid}-key_by-k-repartition", expect=21, within=30)
    carried = [r for r in hop if dict(r.headers or ()).get("traceparent") == TRACEPARENT.encode()]
    assert len(carried) == 1
    span_context = trace.get_current_span(context_of(carried[0].headers)).get_span_context()
    assert f"{span_context.trace_id:032x}" == TRACE_ID


def test_off_by_default_and_a_clear_error_without_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = sk.App("otel-off")
    worker = type("W", (), {"settings": app.settings, "client_id": "w"})()
    assert Tracing.create(worker) is None
    app_on = sk.App("otel-on", otel_enabled=True)
    worker_on = type("W", (), {"settings": app_on.settings, "client_id": "w"})()
    assert Tracing.create(worker_on) is not None
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    with pytest.raises(sk.ConfigError, match=r"streamkit\[otel\]"):
        Tracing.create(worker_on)
