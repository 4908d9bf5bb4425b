"""AppView: the whole app as the dashboard shows it, gathered while someone watches.

Each `collect()` asks the broker for the group (members, their assignment and HTTP endpoint),
the committed and end offsets (read_committed) of every stage input, and every member's
`/status` (busy time, rates, checkpoints, rebalances, table sizes, dead-letter counts). Every
TAIL_EVERY seconds it also reads the newest records of the dead-letter and late topics
(with their reasons and source coordinates) and of every stage input, whose keys give the hot
keys. It knows the app's graph only through `graph_of`'s JSON (stage inputs, topic roles).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict
from typing import Any, Protocol

import aiohttp
import orjson
from aiokafka.structs import TopicPartition

from streamkit.app import App
from streamkit.clients import make_consumer
from streamkit.runtime import webauth
from streamkit.runtime.admin import describe, open_admin
from streamkit.runtime.dlq import describe as dlq_headers
from streamkit.runtime.group import Group, describe_group
from streamkit.settings import Settings

HTTP_TIMEOUT = 3.0
TAIL_EVERY = 5.0
LATEST = 20  # dead letters and late events shown per topic
HOT_TAIL = 200  # newest records read per input partition for the hot keys
TOP_KEYS = 5
READ_TIMEOUT = 3.0
HISTORY = 200


class LocalServer(Protocol):
    """The worker's own web server, when the dashboard runs inside a worker."""

    endpoint: str

    async def status(self) -> dict[str, Any]: ...


class AppView:
    def __init__(
        self, app: App, settings: Settings, graph: dict[str, Any], local: LocalServer | None
    ) -> None:
        self.app = app
        self.settings = settings
        self.graph = graph
        self.local = local
        self._admin: Any = None
        self._consumer: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._counts: dict[str, int | None] = {}
        self._tails: dict[str, Any] = {"dead_letters": [], "late": [], "hot_keys": []}
        self._tails_at = 0.0
        self._out: tuple[float, dict[str, int]] | None = None
        self._out_rates: dict[str, float] = {}

    # -- clients --------------------------------------------------------------------------------

    async def _open(self) -> None:
        if self._admin is None:
            self._admin = await open_admin(self.settings, f"{self.app.id}-dashboard")
        if self._consumer is None:
            consumer = make_consumer(self.settings, None, f"{self.app.id}-dashboard")
            await consumer.start()
            self._consumer = consumer
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
                headers=webauth.auth_headers(self.settings),
            )

    async def close(self) -> None:
        admin, consumer, session = self._admin, self._consumer, self._session
        self._admin = self._consumer = self._session = None
        for closing in (
            admin.close() if admin else None,
            consumer.stop() if consumer else None,
            session.close() if session else None,
        ):
            if closing is not None:
                with contextlib.suppress(Exception):  # closing a client that broke
                    await closing

    # -- the snapshot ---------------------------------------------------------------------------

    def _topics(self, role: str) -> list[str]:
        nodes = self.graph["nodes"]
        return sorted(n["topic"] for n in nodes if n["kind"] != "stage" and n.get("role") == role)

    async def collect(self) -> dict[str, Any]:
        try:
            await self._open()
            return await self._collect()
        except Exception:
            await self.close()  # reconnect next time
            raise

    async def _collect(self) -> dict[str, Any]:
        stage_of = {n["input"]: n["stage"] for n in self.graph["nodes"] if n["kind"] == "stage"}
        group = await describe_group(self._admin, self.app.id)
        missing = [t for t in stage_of if self._counts.get(t) is None]
        if missing:
            self._counts.update(await describe(self._admin, missing))
        tps = [
            TopicPartition(t, p) for t in sorted(stage_of) for p in range(self._counts.get(t) or 0)
        ]
        committed = await self._admin.list_consumer_group_offsets(self.app.id)
        ends = await self._consumer.end_offsets(tps) if tps else {}
        statuses, errors = await self._statuses(group)
        now = time.time()
        if time.monotonic() - self._tails_at >= TAIL_EVERY:
            self._tails_at = time.monotonic()
            self._tails = await self._read_tails(stage_of)
        counted = self._counted(statuses)
        owners = {tuple(tp): m.client_id for m in group.members for tp in m.assigned}
        reported = {
            (a["topic"], a["partition"]): (s["worker"], a) for s in statuses for a in s["assigned"]
        }
        partitions = []
        for tp in tps:
            meta = committed.get(tp)
            offset = None if meta is None or meta.offset < 0 else meta.offset
            end = ends.get(tp, 0)
            worker, row = reported.get((tp.topic, tp.partition), (None, {}))
            lag = row.get("lag")
            partitions.append(
                {
                    "topic": tp.topic,
                    "partition": tp.partition,
                    "stage": stage_of[tp.topic],
                    "owner": worker or owners.get((tp.topic, tp.partition)),
                    "committed": offset,
                    "end": end,
                    "lag": lag if lag is not None else max(0, end - (offset or 0)),
                    "lag_from": "worker" if lag is not None else "broker",
                    **{
                        k: row.get(k)
                        for k in ("state", "events_in", "rate", "busy", "backpressured")
                    },
                    "state_bytes": row.get("state_bytes"),
                }
            )
        mark_hot(partitions)
        return {
            "at": now,
            "app": self.app.id,
            "group": {
                "state": group.state,
                "members": [
                    {
                        "member_id": m.member_id,
                        "client_id": m.client_id,
                        "host": m.host,
                        "endpoint": m.endpoint,
                        "assigned": m.assigned,
                    }
                    for m in group.members
                ],
            },
            "workers": [_worker_summary(s) for s in statuses],
            "partitions": partitions,
            "stages": _stages(partitions, statuses),
            "topics": self._topic_rates(statuses),
            "topic_partitions": {t: n for t, n in sorted(self._counts.items()) if n is not None},
            "hot_partitions": [p for p in partitions if p["hot"]],
            "checkpoints": _merged(statuses, "checkpoints"),
            "rebalances": _merged(statuses, "rebalances"),
            "tables": [{**t, "worker": s["worker"]} for s in statuses for t in s.get("tables", [])],
            "hot_keys": self._tails["hot_keys"],
            **{
                field: [{**t, "counted": counted.get(t["topic"], 0)} for t in self._tails[field]]
                for field in ("dead_letters", "late")
            },
            "errors": errors,
        }

    async def _statuses(self, group: Group) -> tuple[list[dict[str, Any]], list[str]]:
        async def one(client_id: str, endpoint: str | None) -> dict[str, Any] | str:
            if not endpoint:
                return f"worker {client_id}: no HTTP endpoint (web_enabled=false)"
            if self.local is not None and endpoint == self.local.endpoint:
                return await self.local.status()
            assert self._session is not None
            try:
                async with self._session.get(f"http://{endpoint}/status") as resp:
                    if resp.status != 200:
                        return f"worker {client_id} at {endpoint}: HTTP {resp.status}"
                    body: dict[str, Any] = orjson.loads(await resp.read())
                    return body
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                return f"worker {client_id} at {endpoint}: unreachable ({exc!r})"

        answers = await asyncio.gather(*(one(m.client_id, m.endpoint) for m in group.members))
        statuses = [a for a in answers if isinstance(a, dict)]
        return statuses, [a for a in answers if isinstance(a, str)]

    def _topic_rates(self, statuses: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
        """Records written per second per destination topic, from the workers' counts of
        acknowledged records (they trail by up to one commit interval)."""
        totals: dict[str, int] = defaultdict(int)
        for s in statuses:
            for topic, _, n in s.get("events_out", []):
                totals[topic] += n
        now = time.monotonic()
        if self._out is not None and now - self._out[0] >= 2.0:
            t0, before = self._out
            self._out_rates = {
                t: max(0, n - before.get(t, 0)) / (now - t0) for t, n in totals.items()
            }
            self._out = (now, dict(totals))
        elif self._out is None:
            self._out = (now, dict(totals))
        return {
            t: {"records_out": n, "rate_out": round(self._out_rates.get(t, 0.0), 3)}
            for t, n in totals.items()
        }

    # -- the newest records: dead letters, late events, hot keys --------------------------------

    def _counted(self, statuses: list[dict[str, Any]]) -> dict[str, int]:
        """Dead letters and late events the running workers counted, per topic."""
        counts: dict[str, int] = defaultdict(int)
        for topic in self._topics("dlq"):
            counts[topic] += sum(n for s in statuses for _, _, n in s.get("dead_letters", []))
        late_topic_of = {}
        window_label = {n["id"]: n["label"] for n in self.graph["nodes"] if n["kind"] == "window"}
        for e in self.graph["edges"]:
            if e["kind"] == "late" and e["from"] in window_label:
                late_topic_of[window_label[e["from"]]] = e["to"].removeprefix("topic:")
        for s in statuses:
            for window, n in s.get("late_events", {}).items():
                counts[late_topic_of.get(window, "?")] += n
        return counts

    async def _read_tails(self, stage_of: dict[str, str]) -> dict[str, Any]:
        tails: dict[str, Any] = {"dead_letters": [], "late": [], "hot_keys": []}
        for role, field in (("dlq", "dead_letters"), ("late", "late")):
            for topic in self._topics(role):
                records = await self._latest(topic, LATEST)
                tails[field].append({"topic": topic, "latest": _letters(records)})
        for topic in sorted(stage_of):
            records = await self._latest(topic, HOT_TAIL)
            tails["hot_keys"].extend(self._top_keys(topic, records))
        return tails

    async def _latest(self, topic: str, per_partition: int) -> list[Any]:
        """The newest committed records of each partition of `topic`, oldest first."""
        if topic not in self._counts or self._counts[topic] is None:
            self._counts.update(await describe(self._admin, [topic]))
        count = self._counts.get(topic) or 0
        if not count:
            return []
        consumer = self._consumer
        tps = [TopicPartition(topic, p) for p in range(count)]
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        starts = {tp: max(begins[tp], ends[tp] - per_partition) for tp in tps}
        wanted = {tp for tp in tps if ends[tp] > starts[tp]}
        if not wanted:
            return []
        consumer.assign(sorted(wanted))
        for tp in wanted:
            consumer.seek(tp, starts[tp])
        records: list[Any] = []
        deadline = time.monotonic() + READ_TIMEOUT
        while wanted and time.monotonic() < deadline:
            batch = await consumer.getmany(*wanted, timeout_ms=200)
            for tp, recs in batch.items():
                records.extend(r for r in recs if r.offset < ends[tp])
            for tp in list(wanted):
                if await consumer.position(tp) >= ends[tp]:
                    wanted.discard(tp)
        records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
        return records

    def _top_keys(self, topic: str, records: list[Any]) -> list[dict[str, Any]]:
        keys = Counter(r.key for r in records if r.key is not None)
        total = sum(keys.values())
        if not total:
            return []
        declared = self.app.topics.get(topic)
        even = 1 / len(keys)
        found = []
        for raw, n in keys.most_common(TOP_KEYS):
            share = n / total
            found.append(
                {
                    "topic": topic,
                    "key": _decode_key(declared, raw),
                    "count": n,
                    "of": total,
                    "share": round(share, 4),
                    "hot": len(keys) > 1 and n >= 10 and share >= 3 * even,
                }
            )
        return found


def mark_hot(partitions: list[dict[str, Any]]) -> None:
    """A partition is hot when it takes at least twice its even share of its topic's events/s
    (and the topic moves at all)."""
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in partitions:
        by_topic[p["topic"]].append(p)
    for parts in by_topic.values():
        total = sum(p["rate"] or 0.0 for p in parts)
        for p in parts:
            share = (p["rate"] or 0.0) / total if total > 0 else 0.0
            p["share"] = round(share, 4)
            p["hot"] = len(parts) > 1 and total >= 1.0 and share >= 2 / len(parts)


def _stages(
    partitions: list[dict[str, Any]], statuses: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    stages: dict[str, dict[str, Any]] = {}
    for p in partitions:
        st = stages.setdefault(
            p["stage"],
            {
                "rate": 0.0,
                "events_in": 0,
                "lag": 0,
                "busy": None,
                "backpressured": None,
                "partitions": 0,
                "running": 0,
                "hot": False,
            },
        )
        st["partitions"] += 1
        st["running"] += 1 if p["state"] == "running" else 0
        st["rate"] = round(st["rate"] + (p["rate"] or 0.0), 3)
        st["events_in"] += p["events_in"] or 0
        st["lag"] += p["lag"] or 0
        st["hot"] = st["hot"] or p["hot"]
        for k in ("busy", "backpressured"):
            if p[k] is not None:
                st[k] = max(st[k] or 0.0, p[k])
    return stages


def _worker_summary(status: dict[str, Any]) -> dict[str, Any]:
    return {
        k: status.get(k)
        for k in ("worker", "member_id", "endpoint", "guarantee", "last_checkpoint", "standbys")
    } | {"partitions": len(status.get("assigned", []))}


def _merged(statuses: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    rows = [{**row, "worker": s["worker"]} for s in statuses for row in s.get(field, [])]
    rows.sort(key=lambda r: r["at"])
    return rows[-HISTORY:]


def _decode_key(topic: Any, raw: bytes) -> Any:
    if topic is not None:
        try:
            key = topic.key_codec.loads(raw)
            orjson.dumps(key)
            return key
        except Exception:  # not decodable: show the bytes instead
            pass
    return raw.decode(errors="replace")


def _preview(raw: bytes | None, limit: int = 300) -> str | None:
    return None if raw is None else raw[:limit].decode(errors="replace")


def _letters(records: list[Any]) -> list[dict[str, Any]]:
    """The newest dead letters (or late events), newest first, with reasons and coordinates."""
    rows = []
    for r in records[-LATEST:][::-1]:
        meta = dlq_headers(r.headers or ())
        rows.append(
            {
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": r.timestamp,
                "error": meta.get("streamkit.error"),
                "type": meta.get("streamkit.error.type"),
                "agent": meta.get("streamkit.agent"),
                "source": {
                    "topic": meta.get("streamkit.source.topic"),
                    "partition": meta.get("streamkit.source.partition"),
                    "offset": meta.get("streamkit.source.offset"),
                },
                "key": _preview(r.key),
                "value": _preview(r.value),
            }
        )
    return rows
