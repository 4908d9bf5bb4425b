"""`stream.map_async(fn, ...)`'s options, checked when the stream is declared.

Nothing runs here: `runtime/async_map.py` runs the calls (up to `concurrency` at once per task,
one at a time per key) and `docs/async-io.md` says what is promised.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from streamkit.settings import ConfigError


@dataclass(frozen=True)
class AsyncOptions:
    """How one `map_async` step calls its function."""

    concurrency: int = 8  # calls in flight at once, per task
    capacity: int = 0  # events taken but unfinished before the task stops taking records
    timeout: float | None = 5.0  # seconds per attempt (None: no limit)
    retries: int = 3  # attempts after the first
    backoff: float = 0.1  # seconds before the first retry, doubled each time
    max_backoff: float = 2.0


def async_function(fn: Any) -> Callable[[Any], Awaitable[Any]]:
    """`fn` when it is an `async def` (or an object whose `__call__` is one)."""
    if not callable(fn):
        raise ConfigError(f"map_async needs an async function, got {fn!r}")
    if inspect.isasyncgenfunction(fn):
        raise ConfigError(
            f"map_async({getattr(fn, '__name__', fn)}): an async generator yields many values; "
            "give an `async def` that returns one (flat_map its result after)"
        )
    if not (
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
    ):
        raise ConfigError(
            f"map_async({getattr(fn, '__name__', fn)}): give an `async def` function (for a "
            "plain function, use map)"
        )
    return fn  # type: ignore[no-any-return]


def async_options(
    *,
    concurrency: int,
    capacity: int | None,
    timeout: float | None,
    retries: int,
    backoff: float,
    max_backoff: float,
) -> AsyncOptions:
    """The options, or a ConfigError that says which one to change."""
    _whole("concurrency", concurrency, 1)
    _whole("retries", retries, 0)
    if capacity is None:
        capacity = 2 * concurrency
    _whole("capacity", capacity, 1)
    if capacity < concurrency:
        raise ConfigError(
            f"map_async: capacity ({capacity}) below concurrency ({concurrency}) leaves calls "
            "unused: give capacity >= concurrency (or leave it out: 2 x concurrency)"
        )
    if timeout is not None:
        _seconds("timeout", timeout, positive=True)
    _seconds("backoff", backoff, positive=False)
    _seconds("max_backoff", max_backoff, positive=False)
    return AsyncOptions(concurrency, capacity, timeout, retries, backoff, max(backoff, max_backoff))


def worst_case(options: AsyncOptions) -> float | None:
    """Seconds one event can spend in its calls (every attempt timing out), None: no bound.
    A task that closes waits that long for its calls (`shutdown_timeout` should cover it)."""
    if options.timeout is None:
        return None
    waits, delay = 0.0, options.backoff
    for _ in range(options.retries):
        waits += delay
        delay = min(2 * delay, options.max_backoff)
    return options.timeout * (options.retries + 1) + waits


def _whole(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"map_async: {name} must be a whole number >= {least}, got {value!r}")


def _seconds(name: str, value: Any, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"map_async: {name} is in seconds (a number), got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(
            f"map_async: {name} must be {'> 0' if positive else '>= 0'} seconds, got {value!r}"
        )
