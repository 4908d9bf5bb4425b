"""The operations kit against the real broker and real worker processes: `streamkit status`
lag without transaction markers, `dlq show|replay`, `tail`, the bearer token on the worker
endpoints and on the CLI's requests."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from tests.cdp import Browser, find_chromium
from tests.kafkahelp import WorkerProcess, committed, end_offsets, produce, read_all, wait_until
from tests.test_ops import (
    N,
    cli,
    http_endpoint,
    owner_partition,
    produce_purchases,
    worker,
)


async def test_status_lag_does_not_count_transaction_markers(uid: str, tmp_path: Path) -> None:
    w = WorkerProcess(
        "tests.opsapp:app",
        {
            "SKTEST_ID": uid,
            "STREAMKIT_WORKDIR": str(tmp_path / "eo"),
            "STREAMKIT_PROCESSING_GUARANTEE": "exactly_once",
        },
        tmp_path / "eo.log",
    ).start()
    try:
        assert await http_endpoint(w), w.log()
        await produce_purchases(uid)
        await read_all(f"ops-out-{uid}", expect=N, within=90)
        repartition = f"ops-{uid}-by-user-repartition"

        lines: list[str] = []

        async def zero() -> bool:
            result = await asyncio.to_thread(cli, uid, "status", "tests.opsapp:app")
            assert result.returncode == 0, result.stderr
            lines[:] = result.stdout.splitlines()
            return "  total lag 0" in lines

        await wait_until(zero, within=60, what="status to show lag 0", every=1.0)
        rows = [ln.split() for ln in lines if ln.strip().startswith(repartition)]
        assert len(rows) == 4 and all(row[4] == "0" for row in rows), lines
        # while the offsets say otherwise: commit markers sit between committed and end
        done, ends = await committed(f"ops-{uid}", repartition), await end_offsets(repartition)
        assert any(done.get(p, 0) < end for p, end in ends.items()), (done, ends)
        assert all(int(row[2]) < int(row[3]) for row in rows if row[2] != "-"), lines
    finally:
        w.stop()


async def test_dlq_show_replay_and_tail(uid: str, tmp_path: Path) -> None:
    w = worker(uid, tmp_path, "a").start()
    try:
        assert await http_endpoint(w), w.log()
        await produce(f"ops-in-{uid}", [b'{"user": "u1", "amount": 5}', b"{oops"], partition=1)
        dlq = f"ops-{uid}-dlq"
        await read_all(dlq, expect=1, within=60)

        shown = await asyncio.to_thread(cli, uid, "dlq", "show", "tests.opsapp:app", "--json")
        assert shown.returncode == 0, shown.stderr
        (row,) = [orjson.loads(line) for line in shown.stdout.splitlines()]
        assert row["error_type"] == "DecodeError" and "invalid JSON" in row["error"]
        assert row["source"] == {"topic": f"ops-in-{uid}", "partition": "1", "offset": "1"}
        assert row["value"] == "{oops"

        text = await asyncio.to_thread(
            cli, uid, "tail", "tests.opsapp:app", dlq, "--from-beginning", "--limit", "1"
        )
        assert text.returncode == 0, text.stderr
        assert "DecodeError: invalid JSON" in text.stdout
        # a record that fails to decode belongs to no agent: the header names its stage
        assert f"from ops-in-{uid}[1]@1 (agent ops-in-{uid})" in text.stdout

        out = await asyncio.to_thread(
            cli,
            uid,
            "tail",
            "tests.opsapp:app",
            f"ops-out-{uid}",
            "--from-beginning",
            "--limit",
            "1",
            "--json",
        )
        assert out.returncode == 0, out.stderr
        assert orjson.loads(out.stdout)["value"] == {"user": "u1", "total": 5}  # decoded JSON

        # replay: back to ops-in[1], processed again (and dead-lettered again, still broken)
        dry = await asyncio.to_thread(
            cli, uid, "dlq", "replay", "tests.opsapp:app", "--offset", "0", "--dry-run"
        )
        assert f"would send {dlq}[0]@0 -> ops-in-{uid}[1]" in dry.stdout, dry.stderr
        assert len(await read_all(dlq, within=10)) == 1
        sent = await asyncio.to_thread(
            cli, uid, "dlq", "replay", "tests.opsapp:app", "--error-type", "DecodeError"
        )
        assert f"sent {dlq}[0]@0 -> ops-in-{uid}[1]" in sent.stdout, sent.stderr
        await read_all(dlq, expect=2, within=60)
        shown = await asyncio.to_thread(cli, uid, "dlq", "show", "tests.opsapp:app", "--json")
        second = orjson.loads(shown.stdout.splitlines()[1])
        assert second["source"] == {"topic": f"ops-in-{uid}", "partition": "1", "offset": "2"}
        assert second["replay_of"] == f"{dlq}[0]@0"
        none = await asyncio.to_thread(cli, uid, "dlq", "replay", "tests.opsapp:app")
        assert none.returncode == 2 and "choose dead letters" in none.stderr
    finally:
        w.stop()


async def test_window_lookup_on_the_owner(uid: str, tmp_path: Path) -> None:
    w = WorkerProcess(
        "tests.windowapp:app",
        {"SKTEST_ID": uid, "STREAMKIT_WORKDIR": str(tmp_path / "win")},
        tmp_path / "win.log",
    ).start()
    try:
        endpoint = await http_endpoint(w)
        assert endpoint, w.log()
        events = [{"user": "ann", "ts": ts} for ts in (1000, 1001, 1015)]
        events.append({"user": "bob", "ts": 1002})
        await produce(f"win-in-{uid}", [orjson.dumps(e) for e in events])
        found: dict[str, Any] = {}

        async def ann_counted() -> bool:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://{endpoint}/windows/counts/ann") as resp,
            ):
                found.update(await resp.json())
                windows = [(x["at"], x["value"]) for x in found.get("windows", [])]
                # ann's events reach her partition in any order (unkeyed, spread by the producer)
                return resp.status == 200 and windows == [(1_000_000, 2), (1_010_000, 1)]

        await wait_until(ann_counted, within=60, what="ann's two windows and their counts")
        assert found["kind"].startswith("tumbling") and found["aggregation"] == "count"
        async with aiohttp.ClientSession() as session:
            url = f"http://{endpoint}/api/lookup?window=counts&key=bob"
            async with session.get(url) as resp:
                bob = await resp.json()
            assert resp.status == 200 and [x["value"] for x in bob["windows"]] == [1]
            async with session.get(f"http://{endpoint}/windows/counts/nobody") as resp:
                assert resp.status == 404 and (await resp.json())["found"] is False
            async with session.get(f"http://{endpoint}/windows/nope/ann") as resp:
                assert resp.status == 404
        # a late event: `tail` of the late topic says why and where it came from
        await produce(f"win-in-{uid}", [orjson.dumps({"user": "cy", "ts": 1100})])
        await read_all(f"win-out-{uid}", expect=3, within=60)  # the closed windows' finals
        await produce(f"win-in-{uid}", [orjson.dumps({"user": "ann", "ts": 1003})])
        await read_all(f"win-late-{uid}", expect=1, within=60)
        late = await asyncio.to_thread(
            cli,
            uid,
            "tail",
            "tests.windowapp:app",
            f"win-late-{uid}",
            "--from-beginning",
            "--limit",
            "1",
        )
        assert late.returncode == 0, late.stderr
        assert "LateEvent: " in late.stdout and "window table counts" in late.stdout, late.stdout
        assert f"from win-{uid}-by-user-repartition[" in late.stdout, late.stdout
        assert '"user":"ann","ts":1003' in late.stdout, late.stdout  # decoded as the source
    finally:
        w.stop()


async def raw_status(endpoint: str, path: str) -> int:
    """The status of a GET sent as is (an HTTP client would normalize the path)."""
    host, port = endpoint.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    line = await reader.readline()
    writer.close()
    return int(line.split()[1])


async def test_web_token_guards_every_endpoint_and_the_cli_sends_it(
    uid: str, tmp_path: Path
) -> None:
    token = "s3cret-" + uid
    env = {"STREAMKIT_WEB_TOKEN": token}
    workers = []
    for name in ("a", "b"):
        w = worker(uid, tmp_path, name)
        w.env.update(env)
        workers.append(w.start())
    a, b = workers
    try:
        ea, eb = await http_endpoint(a), await http_endpoint(b)
        assert ea and eb, a.log() + b.log()
        for w in workers:
            assert token not in w.log()
        auth = {"Authorization": f"Bearer {token}"}

        async def code(endpoint: str, path: str, headers: dict[str, str] | None = None) -> int:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://{endpoint}{path}", headers=headers or {}) as resp,
            ):
                return resp.status

        for path in ("/status", "/metrics", "/tables/totals/u1", "/api/graph", "/api/snapshot"):
            assert await code(ea, path) == 401
            assert await code(ea, path, {"Authorization": "Bearer wrong"}) == 401
        # the page and its scripts hold no data: a browser loads them without the token
        assert await code(ea, "/") == 200
        assert await code(ea, "/static/dashboard.js") == 200
        assert await raw_status(ea, "/static/../status") == 401  # no way round the token
        assert await raw_status(ea, "/static/%2e%2e/status") == 401
        assert await code(ea, "/status", auth) == 200
        assert await code(ea, f"/api/graph?token={token}") == 200

        async def serving() -> bool:
            async with aiohttp.ClientSession(headers=auth) as session:
                answers = []
                for e in (ea, eb):
                    async with session.get(f"http://{e}/status") as resp:
                        answers.append(await resp.json())
            owned = [
                {x["partition"] for x in s["assigned"] if x["topic"].endswith("-repartition")}
                for s in answers
            ]
            return all(len(s["group"]) == 2 for s in answers) and all(owned)

        await wait_until(serving, within=60, what="both workers serving")

        # the probes answer without the token (and tell nothing else)
        async def ready() -> bool:
            return await code(ea, "/status/ready") == 200 and await code(eb, "/status/ready") == 200

        await wait_until(ready, within=60, what="both workers ready")
        assert await code(ea, "/status/live") == 200
        chromium = find_chromium()
        if chromium is not None:  # the page forwards ?token= to its API calls and events
            browser = await Browser(chromium).start()
            try:
                page = await browser.page()
                await page.goto(f"http://{ea}/?token={token}")
                await wait_until(
                    lambda: page.evaluate(
                        "(window.LAST_SNAPSHOT?.group?.members?.length || 0) == 2"
                        " && document.querySelectorAll('#graph g.node').length > 0"
                    ),
                    within=30,
                    what="the page with the token",
                )
            finally:
                await browser.close()
        expected = await produce_purchases(uid)
        # proxied queries carry the token: every key answered through worker A
        key_partitions = {owner_partition(k) for k in expected}
        assert len(key_partitions) == 4
        async with aiohttp.ClientSession(headers=auth) as session:

            async def all_found() -> bool:
                for key in sorted(expected)[:12]:
                    async with session.get(f"http://{ea}/tables/totals/{key}") as resp:
                        if resp.status != 200 or (await resp.json())["value"] != expected[key]:
                            return False
                return True

            await wait_until(all_found, within=60, what="every key through A, with the token")

        # the CLI reads the token from the same setting
        key = sorted(expected)[0]
        os.environ["STREAMKIT_WEB_TOKEN"] = token
        try:
            got = await asyncio.to_thread(
                cli, uid, "tables", "get", "tests.opsapp:app", "totals", key
            )
            status = await asyncio.to_thread(cli, uid, "status", "tests.opsapp:app")
        finally:
            del os.environ["STREAMKIT_WEB_TOKEN"]
        assert got.returncode == 0 and f"= {expected[key]}" in got.stdout, got.stderr
        assert status.returncode == 0 and "HTTP 401" not in status.stdout, status.stdout
        assert len(re.findall(r"worker ops-\S+ \(at_least_once\)", status.stdout)) == 2
        without = await asyncio.to_thread(cli, uid, "status", "tests.opsapp:app")
        assert "HTTP 401" in without.stdout
    finally:
        for w in workers:
            w.stop()
