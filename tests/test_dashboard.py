"""The dashboard in a real browser (headless Chromium over the DevTools protocol) against two
real worker processes on the real broker: the graph's nodes, a rate that moves, the hot
partition and the hot key marked, a dead letter with its reason and source coordinates, the
table lookup; the same page at `/` of a worker. Screenshots go to docs/."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamkit.dashboard.graph import graph_of
from tests.cdp import Browser, Page, find_chromium
from tests.kafkahelp import ROOT, WorkerProcess, bootstrap, wait_until
from tests.test_ops import get, http_endpoint, worker

HOT_PARTITION = 2
DOCS = ROOT / "docs"


@contextlib.asynccontextmanager
async def feeding(uid: str) -> AsyncIterator[None]:
    """Purchases at about 200/s until the block ends: three in four to partition 2, half of
    them by the user "whale"; and one record that is not JSON (a dead letter)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5)
    await producer.start()
    topic = f"ops-in-{uid}"
    await producer.send_and_wait(topic, b"{not json", partition=0)

    async def run() -> None:
        i = 0
        while True:
            for _ in range(20):
                user = "whale" if i % 2 else f"u{i % 40}"
                partition = HOT_PARTITION if i % 4 else (i // 4) % 4
                value = orjson.dumps({"user": user, "amount": 1})
                await producer.send(topic, value, partition=partition)
                i += 1
            await asyncio.sleep(0.1)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()


def dashboard_process(uid: str, log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamkit.cli", "dashboard", "tests.opsapp:app", "--port", "0"],
        env={**os.environ, "SKTEST_ID": uid},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


async def js(page: Page, expression: str) -> Any:
    return await page.evaluate(expression)


def node_ids(page: Page) -> Any:
    return js(page, "Array.from(document.querySelectorAll('#graph g.node')).map(g => g.dataset.id)")


async def stage_rate(page: Page, stage: str) -> float | None:
    value = await js(
        page, f"document.querySelector('#graph g.node[data-id=\"stage:{stage}\"]').dataset.rate"
    )
    return None if value is None else float(value)


@pytest.mark.slow
async def test_dashboard_in_a_browser(tmp_path: Path) -> None:
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH: `make test` installs Debian's package (apt, as root)")
    uid = uuid.uuid4().hex[:8]
    os.environ["SKTEST_ID"] = uid  # graph_of below loads the same app as the workers
    sys.modules.pop("tests.opsapp", None)
    from tests import opsapp

    expected = {n["id"] for n in graph_of(opsapp.app)["nodes"]}
    workers: list[WorkerProcess] = [worker(uid, tmp_path, n).start() for n in ("a", "b")]
    dash = dashboard_process(uid, tmp_path / "dashboard.log")
    browser = await Browser(chromium).start()
    try:
        endpoints = [await http_endpoint(w) for w in workers]
        assert all(endpoints), [w.log() for w in workers]
        log = tmp_path / "dashboard.log"
        await wait_until(lambda: "http://" in log.read_text(), within=60, what="the dashboard")
        url = re.search(r"(http://\S+)", log.read_text())
        assert url is not None
        async with feeding(uid):
            page = await browser.page()
            await page.goto(url.group(1))
            # the graph: every node graph_of names, drawn
            await wait_until(lambda: _has_nodes(page, expected), within=30, what="graph nodes")
            assert set(await node_ids(page)) == expected
            for node in (
                f"stage:ops-in-{uid}",  # stages are named after their first input
                "stage:by-user",
                f"topic:ops-in-{uid}",
                f"topic:ops-{uid}-by-user-repartition",
                "table:totals",
                f"topic:ops-out-{uid}",
                f"topic:ops-{uid}-dlq",
            ):
                assert node in expected
            # a rate that moves: positive, then another positive value
            rates: list[float] = []

            async def rate_moved() -> bool:
                rate = await stage_rate(page, f"ops-in-{uid}")
                if rate:
                    rates.append(rate)
                return len({r for r in rates if r > 0}) >= 2

            await wait_until(rate_moved, within=60, what="the first stage rate", every=0.5)
            # records written to the sink, per second, on its node
            sink = f"document.querySelector('#graph g.node[data-id=\"topic:ops-out-{uid}\"]')"
            await wait_until(
                lambda: js(page, f"Number({sink}.dataset.rate) > 0"),
                within=30,
                what="the sink's rate",
                every=0.5,
            )
            # the hot partition marked, in the table and in the graph, and only it
            hot_row = (
                f'document.querySelector(\'#partitions tr[data-topic="ops-in-{uid}"]'
                f'[data-partition="{HOT_PARTITION}"]\')'
            )
            await wait_until(
                lambda: js(page, f"{hot_row} !== null && {hot_row}.classList.contains('hot')"),
                within=60,
                what="partition 2 marked hot",
                every=0.5,
            )
            hot_rows = f'#partitions tr.hot[data-topic="ops-in-{uid}"]'
            hot = await js(
                page,
                f"Array.from(document.querySelectorAll('{hot_rows}'))"
                ".map(r => Number(r.dataset.partition))",
            )
            assert hot == [HOT_PARTITION]
            bar = (
                f'document.querySelector(\'#graph g.node[data-id="stage:ops-in-{uid}"] '
                f"rect.pbar[data-partition=\"{HOT_PARTITION}\"]').classList.contains('hot')"
            )
            assert await js(page, bar)
            assert await js(
                page,
                f"document.querySelector('#graph g.node[data-id=\"stage:ops-in-{uid}\"]')"
                ".classList.contains('hot')",
            )
            # the hot key, and the dead letter with its reason and where it came from
            await wait_until(
                lambda: js(page, "document.querySelector('#hot').textContent.includes('whale')"),
                within=30,
                what="the hot key",
            )
            letter = "document.querySelector('#letters .letter[data-type=\"DecodeError\"]')"
            await wait_until(lambda: js(page, f"{letter} !== null"), within=30, what="the DLQ")
            text = await js(page, f"{letter}.textContent")
            assert f"from ops-in-{uid}[0]@0" in text, text
            await wait_until(
                lambda: js(
                    page,
                    "document.querySelector('#letters').textContent"
                    ".includes('1 dead letters counted')",
                ),
                within=30,
                what="the dead letter counted",
            )
            # checkpoints over time (bars), both workers' rebalances, the state per partition
            await wait_until(
                lambda: js(page, "document.querySelectorAll('#checkpoint-chart rect').length > 2"),
                within=30,
                what="checkpoint bars",
            )
            rebalanced = await js(
                page,
                "Array.from(new Set(Array.from(document.querySelectorAll("
                "'#rebalances tbody td:first-child')).map(td => td.textContent)))",
            )
            assert len(rebalanced) == 2, rebalanced  # both workers got an assignment
            assert await js(page, "document.querySelectorAll('#state tbody tr').length") == 4
            # the table lookup box: the whale's total, served by its owner
            await js(
                page,
                "document.getElementById('lookup-table').value = 'table=totals';"
                "document.getElementById('lookup-key').value = 'whale';"
                "document.querySelector('#lookup button').click(); true",
            )
            await wait_until(
                lambda: js(
                    page,
                    "document.getElementById('lookup-result').textContent.includes('served_by')",
                ),
                within=30,
                what="the lookup answer",
            )
            answer = orjson.loads(
                await js(page, "document.getElementById('lookup-result').textContent")
            )
            assert answer["found"] and answer["key"] == "whale" and answer["value"] > 0
            # the docs' picture is redrawn on request only: a test run leaves the tree clean
            shot = DOCS if os.environ.get("REDRAW_DOCS") else tmp_path
            await page.screenshot(shot / "dashboard.png")

            # the same page at / of a worker
            worker_page = await browser.page()
            await worker_page.goto(f"http://{endpoints[1]}/")
            await wait_until(
                lambda: _has_nodes(worker_page, expected), within=30, what="worker page graph"
            )
            await wait_until(
                lambda: js(worker_page, "(window.LAST_SNAPSHOT?.group?.members?.length || 0) == 2"),
                within=30,
                what="both members on the worker's page",
            )
            code, graph = await get(str(endpoints[0]), "/api/graph")
            assert code == 200 and {n["id"] for n in graph["nodes"]} == expected
            # a page listening to a worker's events does not hold up its shutdown
            workers[1].signal(signal.SIGTERM)
            assert await asyncio.to_thread(workers[1].wait, 20) == 0, workers[1].log()
        for w in workers:
            assert " ERROR " not in w.log(), w.log()
    finally:
        await browser.close()
        dash.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            dash.wait(15)
        for w in workers:
            w.stop()


async def _has_nodes(page: Page, expected: set[str]) -> bool:
    with contextlib.suppress(Exception):
        return set(await node_ids(page)) == expected
    return False
