"""A local Kafka cluster of N KRaft nodes (`localkafka.py up --brokers 3`), from the same jars.

Each node is broker and controller (combined mode) with its own data dir, client port and
controller port under one root folder; the controller quorum is every node (static voters),
so the cluster survives the loss of one node of three. The group and transaction logs get 3
replicas and min ISR 2 (`localkafka.write_config(voters=...)`). Ready when every node answers a
Metadata request that lists all N brokers. Standard library only, like localkafka.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import localkafka
from localkafka import HOST, Broker, BrokerError


def brokers_listed(port: int, timeout: float = 2.0) -> int:
    """How many brokers the node on `port` lists in its Metadata v5 answer (0: no answer)."""
    client_id = b"localkafka"
    request = struct.pack(">hhih", 3, 5, 1, len(client_id)) + client_id + struct.pack(">ib", 0, 0)
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            with sock.makefile("rb") as reader:
                size = struct.unpack(">i", reader.read(4))[0]
                body = reader.read(size) if 12 <= size < 1 << 20 else b""
        correlation_id, _throttle_ms, brokers = struct.unpack_from(">iii", body)
    except (OSError, struct.error):
        return 0
    return int(brokers) if correlation_id == 1 else 0


@dataclass
class Cluster:
    """N nodes under `data_dir` (`node-1`, `node-2`, ...). Has the parts of `Broker`'s interface
    that localkafka's commands and the tests use: bootstrap, pid, port, data_dir, start, stop,
    is_alive, to_state; plus `kill(i)` / `start_node(i)` for chaos tests."""

    nodes: list[Broker]
    data_dir: Path
    version: str
    _started: list[float] = field(default_factory=list, repr=False)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def pid(self) -> int:
        return self.nodes[0].pid

    @property
    def security(self) -> dict[str, Any] | None:
        return None

    def node_by_id(self, node_id: int) -> Broker:
        return self.nodes[node_id - 1]

    def start(self, timeout: float = 90.0) -> None:
        """Launch every node's JVM, then wait until each lists all the brokers (a node alone
        cannot answer: it needs a quorum of controllers)."""
        for node in self.nodes:
            if not node.is_alive():
                node.proc = localkafka.launch(node.java, node.lib, node.data_dir, node.config)
                node.pid = node.proc.pid
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90.0, nodes: list[Broker] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for node in nodes or self.nodes:
            while brokers_listed(node.port) < len(self.nodes):
                if node.proc is not None and node.proc.poll() is not None:
                    tail = node.log_tail(40)
                    raise BrokerError(f"node {node.port} exited:\n{tail}")
                if time.monotonic() > deadline:
                    raise BrokerError(f"cluster not ready within {timeout:g} s")
                time.sleep(0.2)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (broker and controller)."""
        self.node_by_id(node_id).terminate(kill=True)

    def start_node(self, node_id: int, timeout: float = 90.0) -> None:
        """Start a stopped node again on its data dir; wait until it lists every broker."""
        node = self.node_by_id(node_id)
        with open(node.log_file, "a") as out:
            out.write("---- kafkacluster: restart ----\n")
        node.proc = localkafka.launch(node.java, node.lib, node.data_dir, node.config)
        node.pid = node.proc.pid
        self.wait_ready(timeout, [node])

    def is_alive(self) -> bool:
        return any(node.is_alive() for node in self.nodes)

    def terminate(self, timeout: float = 20.0, *, kill: bool = False) -> None:
        """Signal every node first (SIGTERM, or SIGKILL), then wait for each."""
        for node in self.nodes:
            if node.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.pid, signal.SIGKILL if kill else signal.SIGTERM)
        for node in self.nodes:
            node.terminate(timeout, kill=kill)

    def stop(self, timeout: float = 20.0) -> None:
        """End every node and delete the cluster's folder."""
        self.terminate(timeout)
        if all(node.config.exists() for node in self.nodes):  # only a folder made here
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, n: int = 80) -> str:
        return "\n".join(
            f"== node {i + 1} ==\n{node.log_tail(n)}" for i, node in enumerate(self.nodes)
        )

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def to_state(self) -> dict[str, Any]:
        return {
            "nodes": [node.to_state() for node in self.nodes],
            "data_dir": str(self.data_dir),
            "version": self.version,
            "bootstrap": self.bootstrap,
            "pid": self.pid,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Cluster:
        nodes = [Broker.from_state(node) for node in state["nodes"]]
        return cls(nodes, Path(state["data_dir"]), state["version"])


def start_cluster(size: int = 3, timeout: float = 90.0) -> Cluster:
    """Format and start a fresh `size`-node cluster on free ports; stop() removes it."""
    if size < 1:
        raise BrokerError("a cluster needs at least one node")
    lib, java, version = (
        localkafka.resolve_jars(),
        localkafka.find_java(),
        localkafka.kafka_version(),
    )
    for attempt in range(3):  # a port picked as free can be taken before the JVM binds it
        ports = localkafka.free_ports(2 * size)
        root = Path(
            tempfile.mkdtemp(prefix="streamkit-kafka-cluster-", dir=localkafka.data_parent())
        )
        voters = ",".join(f"{i + 1}@{HOST}:{ports[size + i]}" for i in range(size))
        cluster_id = localkafka.new_cluster_id()
        nodes = []
        for i in range(size):
            data_dir = root / f"node-{i + 1}"
            data_dir.mkdir()
            node = Broker(ports[i], ports[size + i], data_dir, lib, java, version)
            localkafka.write_config(
                node.config, data_dir, node.port, node.controller_port, node_id=i + 1, voters=voters
            )
            localkafka.format_storage(java, lib, data_dir, node.config, cluster_id=cluster_id)
            nodes.append(node)
        cluster = Cluster(nodes, root, version)
        try:
            cluster.start(timeout)
            return cluster
        except BaseException as exc:
            cluster.terminate(kill=True)
            shutil.rmtree(root, ignore_errors=True)
            logs = cluster.log_tail(20)
            if "Address already in use" not in logs or attempt == 2:
                raise BrokerError(f"{exc}\n{logs}") from None
    raise AssertionError("unreachable")
