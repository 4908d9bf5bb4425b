"""Dashboard: the page and its API, on a worker's web server or on its own
(`streamkit dashboard MODULE:APP`).

- `GET /`: the page (`static/index.html`, `dashboard.js`, `dashboard.css`: no build step, no
  network beyond this server).
- `GET /api/graph`: `graph_of(app)`.
- `GET /api/snapshot`: the newest whole-app view (`collect.AppView`).
- `GET /api/events`: server-sent events, one `data:` line of the view every REFRESH seconds.
- `GET /api/lookup?table=&key=` (or `window=`): one key of a table, or the windows of one key
  in a window table, asked of a worker (which routes it to the owner of the key's partition).

The view is only gathered while a page listens (or a snapshot was asked for lately): a worker
that nobody watches pays nothing. One refresh loop serves every listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web

from streamkit.app import App
from streamkit.dashboard.collect import AppView, LocalServer
from streamkit.dashboard.graph import graph_of
from streamkit.runtime import webauth
from streamkit.runtime.group import live_endpoints
from streamkit.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
REFRESH = 1.0
LINGER = 15.0  # seconds the loop keeps running after the last listener left
HTTP_TIMEOUT = 5.0

log = logging.getLogger(__name__)


class Dashboard:
    def __init__(self, app: App, settings: Settings, local: LocalServer | None = None) -> None:
        self.app = app
        self.settings = settings
        self.local = local
        self._graph: dict[str, Any] | None = None
        self._view: AppView | None = None
        self.snapshot: dict[str, Any] | None = None
        self._seq = 0
        self._fresh = asyncio.Condition()
        self._listeners = 0
        self._wanted_at = 0.0
        self._loop: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def graph(self) -> dict[str, Any]:
        if self._graph is None:
            self._graph = graph_of(self.app)
        return self._graph

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self._index)
        router.add_static("/static/", STATIC, append_version=False)
        router.add_get("/api/graph", self._api_graph)
        router.add_get("/api/snapshot", self._api_snapshot)
        router.add_get("/api/events", self._api_events)
        router.add_get("/api/lookup", self._api_lookup)

    async def close(self) -> None:
        self._closing = True
        async with self._fresh:
            self._fresh.notify_all()
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop
            self._loop = None
        if self._view is not None:
            await self._view.close()

    # -- the refresh loop -----------------------------------------------------------------------

    def _want(self) -> None:
        self._wanted_at = time.monotonic()
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._refresh(), name="streamkit-dashboard")

    async def _refresh(self) -> None:
        if self._view is None:
            self._view = AppView(self.app, self.settings, self.graph, self.local)
        view = self._view
        try:
            while not self._closing and (
                self._listeners or time.monotonic() - self._wanted_at < LINGER
            ):
                started = time.monotonic()
                try:
                    snapshot = await view.collect()
                except Exception as exc:  # shown on the page, retried
                    log.debug("dashboard refresh failed", exc_info=True)
                    snapshot = {"at": time.time(), "app": self.app.id, "errors": [repr(exc)]}
                async with self._fresh:
                    self._seq += 1
                    self.snapshot = {**snapshot, "seq": self._seq}
                    self._fresh.notify_all()
                await asyncio.sleep(max(0.05, REFRESH - (time.monotonic() - started)))
        finally:
            await view.close()

    async def _next(self, after: int) -> dict[str, Any] | None:
        async with self._fresh:
            await self._fresh.wait_for(lambda: self._closing or self._seq > after)
        return None if self._closing else self.snapshot

    # -- handlers -------------------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def _api_graph(self, request: web.Request) -> web.Response:
        return _json(self.graph)

    async def _api_snapshot(self, request: web.Request) -> web.Response:
        self._want()
        snapshot = self.snapshot
        if snapshot is None:
            snapshot = await asyncio.wait_for(self._next(0), 30)
        return _json(snapshot)

    async def _api_events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        self._listeners += 1
        self._want()
        try:
            seq = 0
            if self.snapshot is not None:
                seq = self.snapshot["seq"]
                await response.write(_event(self.snapshot))
            while not self._closing:
                snapshot = await self._next(seq)
                if snapshot is None:
                    break
                seq = snapshot["seq"]
                await response.write(_event(snapshot))
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self._listeners -= 1
            self._wanted_at = time.monotonic()
        return response

    async def _api_lookup(self, request: web.Request) -> web.Response:
        table, key = request.query.get("table", ""), request.query.get("key", "")
        window = request.query.get("window", "")
        if not (table or window) or not key:
            return _json({"error": "give table= (or window=) and key="}, status=400)
        endpoints = await self._endpoints()
        if not endpoints:
            return _json({"error": "no worker with an HTTP endpoint is running"}, status=503)
        kind, name = ("windows", window) if window else ("tables", table)
        path = f"/{kind}/{quote(name, safe='')}/{quote(key, safe='')}"
        problems = []
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
            headers=webauth.auth_headers(self.settings),
        ) as session:
            for endpoint in endpoints:
                try:
                    async with session.get(f"http://{endpoint}{path}") as resp:
                        return _json(orjson.loads(await resp.read()), status=resp.status)
                except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                    problems.append(f"{endpoint}: {exc!r}")
        return _json({"error": "; ".join(problems)}, status=502)

    async def _endpoints(self) -> list[str]:
        if self.local is not None and self.local.endpoint:
            return [self.local.endpoint]
        snapshot = self.snapshot or {}
        members = snapshot.get("group", {}).get("members", [])
        found = [m["endpoint"] for m in members if m.get("endpoint")]
        if found:
            return found
        return await live_endpoints(self.app)


def _event(snapshot: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(snapshot) + b"\n\n"


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


async def serve(app: App, settings: Settings, host: str, port: int) -> None:
    """`streamkit dashboard`: serve the page until cancelled (SIGINT)."""
    dashboard = Dashboard(app, settings)
    web_app = web.Application(middlewares=webauth.middlewares(settings))
    dashboard.add_routes(web_app.router)
    runner = web.AppRunner(web_app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    print(f"dashboard of {app.id}: http://{bound[0]}:{bound[1]}/", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await dashboard.close()
        await runner.cleanup()
