"""Optional OpenTelemetry tracing: `pip install 'streamkit[otel]'`, then `otel_enabled=True`
(STREAMKIT_OTEL_ENABLED=true). Off by default; off, nothing here is imported or called.

Spans (tracer `streamkit`, through the OpenTelemetry API: the application configures the SDK,
its exporter and sampler, e.g. OTEL_TRACES_SAMPLER=traceidratio):

- `streamkit.checkpoint`, one per checkpoint, over its duration: `streamkit.records` (acknowledged
  since the previous one), `streamkit.changelog_records`, `streamkit.failed`;
- `streamkit.rebalance`, one per assignment the worker receives: `streamkit.partitions`,
  `streamkit.rebalances` (the count so far), `streamkit.member_id`.

Both come from what the worker already records once per checkpoint and per rebalance, never
per event. Trace context: a record's headers travel with it through every repartition hop
(`runtime/exchange.py` keeps them), so a W3C `traceparent` header set by whoever produced
the source record reaches every stage; `context_of(headers)` turns it into a context agent
code can start its own (sampled) spans under.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from streamkit.settings import ConfigError, Settings

INSTALL = "pip install 'streamkit[otel]'"


class Tracing:
    def __init__(self, tracer: Any, worker_id: str) -> None:
        self._tracer = tracer
        self._worker = worker_id

    @classmethod
    def create(cls, worker: Any) -> Tracing | None:
        """For a `Worker` (its settings and client id); None when tracing is off."""
        settings: Settings = worker.settings
        if not settings.otel_enabled:
            return None
        try:
            from opentelemetry import trace
        except ImportError:
            raise ConfigError(
                f"otel_enabled is set but OpenTelemetry is not installed: {INSTALL}, or set "
                "otel_enabled=false (STREAMKIT_OTEL_ENABLED)"
            ) from None
        return cls(trace.get_tracer("streamkit"), worker.client_id)

    def checkpoint(self, seconds: float, entry: dict[str, Any]) -> None:
        end = time.time_ns()
        span = self._tracer.start_span(
            "streamkit.checkpoint",
            start_time=end - int(seconds * 1e9),
            attributes={
                "streamkit.worker": self._worker,
                "streamkit.records": entry["records"],
                "streamkit.changelog_records": entry["changelog_records"],
                "streamkit.failed": entry["failed"],
            },
        )
        span.end(end_time=end)

    def rebalance(self, entry: dict[str, Any], count: int, member_id: str | None) -> None:
        span = self._tracer.start_span(
            "streamkit.rebalance",
            attributes={
                "streamkit.worker": self._worker,
                "streamkit.partitions": entry["partitions"],
                "streamkit.rebalances": count,
                "streamkit.member_id": member_id or "",
            },
        )
        span.end()


def context_of(headers: Iterable[tuple[str, bytes | None]] | None) -> Any:
    """The OpenTelemetry context carried by a record's `traceparent`/`tracestate` headers (for
    `tracer.start_as_current_span(name, context=...)`), or None without OpenTelemetry."""
    try:
        from opentelemetry.propagate import extract
    except ImportError:
        return None
    carrier = {k: v.decode(errors="replace") for k, v in headers or () if v is not None}
    return extract(carrier)
