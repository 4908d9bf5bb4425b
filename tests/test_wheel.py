"""The wheel, installed into a clean virtualenv, is enough to try an app in two commands:
`streamkit broker up` (the same Kafka-from-Maven-jars broker as scripts/localkafka.py, with the
pom inside the package) and `streamkit worker`; then `send` and `tail` see it work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import venv
from pathlib import Path

import orjson
import pytest

from tests.kafkahelp import ROOT

HELLO = """
from collections.abc import AsyncIterator
import streamkit as sk

app = sk.App("wheel-hello", commit_interval=0.2)
orders = app.topic("orders", partitions=2)
big = app.topic("big-orders", partitions=2)


@app.agent(orders, sink=big)
async def flag(stream: sk.Stream[dict]) -> AsyncIterator[dict]:
    async for order in stream:
        if order["amount"] >= 100:
            yield {"id": order["id"], "flag": "big"}
"""


def run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
def test_the_wheel_in_a_clean_virtualenv_runs_a_hello_agent_on_its_own_broker(
    tmp_path: Path,
) -> None:
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        ROOT,
        dict(os.environ),
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("streamkit-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "STREAMKIT_"))}
    clean["PATH"] = f"{bin_dir}{os.pathsep}{clean.get('PATH', '')}"
    clean.pop("PYTHONPATH", None)
    installed = run(
        [str(bin_dir / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
        tmp_path,
        clean,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    project = tmp_path / "project"
    project.mkdir()
    (project / "hello.py").write_text(HELLO)
    streamkit = str(bin_dir / "streamkit")
    helped = run([streamkit, "--help"], project, clean)
    assert helped.returncode == 0
    for command in ("worker", "broker", "dashboard", "tail", "dlq"):
        assert command in helped.stdout

    up = run([streamkit, "broker", "up"], project, clean)
    assert up.returncode == 0, up.stderr
    bootstrap = up.stdout.strip().splitlines()[-1]
    worker = None
    try:
        assert (project / ".kafka" / "state.json").exists()
        status = run([streamkit, "broker", "status"], project, clean)
        assert status.returncode == 0 and "answering: yes" in status.stdout
        env = {**clean, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "STREAMKIT_WORKDIR": str(project)}
        log = (project / "worker.log").open("wb")
        worker = subprocess.Popen(
            [streamkit, "worker", "hello:app"], cwd=project, env=env, stdout=log, stderr=log
        )
        log.close()
        deadline = time.monotonic() + 120
        while "assigned" not in (project / "worker.log").read_text():
            assert worker.poll() is None, (project / "worker.log").read_text()
            assert time.monotonic() < deadline, (project / "worker.log").read_text()
            time.sleep(0.2)
        for value in ('{"id": 1, "amount": 5}', '{"id": 2, "amount": 250}'):
            sent = run([streamkit, "send", "hello:app", "orders", "--value", value], project, env)
            assert sent.returncode == 0, sent.stderr
        tail = run(
            [
                streamkit,
                "tail",
                "hello:app",
                "big-orders",
                "--from-beginning",
                "--limit",
                "1",
                "--json",
            ],
            project,
            env,
            timeout=120,
        )
        assert tail.returncode == 0, tail.stderr
        assert orjson.loads(tail.stdout)["value"] == {"id": 2, "flag": "big"}
        assert " ERROR " not in (project / "worker.log").read_text()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(60)
        down = run([streamkit, "broker", "down"], project, clean)
        assert down.returncode == 0, down.stderr
    assert run([streamkit, "broker", "status"], project, clean).returncode == 3
