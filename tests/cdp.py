"""Headless Chromium driven over the DevTools protocol (a WebSocket), for the dashboard test.

`Browser.start()` runs the system's `chromium` (Debian's package; `make test` installs it)
with a throwaway profile; `page()` opens a tab; `Page.evaluate` runs JavaScript and returns
its value; `Page.screenshot` saves a PNG of the whole page."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import orjson

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


class CDPError(Exception):
    pass


class Browser:
    def __init__(self, executable: str) -> None:
        self.executable = executable
        self._profile = tempfile.TemporaryDirectory(prefix="sk-chromium-")
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Browser:
        self._proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, not awaited
            [
                self.executable,
                "--headless=new",
                "--no-sandbox",  # root in a container
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile.name}",
                "--window-size=1600,1000",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # its singleton socket folder (org.chromium.Chromium.*) goes with the profile,
            # not into the system's /tmp, where each run left one behind
            env={**os.environ, "TMPDIR": self._profile.name},
        )
        assert self._proc.stderr is not None
        url = await asyncio.wait_for(asyncio.to_thread(self._ws_url, self._proc.stderr), 60)
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        return self

    @staticmethod
    def _ws_url(stderr: Any) -> str:
        for raw in stderr:
            found = re.search(rb"DevTools listening on (ws://\S+)", raw)
            if found:
                return found.group(1).decode()
        raise CDPError("chromium exited before it listened")

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            data = orjson.loads(msg.data)
            future = self._pending.pop(data.get("id", -1), None)
            if future is None or future.done():
                continue
            if "error" in data:
                future.set_exception(CDPError(str(data["error"])))
            else:
                future.set_result(data.get("result", {}))

    async def send(self, method: str, session: str | None = None, **params: Any) -> Any:
        assert self._ws is not None
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        message: dict[str, Any] = {"id": msg_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_str(orjson.dumps(message).decode())
        return await asyncio.wait_for(future, 60)

    async def page(self) -> Page:
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = Page(self, attached["sessionId"])
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        return page

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        for _ in range(50):  # its helper processes may still be writing the profile as they exit
            try:
                self._profile.cleanup()
                return
            except OSError:
                await asyncio.sleep(0.1)
        shutil.rmtree(self._profile.name, ignore_errors=True)


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    async def send(self, method: str, **params: Any) -> Any:
        return await self.browser.send(method, self.session, **params)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression[:80]}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def screenshot(self, path: Path, width: int = 1600) -> None:
        height = await self.evaluate("document.documentElement.scrollHeight")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))
