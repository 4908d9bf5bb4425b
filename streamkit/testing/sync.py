"""TestDriver: the AsyncTestDriver for plain (synchronous) tests, on an event loop of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from streamkit.app import App
from streamkit.events import Headers
from streamkit.testing.driver import SETTLE_TIMEOUT, START_TIME, AsyncTestDriver
from streamkit.testing.views import Output, TableView, VersionedView, WindowView
from streamkit.topics import Topic

R = TypeVar("R")


class TestDriver:
    """`with TestDriver(app) as driver:` — the same calls as AsyncTestDriver, without `await`.
    In an `async def` test use AsyncTestDriver (this one runs its own event loop)."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        app: App,
        *,
        start_time: float = START_TIME,
        workdir: Path | str | None = None,
        settle_timeout: float = SETTLE_TIMEOUT,
    ) -> None:
        self.driver = AsyncTestDriver(
            app, start_time=start_time, workdir=workdir, settle_timeout=settle_timeout
        )
        self._runner: asyncio.Runner | None = None

    def __enter__(self) -> TestDriver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, coro: Coroutine[Any, Any, R]) -> R:
        if self._runner is None:
            coro.close()
            raise RuntimeError("the driver is not running: use it inside `with TestDriver(app)`")
        return self._runner.run(coro)

    def start(self) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "TestDriver runs its own event loop: in an async test use "
                "`async with AsyncTestDriver(app) as driver` and await its calls"
            )
        self._runner = asyncio.Runner()
        try:
            self._runner.run(self.driver.start())
        except BaseException:
            self._runner.close()
            self._runner = None
            raise

    def close(self) -> None:
        if self._runner is None:
            return
        try:
            self._runner.run(self.driver.close())
        finally:
            self._runner.close()
            self._runner = None

    # -- the AsyncTestDriver's calls -------------------------------------------------------------

    @property
    def app(self) -> App:
        return self.driver.app

    @property
    def now(self) -> float:
        return self.driver.now

    @property
    def workdir(self) -> Path:
        return self.driver.workdir

    def send(
        self,
        topic: Topic | str,
        value: Any = None,
        *,
        key: Any = None,
        timestamp: Any = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> Output:
        return self._run(
            self.driver.send(
                topic, value, key=key, timestamp=timestamp, partition=partition, headers=headers
            )
        )

    def send_raw(
        self,
        topic: Topic | str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        timestamp: Any = None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> Output:
        return self._run(
            self.driver.send_raw(
                topic, value, key=key, timestamp=timestamp, partition=partition, headers=headers
            )
        )

    def send_many(self, topic: Topic | str, items: Iterable[Any]) -> list[Output]:
        return self._run(self.driver.send_many(topic, items))

    def advance_time(self, seconds: float) -> None:
        self._run(self.driver.advance_time(seconds))

    def advance_watermark(self, when: Any, *, topic: Topic | str | None = None) -> None:
        self._run(self.driver.advance_watermark(when, topic=topic))

    def checkpoint(self) -> None:
        self._run(self.driver.checkpoint())

    def restart(self, *, lose_state: bool = False, crash: bool = False) -> None:
        self._run(self.driver.restart(lose_state=lose_state, crash=crash))

    def read(self, topic: Topic | str) -> list[Output]:
        return self.driver.read(topic)

    def read_values(self, topic: Topic | str) -> list[Any]:
        return self.driver.read_values(topic)

    def records(self, topic: Topic | str) -> list[Output]:
        return self.driver.records(topic)

    def drain(self) -> dict[str, list[Output]]:
        return self.driver.drain()

    def committed(self, topic: Topic | str) -> dict[int, int]:
        return self.driver.committed(topic)

    def watermarks(self, topic: Topic | str) -> dict[int, int]:
        return self.driver.watermarks(topic)

    def table(self, name: str) -> TableView:
        return self.driver.table(name)

    def window(self, name: str) -> WindowView:
        return self.driver.window(name)

    def versioned(self, name: str) -> VersionedView:
        return self.driver.versioned(name)

    def timers(self, name: str) -> list[tuple[int, str, Any, Any]]:
        return self.driver.timers(name)
