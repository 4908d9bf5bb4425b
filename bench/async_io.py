"""map_async: an enrichment stage calling an HTTP service that answers in 20 ms.

    python -m bench.async_io [--concurrency 1,8,64] [--events 300,2000,10000]
                             [--partitions 1] [--latency-ms 20] [--commit-interval 0.1]
                             [--json PATH] [--smoke]

A local aiohttp server (its own process, so it does not share the worker's event loop) answers
`GET /customer/{id}` after `--latency-ms`. For each concurrency, in one invocation against one
broker, a fresh exactly-once worker runs

    app.stream(orders).map_async(enrich, concurrency=C).to(enriched)

where `enrich` fetches the order's customer over one keep-alive `aiohttp.ClientSession`. The
orders are keyed by customer (one customer's calls never overlap; 5,000 customers). The clock
starts when the worker holds its partitions, just before the N orders are produced, and stops
when a read_committed reader has N outputs and the group's committed offsets reach the input's
end. Then the output is read to its end offsets (read_committed) and checked: each order
exactly once, with its customer's answer, each customer's orders in their order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

import streamkit as sk
from bench.common import Cluster, bootstrap
from bench.exactly_once import Reader, run_worker_until
from streamkit.runtime.worker import Worker

CUSTOMERS = 5_000
SMOKE = {"concurrency": [1, 8], "events": [40, 160]}


# -- the service --------------------------------------------------------------------------------


def tier(customer: int) -> str:
    return ("bronze", "silver", "gold")[customer * 7919 % 3]


def serve(port: int, latency: float) -> None:
    """The enrichment service (run in its own process)."""

    async def customer(request: web.Request) -> web.Response:
        await asyncio.sleep(latency)
        cid = int(request.match_info["id"])
        return web.json_response({"id": cid, "tier": tier(cid)})

    app = web.Application()
    app.router.add_get("/customer/{id}", customer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_serving(url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(f"{url}/customer/1") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the enrichment service at {url} did not start")
            await asyncio.sleep(0.1)


# -- the pipeline ---------------------------------------------------------------------------------


class Enricher:
    """`enrich(order)`: the order with its customer's tier, fetched over one session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: aiohttp.ClientSession | None = None
        self.__name__ = "enrich"

    async def __call__(self, order: dict[str, Any]) -> dict[str, Any]:
        if self.session is None:  # made in the worker's event loop, on first use
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with self.session.get(f"{self.url}/customer/{order['customer']}") as resp:
            resp.raise_for_status()
            customer = orjson.loads(await resp.read())
        return {**order, "tier": customer["tier"]}

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


def enrichment_app(
    uid: str,
    source: str,
    output: str,
    partitions: int,
    concurrency: int,
    enrich: Enricher,
    commit_interval: float,
    workdir: Path,
) -> sk.App:
    app = sk.App(
        f"bio-{uid}",
        workdir=workdir,  # stateless: only the worker's own files
        processing_guarantee="exactly_once",
        commit_interval=commit_interval,
    )
    src = app.topic(source, partitions=partitions)
    out = app.topic(output, partitions=partitions)
    app.stream(src).map_async(enrich, concurrency=concurrency).to(out)
    return app


def orders(n: int, seed: int) -> list[dict[str, Any]]:
    return [{"i": i, "customer": (i * 2654435761 + seed) % CUSTOMERS} for i in range(n)]


async def produce(topic: str, rows: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5, acks="all")
    await producer.start()
    try:
        for row in rows:
            await producer.send(topic, orjson.dumps(row), key=str(row["customer"]).encode())
        await producer.flush()
    finally:
        await producer.stop()


async def read_to_end(topic: str, partitions: int) -> list[Any]:
    """Every committed record of `topic`, up to its end offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap(), isolation_level="read_committed", group_id=None
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Any] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


def check(records: list[Any], rows: list[dict[str, Any]]) -> str:
    """'' when the output is exact, else what is wrong."""
    seen: dict[int, int] = defaultdict(int)
    per_customer: dict[int, list[int]] = defaultdict(list)
    for r in records:
        v = orjson.loads(r.value)
        seen[v["i"]] += 1
        if v["tier"] != tier(v["customer"]) or r.key != str(v["customer"]).encode():
            return f"order {v['i']}: wrong enrichment or key"
        per_customer[v["customer"]].append(v["i"])
    missing = [i for i in range(len(rows)) if not seen.get(i)]
    twice = [i for i, n in seen.items() if n > 1]
    if missing or twice or len(seen) != len(rows):
        return f"{len(missing)} missing, {len(twice)} more than once"
    if any(seq != sorted(seq) for seq in per_customer.values()):
        return "a customer's orders out of order"
    return ""


async def one_run(
    cluster: Cluster, url: str, concurrency: int, n: int, args: argparse.Namespace
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-async-io-") as workdir:
        return await _one_run(cluster, url, concurrency, n, args, Path(workdir))


async def _one_run(
    cluster: Cluster,
    url: str,
    concurrency: int,
    n: int,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    partitions = args.partitions
    uid = uuid.uuid4().hex[:6]
    source, output = f"bio-in-{uid}", f"bio-out-{uid}"
    await cluster.create_topics([source, output], partitions)
    rows = orders(n, seed=concurrency)
    enrich = Enricher(url)
    app = enrichment_app(
        uid, source, output, partitions, concurrency, enrich, args.commit_interval, workdir
    )
    worker = Worker(app)
    reader = Reader(output)
    reading = asyncio.create_task(reader.run(latency=False))
    timing: dict[str, float] = {}
    committed_all = False

    async def feed() -> None:
        while True:  # the clock starts once the worker holds every partition
            if worker.tasks is not None and len(worker.tasks.tasks) >= partitions:
                break
            await asyncio.sleep(0.02)
        timing["start"] = time.monotonic()
        await produce(source, rows)

    async def watch_commits() -> None:
        nonlocal committed_all
        while not committed_all:
            await asyncio.sleep(0.05)
            if reader.count >= n:
                offsets = await cluster.committed(app.id, source)
                committed_all = sum(offsets.values()) >= n
                if committed_all:
                    timing["end"] = time.monotonic()

    feeding = asyncio.create_task(feed())
    watching = asyncio.create_task(watch_commits())
    try:
        await run_worker_until(worker, lambda: committed_all, within=600)
        await feeding
    finally:
        watching.cancel()
        reading.cancel()
        await asyncio.gather(watching, reading, return_exceptions=True)
        await enrich.close()
    elapsed = timing["end"] - timing["start"]
    problem = check(await read_to_end(output, partitions), rows)
    return {
        "concurrency": concurrency,
        "partitions": partitions,
        "events": n,
        "seconds": elapsed,
        "events_per_s": n / elapsed,
        "exact": not problem,
        "problem": problem,
        "checkpoints": worker.checkpointer.checkpoints if worker.checkpointer else 0,
    }


async def client_alone(url: str, concurrency: int, n: int) -> float:
    """Events/s of the same calls with no Kafka and no streamkit: `concurrency` coroutines
    calling `enrich` one order after the other (the ceiling on this machine, now)."""
    enrich = Enricher(url)
    todo = iter(orders(n, seed=concurrency))

    async def caller() -> None:
        for order in todo:
            await enrich(order)

    started = time.monotonic()
    try:
        await asyncio.gather(*(caller() for _ in range(concurrency)))
    finally:
        await enrich.close()
    return n / (time.monotonic() - started)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = multiprocessing.get_context("spawn").Process(
        target=serve, args=(port, args.latency_ms / 1000), daemon=True
    )
    server.start()
    rows = []
    try:
        await wait_serving(url)
        async with Cluster() as cluster:
            await cluster.warm_up_groups()
            for concurrency, n in zip(args.concurrency, args.events, strict=True):
                row = await one_run(cluster, url, concurrency, n, args)
                row["client_alone_per_s"] = await client_alone(url, concurrency, n)
                row["load_average"] = os.getloadavg()[0]  # the machine is shared: say how much
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        server.terminate()
        server.join(10)
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    base = rows[0]["events_per_s"] if rows else 1.0
    lines = [
        f"Enrichment over HTTP ({args.latency_ms:g} ms per call), exactly-once (commit "
        f"interval {args.commit_interval:g} s), {args.partitions} partition(s), "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        "",
        "| concurrency | events | seconds | events/s | vs concurrency "
        f"{rows[0]['concurrency'] if rows else 1} | exact | the HTTP client alone, events/s "
        "| load average |",
        "|--:|--:|--:|--:|--:|---|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['events']:,} | {r['seconds']:.1f} "
            f"| {r['events_per_s']:,.0f} | {r['events_per_s'] / base:.1f}x "
            f"| {'yes' if r['exact'] else 'NO: ' + r['problem']} "
            f"| {r['client_alone_per_s']:,.0f} | {r['load_average']:.1f} |"
        )
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", type=_ints, default=[1, 8, 64])
    parser.add_argument("--events", type=_ints, default=[300, 2000, 10000])
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--commit-interval", type=float, default=0.1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny N, exit 1 unless exact")
    args = parser.parse_args(argv)
    if args.smoke:
        args.concurrency, args.events = SMOKE["concurrency"], SMOKE["events"]
    if len(args.concurrency) != len(args.events):
        parser.error("--concurrency and --events need as many values")
    rows = asyncio.run(run(args))
    print(markdown(rows, args))
    if args.json is not None:
        meta = {k: v for k, v in vars(args).items() if k not in ("json", "smoke")}
        args.json.write_text(json.dumps({"args": meta, "rows": rows}, indent=1) + "\n")
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
