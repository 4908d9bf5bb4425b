"""WebServer: a worker's HTTP endpoint (aiohttp): /metrics, /status, /tables, the dashboard.

- `GET /metrics`: Prometheus text from the worker's own registry (`runtime/metrics.py`).
- `GET /status`: JSON: app, worker, group member id, owned partitions with their lag, per-stage
  rates, the last checkpoint, the guarantee. Only the bootstrap host list of the broker
  settings is shown, never anything else from them.
- `GET /tables`: the queryable tables. `GET /tables/{name}/{key}`: one key, answered by the
  worker owning its partition: asked elsewhere, the request is proxied there (one hop at most,
  using the partition → endpoint map the group's assignor hands every member).
  `GET /tables/{name}?prefix=&limit=`: a scan over every partition, each asked of its owner.
  A query is only ever proxied to an endpoint of a member of the current assignment.
- `GET /windows/{name}/{key}?from=&to=`: the open windows of one key in a window table (their
  results and accumulators), or with a timer set's name (or `/timers/{name}/{key}`) its
  pending timers; routed like `/tables/{name}/{key}`, which answers the same for them.
- `GET /`: the dashboard of the whole app (`streamkit/dashboard`), with `/api/...` behind it.
- With `web_token` set, every request needs the bearer token (`runtime/webauth.py`).

The server binds before the worker joins the group (its port, possibly picked by the OS, is
advertised in the member metadata). `run` is the worker's named background task `web`: it
samples the per-stage rates every second and looks at the tasks' busy time ten times a second;
cancelling it stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
import orjson
from aiohttp import web
from aiokafka.structs import TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamkit.dashboard.server import Dashboard
from streamkit.runtime import webauth, window_query
from streamkit.runtime.activity import state_bytes
from streamkit.runtime.metrics import WorkerMetrics
from streamkit.settings import ConfigError, parse_bootstrap
from streamkit.state import queries
from streamkit.state.queries import QueryError
from streamkit.state.ttl import visible
from streamkit.state.versioned_table import versioned_answer

if TYPE_CHECKING:
    from streamkit.runtime.worker_view import WorkerView

log = logging.getLogger(__name__)

FORWARDED = "X-Streamkit-Forwarded"  # set on a proxied request: never proxy it again
PROXY_TIMEOUT = 10.0
DEFAULT_LIMIT = 100


class WebServer:
    def __init__(self, worker: WorkerView) -> None:
        self.worker = worker
        self.metrics = WorkerMetrics(worker)
        self.endpoint = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.dashboard = Dashboard(worker.app, worker.settings, local=self)

    async def start(self) -> str:
        """Bind (port 0: a free one) and return the advertised `host:port`."""
        settings = self.worker.settings
        app = web.Application(middlewares=webauth.middlewares(settings))
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        app.router.add_get("/status/live", self._live)
        app.router.add_get("/status/ready", self._ready)
        app.router.add_get("/tables", self._tables)
        app.router.add_get("/tables/{name}", self._scan)
        app.router.add_get("/tables/{name}/{key:.+}", self._get)
        app.router.add_get("/windows/{name}/{key:.+}", self._window)
        app.router.add_get("/timers/{name}/{key:.+}", self._window)
        self.dashboard.add_routes(app.router)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=2.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.web_host, settings.web_port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(
                f"cannot serve HTTP on {settings.web_host}:{settings.web_port} ({exc}): set "
                "web_port (STREAMKIT_WEB_PORT) to a free port or 0 for any, or "
                "web_enabled=false (STREAMKIT_WEB_ENABLED)"
            ) from None
        port = self._runner.addresses[0][1]
        host = settings.web_advertised_host or settings.web_host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        self.endpoint = f"{host}:{port}"
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=PROXY_TIMEOUT),
            headers=webauth.auth_headers(settings),
        )
        log.info("http endpoint http://%s (dashboard, metrics, status, tables)", self.endpoint)
        return self.endpoint

    async def run(self) -> None:
        """The `web` background task: sample rates until cancelled, then stop serving."""
        try:
            looks = 0
            while True:
                self.metrics.activity.look()
                if looks % 10 == 0:
                    self.metrics.sample()
                looks += 1
                await asyncio.sleep(0.1)
        finally:
            await self.close()

    async def close(self) -> None:
        await self.dashboard.close()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- /metrics, /status ----------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.Response:
        await self.metrics.refresh_lag()
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status(self, request: web.Request) -> web.Response:
        return _json(await self.status())

    async def _live(self, request: web.Request) -> web.Response:
        """Liveness: the server answers and the worker is not stopping."""
        if self.worker.stopping:
            return _json({"live": False, "why": "stopping"}, status=503)
        return _json({"live": True})

    async def _ready(self, request: web.Request) -> web.Response:
        """Readiness: a member of the group, and no task of this worker restoring state."""
        assignor: Any = self.worker.assignor
        if assignor is None or assignor.member_id is None:
            return _json({"ready": False, "why": "not in the group yet"}, status=503)
        tasks = self.worker.tasks.tasks.values() if self.worker.tasks else ()
        restoring = sum(1 for t in tasks if t.status.value in ("created", "restoring"))
        if restoring:
            return _json({"ready": False, "why": f"{restoring} tasks restoring"}, status=503)
        return _json({"ready": True})

    async def status(self) -> dict[str, Any]:
        worker = self.worker
        settings = worker.settings
        lag = await self.metrics.refresh_lag()
        assignor: Any = worker.assignor
        events_in = self.metrics.events_in()
        activity = self.metrics.activity
        part_rates = activity.partition_rates()
        assigned = []
        tables = []
        for tp, task in sorted((worker.tasks.tasks if worker.tasks else {}).items()):
            key = (tp.topic, tp.partition)
            busy, backpressured = activity.busy(key)
            size = state_bytes(task)
            assigned.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "stage": task.stage.name,
                    "state": task.status.value,
                    "events_in": events_in.get(key, 0),
                    "rate": round(part_rates.get(key, 0.0), 3),
                    "busy": busy,
                    "backpressured": backpressured,
                    "buffered": task.buffered,
                    "committable": task.committable,
                    "lag": lag.get(tp),
                    "state_bytes": size,
                }
            )
            for name, part in task.tables.items():
                tables.append(
                    {
                        "table": name,
                        "partition": tp.partition,
                        "cached": len(part.cache),
                        "dirty": len(part.dirty),
                        "store_bytes": size,
                    }
                )
        dead_letters, events_out = self.metrics.dead_letters(), self.metrics.events_out()
        app_windows = worker.app.windows
        rates = self.metrics.stage_rates()
        totals = self.metrics.stage_totals()
        checkpointer = worker.checkpointer
        last_at = None if checkpointer is None else checkpointer.last_at
        return {
            "app": worker.app.id,
            "worker": worker.client_id,
            "member_id": None if assignor is None else assignor.member_id,
            "endpoint": self.endpoint,
            "guarantee": settings.processing_guarantee,
            "broker": broker_hosts(settings.bootstrap_servers),
            "assigned": assigned,
            "standbys": sorted(
                [tp.topic, tp.partition] for tp in (assignor.standbys if assignor else ())
            ),
            "stages": {
                name: {"events_in": totals[name], "rate": round(rates.get(name, 0.0), 3)}
                for name in sorted(totals)
            },
            "last_checkpoint": {
                "at": last_at,
                "age_s": None if last_at is None else round(time.time() - last_at, 3),
                "duration_s": None if checkpointer is None else checkpointer.last_duration,
                "count": 0 if checkpointer is None else checkpointer.checkpoints,
                "commit_failures": 0 if checkpointer is None else checkpointer.commit_failures,
            },
            "group": {} if assignor is None else assignor.members,
            "tables": tables,
            "checkpoints": list(activity.checkpoints),
            "rebalances": list(activity.rebalances),
            "dead_letters": [[t, p, n] for (t, p), n in sorted(dead_letters.items())],
            "late_events": {name: wt.late_events for name, wt in sorted(app_windows.items())},
            "events_out": [[t, p, n] for (t, p), n in sorted(events_out.items())],
        }

    # -- /tables --------------------------------------------------------------------------------

    async def _tables(self, request: web.Request) -> web.Response:
        app = self.worker.app
        found = {}
        for name in queries.queryable(app):
            with contextlib.suppress(QueryError):
                stage = queries.table_stage(app, name)
                found[name] = {"stage": stage.name, "partitions": stage.source.partitions}
        return _json({"tables": found})

    async def _get(self, request: web.Request) -> web.Response:
        name, text = request.match_info["name"], request.match_info["key"]
        app = self.worker.app
        if name in app.windows or name in app.timers:
            return await self._window(request)  # a window table's or timer set's key
        try:
            stage = queries.table_stage(app, name)
            table = app.tables[name]
            key = queries.parse_key(table, text)
        except QueryError as exc:
            return _error(404, str(exc))
        partitions = stage.source.partitions or 1
        partition = queries.key_partition(table, key, partitions)
        tp = TopicPartition(stage.source.name, partition)
        part = self._local_partition(tp, name)
        versioned = table.versioned
        as_of = request.query.get("as_of")
        if as_of is not None and not as_of.lstrip("-").isdigit():
            return _error(400, f"as_of={as_of!r}: epoch milliseconds, a whole number")
        if part is not None and versioned is not None:  # the key's versions, or one as of
            body = versioned_answer(versioned.partition(part), key, as_of)
            body = {k: queries.jsonable(v) for k, v in body.items()}
            body.update(partition=partition, served_by=self.worker.client_id)
            return _json(body, status=200 if body["found"] else 404)
        if part is not None:
            found, value = part.peek(key)
            if found:
                found, value = visible(part, value)  # a table with a TTL: unstamped, live
            return _json(
                {
                    "table": name,
                    "key": queries.jsonable(key),
                    "partition": partition,
                    "found": found,
                    "value": queries.jsonable(value),
                    "served_by": self.worker.client_id,
                    "endpoint": self.endpoint,
                },
                status=200 if found else 404,
            )
        path = f"/tables/{quote(name, safe='')}/{quote(text, safe='')}"
        return await self._forward(request, tp, path, {} if as_of is None else {"as_of": as_of})

    async def _window(self, request: web.Request) -> web.Response:
        """The open windows of a key in a window table (`?from=&to=`: window starts, epoch
        ms, inclusive), or its pending timers in a timer set, asked of (or proxied to) the
        owner of the key's partition."""
        name, text = request.match_info["name"], request.match_info["key"]
        app = self.worker.app
        try:
            stage = window_query.window_stage(app, name)
        except QueryError as exc:
            return _error(404, str(exc))
        try:
            lo, hi = window_query.parse_range(dict(request.query))
        except QueryError as exc:
            return _error(400, str(exc))
        key = window_query.parse_key(stage, text)
        partition = window_query.key_partition(stage, key, stage.source.partitions or 1)
        tp = TopicPartition(stage.source.name, partition)
        wt = app.windows.get(name)
        part = self._local_partition(tp, name if wt is None else wt.table.name)
        if part is None:
            path = f"/windows/{quote(name, safe='')}/{quote(text, safe='')}"
            return await self._forward(request, tp, path, dict(request.query))
        body: dict[str, Any] = {"key": queries.jsonable(key), "partition": partition}
        if wt is None:
            timers = window_query.timers_of(part, key)
            body.update(timers=name, found=bool(timers), pending=timers)
        else:
            windows = window_query.windows_of(wt, part, key, lo, hi)
            body.update(window=name, kind=str(wt.kind), aggregation=wt.aggregation.name)
            body.update(found=bool(windows), windows=windows)
        body.update(served_by=self.worker.client_id, endpoint=self.endpoint)
        return _json(body, status=200 if body["found"] else 404)

    async def _scan(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        app = self.worker.app
        try:
            stage = queries.table_stage(app, name)
            limit = int(request.query.get("limit", DEFAULT_LIMIT))
        except QueryError as exc:
            return _error(404, str(exc))
        except ValueError:
            return _error(400, f"limit {request.query.get('limit')!r} is not a number")
        if not 0 < limit <= queries.MAX_SCAN:
            return _error(400, f"limit must be between 1 and {queries.MAX_SCAN}")
        prefix = request.query.get("prefix", "")
        partitions = range(stage.source.partitions or 1)
        local_only = FORWARDED in request.headers
        rows: list[dict[str, Any]] = []
        covered: list[int] = []
        missing: dict[int, str] = {}
        remote: dict[str, list[int]] = {}
        for p in partitions:
            tp = TopicPartition(stage.source.name, p)
            part = self._local_partition(tp, name)
            if part is not None:
                for row in await queries.scan(part, prefix, limit):
                    rows.append(_row(row.key, row.value, row.partition))
                covered.append(p)
                continue
            if local_only:
                continue
            endpoint = self._owner(tp)
            if endpoint is None:
                missing[p] = "no owner known (rebalancing?)"
            else:
                remote.setdefault(endpoint, []).append(p)
        params = {"prefix": prefix, "limit": str(limit)}
        answers = await asyncio.gather(
            *(self._fetch(ep, f"/tables/{quote(name, safe='')}", params) for ep in remote),
            return_exceptions=True,
        )
        for (endpoint, wanted), answer in zip(remote.items(), answers, strict=True):
            if isinstance(answer, BaseException) or answer[0] != 200:
                why = repr(answer) if isinstance(answer, BaseException) else answer[1]
                for p in wanted:
                    missing[p] = f"{endpoint}: {why}"
                continue
            data = answer[1]
            got = set(data.get("partitions", []))
            rows.extend(r for r in data.get("items", []) if r.get("partition") in wanted)
            covered.extend(p for p in wanted if p in got)
            for p in wanted:
                if p not in got:
                    missing[p] = f"{endpoint} no longer owns it"
        rows.sort(key=lambda r: orjson.dumps(r["key"]))
        body = {
            "table": name,
            "prefix": prefix,
            "items": rows[:limit],
            "partitions": sorted(covered),
            "missing": {str(p): why for p, why in sorted(missing.items())},
        }
        return _json(body, status=200 if not missing or local_only else 206)

    def _local_partition(self, tp: TopicPartition, table: str) -> Any:
        manager = self.worker.tasks
        task = None if manager is None else manager.tasks.get(tp)
        if task is None:
            return None
        return task.tables.get(table)  # empty while the task restores

    def _owner(self, tp: TopicPartition) -> str | None:
        """The endpoint serving `tp`, if another member of the current assignment."""
        assignor: Any = self.worker.assignor
        endpoint = None if assignor is None else assignor.endpoints.get(tp)
        if endpoint is None or endpoint == self.endpoint:
            return None
        return endpoint if endpoint in self.peers() else None

    def peers(self) -> set[str]:
        """The HTTP endpoints of the members of the current assignment (this one included)."""
        assignor: Any = self.worker.assignor
        members = {} if assignor is None else assignor.members
        return {ep for ep in members.values() if ep}

    async def _forward(
        self, request: web.Request, tp: TopicPartition, path: str, params: dict[str, str]
    ) -> web.Response:
        where = f"{tp.topic}[{tp.partition}]"
        if FORWARDED in request.headers:
            return _error(503, f"{where} is not served here any more (rebalancing?); retry")
        endpoint = self._owner(tp)
        if endpoint is None:
            return _error(503, f"no worker serves {where} right now (restoring or rebalancing)")
        try:
            status, body = await self._fetch(endpoint, path, params)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _error(502, f"the owner of {where} at {endpoint} did not answer: {exc!r}")
        return _json(body, status=status)

    async def _fetch(self, endpoint: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
        assert self._session is not None
        if endpoint not in self.peers():  # never proxy anywhere else
            raise aiohttp.ClientError(f"{endpoint} is not a member of the current assignment")
        url = f"http://{endpoint}{path}"
        async with self._session.get(url, params=params, headers={FORWARDED: "1"}) as resp:
            return resp.status, orjson.loads(await resp.read())


def broker_hosts(bootstrap: str) -> list[str]:
    """The broker's `host:port` list, with anything that looks like credentials cut off."""
    try:
        servers = parse_bootstrap(bootstrap)
    except ValueError:
        return []
    return [s.rpartition("@")[2] for s in servers]


def _row(key: Any, value: Any, partition: int) -> dict[str, Any]:
    return {"key": queries.jsonable(key), "value": queries.jsonable(value), "partition": partition}


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)
