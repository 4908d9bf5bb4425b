"""The hardware ceiling: Kafka's own producer and consumer perf tools on the same broker.

`ProducerPerformance` writes N 100-byte records as fast as it can (acks=all, linger 5 ms,
256 KiB batches, like our producers) into a fresh 4-partition topic, then `ConsumerPerformance`
reads them back; each reports records/s. The jars come from bench/perftools/pom.xml (Maven,
cached in ~/.cache/streamkit/perftools-4.1.1).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from pathlib import Path

from bench.common import Cluster, bootstrap

ROOT = Path(__file__).resolve().parent.parent
LIB = Path.home() / ".cache" / "streamkit" / "perftools-4.1.1" / "lib"


def prepare() -> None:
    if not LIB.exists():
        pom = str(ROOT / "bench/perftools/pom.xml")
        subprocess.run(
            ["mvn", "-q", "-f", pom, "dependency:copy-dependencies", f"-DoutputDirectory={LIB}"],
            check=True,
        )


async def _java(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "java", "-Xmx512m", "-cp", f"{LIB}/*", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    text = out.decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} exited with {proc.returncode}: {text[-500:]}")
    return text


async def hardware_ceiling(cluster: Cluster, n: int) -> dict[str, float]:
    """Records/s of Kafka's producer and consumer perf tools for max(n, 1M) records (the
    JIT needs a while)."""
    prepare()
    n = max(n, 1_000_000)
    topic = f"hw-{uuid.uuid4().hex[:8]}"
    await cluster.create_topics([topic])
    produced = await _java(
        "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
        "--num-records", str(n), "--record-size", "100", "--throughput", "-1",
        "--producer-props", f"bootstrap.servers={bootstrap()}", "acks=all", "linger.ms=5",
        "batch.size=262144",
    )  # fmt: skip
    consumed = await _java(
        "org.apache.kafka.tools.ConsumerPerformance", "--bootstrap-server", bootstrap(),
        "--topic", topic, "--messages", str(n),
    )  # fmt: skip
    producer = float(re.findall(r"([\d.]+) records/sec", produced)[-1])
    header, row = [line for line in consumed.splitlines() if "," in line][-2:]
    stats = dict(zip([h.strip() for h in header.split(",")], row.split(","), strict=False))
    return {"producer": producer, "consumer": float(stats["nMsg.sec"])}


if __name__ == "__main__":

    async def main() -> None:
        async with Cluster() as cluster:
            print(await hardware_ceiling(cluster, 200_000))

    asyncio.run(main())
