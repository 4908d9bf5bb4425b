#!/usr/bin/env python3
"""Start and stop a real single-node Apache Kafka broker (KRaft) from Maven Central jars.

    streamkit broker up | status | down                (from an installed wheel)
    python scripts/localkafka.py up | status | down    (the same, in the repository)
    python scripts/localkafka.py run -- CMD ARGS...    (CMD gets KAFKA_BOOTSTRAP_SERVERS)
    python scripts/localkafka.py up --secure           (also SASL and TLS listeners, see below)
    python scripts/localkafka.py up --brokers 3        (a 3-node KRaft cluster: kafkacluster.py)

Maven resolves the jars from the pom shipped in the package (streamkit/kafka/pom.xml, also
reachable as kafka/pom.xml in the repository) once, into <cache>/kafka-<version>/lib, where
<cache> is $STREAMKIT_KAFKA_CACHE or ~/.cache/streamkit. A broker started with `up` is
remembered in .kafka/state.json under the current folder ($STREAMKIT_KAFKA_STATE names
another file), so `down`, `status` and `run` from the same folder find it. Data folders go in
$STREAMKIT_KAFKA_DATA (a tmpfs: docs/benchmarks.md), else the temp folder. Tests: start_broker().
Standard library only; a broker is ready when it answers a Kafka Metadata request.

`--secure` (`start_broker(secure=True)`): SASL_PLAINTEXT, SASL_SSL, SSL too (localkafka_secure).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from streamkit import maven
from streamkit.childproc import exec_command, exit_on, run_child
from streamkit.localkafka_secure import (
    SCRAM_MECHANISMS,
    SecurityError,
    new_security,
    secure_listener_config,
)

FILES = Path(__file__).resolve().parent / "kafka"  # package data: the pom and log4j config
POM = FILES / "pom.xml"
LOG4J_CONFIG = FILES / "log4j2.properties"
STATE_FILE = Path(os.environ.get("STREAMKIT_KAFKA_STATE") or Path.cwd() / ".kafka" / "state.json")
HOST = "127.0.0.1"


class BrokerError(RuntimeError):
    """The broker, or a step to start it, failed; the message says why."""


def data_parent() -> str | None:
    """$STREAMKIT_KAFKA_DATA, where brokers' data folders go (None: the system's temp folder)."""
    parent = os.environ.get("STREAMKIT_KAFKA_DATA") or None
    if parent is not None and not Path(parent).is_dir():
        raise BrokerError(f"STREAMKIT_KAFKA_DATA={parent} is not a folder: make it, or unset it")
    return parent


def log(message: str) -> None:
    print(f"localkafka: {message}", file=sys.stderr, flush=True)


def kafka_version(pom: Path = POM) -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not node.text:
        raise BrokerError(f"no <kafka.version> property in {pom}")
    return node.text.strip()


def lib_dir(version: str) -> Path:
    return maven.cache_dir(f"kafka-{version}") / "lib"


def resolve_jars(pom: Path = POM) -> Path:
    """Return the directory of the broker's jars; runs Maven only when it is not cached."""
    try:
        return maven.resolve(pom, lib_dir(kafka_version(pom)), label="localkafka")
    except maven.MavenError as exc:
        raise BrokerError(str(exc)) from None


def find_java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise BrokerError("no java found: set JAVA_HOME or put java (17+) on PATH")
    return java


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def write_config(
    path: Path,
    data_dir: Path,
    port: int,
    controller_port: int,
    security: dict[str, Any] | None = None,
    *,
    node_id: int = 1,
    voters: str | None = None,
) -> None:
    """One node's server.properties; `voters` (`1@host:port,2@...`) makes it a node of a
    cluster (scripts/kafkacluster.py): internal topics then get 3 replicas, min ISR 2."""
    replicas, min_isr = ("1", "1") if voters is None else ("3", "2")
    cluster = (
        {}
        if voters is None
        else {  # a killed node's partitions move after 4 s, not 9
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "1000",
        }
    )
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "data"),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        # a local broker for development and tests: no time retention (test data and replayed
        # data carry event times long past, which a 7-day retention deletes within minutes)
        "log.retention.ms": "-1",
    }
    props |= cluster
    if security is not None:
        props |= secure_listener_config(props, security, HOST)
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))


def java_command(java: str, lib: Path, data_dir: Path, *args: str) -> list[str]:
    # 1 GB, as Kafka's start script gives a broker (512 MB: G1 took up to a core, benchmarks.md)
    return [java, "-Xms1g", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", f"-Dkafka.logs.dir={data_dir / 'logs'}",
            "-cp", str(lib / "*"), *args]  # fmt: skip


def new_cluster_id() -> str:
    cluster_id = "-"
    while cluster_id.startswith("-"):  # one in 64 would be read as an option and fail
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
    return cluster_id


def format_storage(
    java: str,
    lib: Path,
    data_dir: Path,
    config: Path,
    security: dict[str, Any] | None = None,
    cluster_id: str | None = None,
) -> None:
    cluster_id = cluster_id or new_cluster_id()
    command = java_command(java, lib, data_dir, "kafka.tools.StorageTool", "format",
                           "-t", cluster_id, "-c", str(config))  # fmt: skip
    if security is not None:  # SCRAM credentials live in the cluster metadata
        user, password = security["username"], security["password"]
        for mechanism in SCRAM_MECHANISMS:
            command += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        raise BrokerError(f"formatting storage failed:\n{result.stdout}{result.stderr}")


def launch(java: str, lib: Path, data_dir: Path, config: Path) -> subprocess.Popen[bytes]:
    """Start the broker JVM in its own session, console appended to <data_dir>/broker.log."""
    with open(data_dir / "broker.log", "ab") as out:
        return subprocess.Popen(
            java_command(java, lib, data_dir, "kafka.Kafka", str(config)), cwd=data_dir,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def answers(port: int, timeout: float = 2.0) -> bool:
    """True if the broker on port answers a Metadata v5 request with at least one broker."""
    client_id = b"localkafka"  # header: api key 3, version 5, correlation id 1, client id
    request = struct.pack(">hhih", 3, 5, 1, len(client_id)) + client_id + struct.pack(">ib", 0, 0)
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            with sock.makefile("rb") as reader:
                size = struct.unpack(">i", reader.read(4))[0]
                body = reader.read(size) if 12 <= size < 1 << 20 else b""
        correlation_id, _throttle_ms, brokers = struct.unpack_from(">iii", body)
    except (OSError, struct.error):
        return False
    return bool(correlation_id == 1 and brokers >= 1)


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not answers(port):
        if proc.poll() is not None:
            raise BrokerError(f"broker exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise BrokerError(f"broker did not answer within {timeout:g} s")
        time.sleep(0.2)


def _command_line(pid: int) -> str:
    if Path("/proc/self/cmdline").exists():
        with contextlib.suppress(OSError):
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        return ""
    ps = ["ps", "-o", "command=", "-p", str(pid)]
    return subprocess.run(ps, capture_output=True, text=True, check=False).stdout


@dataclass
class Broker:
    """A single-node KRaft broker on 127.0.0.1 whose files all live under data_dir."""

    port: int
    controller_port: int
    data_dir: Path
    lib: Path
    java: str
    version: str
    pid: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def config(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def security(self) -> dict[str, Any] | None:
        """A --secure broker's listener ports, user, passwords and PEM files; else None."""
        path = self.data_dir / "security.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def start(self, timeout: float = 60.0) -> None:
        """Launch the JVM on the formatted data dir and wait until it answers."""
        self.proc = launch(self.java, self.lib, self.data_dir, self.config)
        self.pid = self.proc.pid
        try:
            wait_ready(self.proc, self.port, timeout)
        except BaseException as exc:
            tail = self.log_tail(80)
            self.terminate(kill=True)
            if isinstance(exc, BrokerError):
                raise BrokerError(f"{exc}; last lines of {self.log_file}:\n{tail}") from None
            raise

    def is_alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        command = _command_line(self.pid) if self.pid > 0 else ""  # guards against pid reuse
        return "kafka.Kafka" in command and str(self.config) in command

    def terminate(self, timeout: float = 20.0, *, kill: bool = False) -> None:
        """End the process (SIGTERM, SIGKILL after timeout; SIGKILL at once if kill)."""
        first = signal.SIGKILL if kill else signal.SIGTERM
        for sig, wait in ((first, timeout), (signal.SIGKILL, 10.0)):
            if not self.is_alive():
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            deadline = time.monotonic() + wait
            while self.is_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
        if self.is_alive():
            raise BrokerError(f"broker pid {self.pid} did not exit")

    def stop(self, timeout: float = 20.0) -> None:
        """End the process and delete the data dir."""
        self.terminate(timeout)
        if self.config.exists():  # only ever delete a directory this module made
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self, timeout: float = 60.0, *, kill: bool = False) -> None:
        """End the process (SIGKILL if kill) and start it again on the same data dir and ports.

        After a SIGKILL the controller keeps the old registration until its session times out
        (broker.session.timeout.ms, 9 s), so such a restart takes about 10 s longer."""
        self.terminate(kill=kill)
        with open(self.log_file, "a") as out:
            out.write(f"---- localkafka: restart{' after SIGKILL' if kill else ''} ----\n")
        self.start(timeout)

    def log_tail(self, n: int = 80) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        return ""

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def to_state(self) -> dict[str, Any]:
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "proc"}
        state |= {"data_dir": str(self.data_dir), "lib": str(self.lib), "bootstrap": self.bootstrap}
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Broker:
        paths = {"data_dir": Path(state["data_dir"]), "lib": Path(state["lib"])}
        return cls(**{f.name: state[f.name] for f in fields(cls) if f.name != "proc"} | paths)


def start_broker(timeout: float = 60.0, *, secure: bool = False) -> Broker:
    """Start a fresh broker on free ports with a new temporary data dir; stop() removes it.
    `secure`: with the SASL and TLS listeners too (`Broker.security` describes them)."""
    lib, java, version = resolve_jars(), find_java(), kafka_version()
    for attempt in range(3):  # a port picked as free can be taken before the JVM binds it
        port, controller_port, *secure_ports = free_ports(5 if secure else 2)
        data_dir = Path(tempfile.mkdtemp(prefix="streamkit-kafka-", dir=data_parent()))
        broker = Broker(port, controller_port, data_dir, lib, java, version)
        try:
            security = new_security(data_dir, secure_ports) if secure else None
            write_config(broker.config, data_dir, port, controller_port, security)
            format_storage(java, lib, data_dir, broker.config, security)
            broker.start(timeout)
            return broker
        except BaseException as exc:
            broker.stop()
            if "Address already in use" not in str(exc) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def load_state() -> Broker | None:
    try:
        state = json.loads(STATE_FILE.read_text())
        if "nodes" in state:  # a cluster (`up --brokers N`): same interface
            import kafkacluster

            return kafkacluster.Cluster.from_state(state)  # type: ignore[return-value]
        return Broker.from_state(state)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log(f"ignoring unreadable {STATE_FILE}: {exc}")
        return None


def save_state(broker: Broker) -> None:
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(broker.to_state(), indent=2) + "\n")
    tmp.replace(STATE_FILE)


def running_broker() -> Broker | None:
    broker = load_state()
    return broker if broker is not None and broker.is_alive() and answers(broker.port) else None


def _start_logged(timeout: float, secure: bool = False, brokers: int = 1) -> Broker:
    resolve_jars()  # timed on its own when Maven has to run
    started = time.monotonic()
    if brokers > 1:
        if secure:
            raise BrokerError("--secure is for a single broker; drop --brokers or --secure")
        import kafkacluster

        cluster = kafkacluster.start_cluster(brokers, max(timeout, 90.0))
        took = time.monotonic() - started
        log(f"Kafka {cluster.version}: {brokers} nodes up at {cluster.bootstrap} in {took:.1f} s")
        return cluster  # type: ignore[return-value]  # a Cluster has Broker's interface
    broker = start_broker(timeout, secure=secure)
    took = time.monotonic() - started
    log(f"Kafka {broker.version} up at {broker.bootstrap} in {took:.1f} s (pid {broker.pid})")
    if broker.security is not None:
        ports = ", ".join(f"{k} {HOST}:{v}" for k, v in broker.security["listeners"].items())
        log(f"secure listeners: {ports}; user, passwords, files: {broker.data_dir}/security.json")
    return broker


def cmd_up(args: argparse.Namespace) -> int:
    with maven.locked(STATE_FILE.with_suffix(".lock")):
        broker = running_broker()
        if broker is not None and (size := len(getattr(broker, "nodes", [broker]))) != args.brokers:
            log(f"a {size}-node broker is running at {broker.bootstrap}: `down` it first")
            return 1
        if broker is None:
            stale = load_state()
            if stale is not None:
                log(f"replacing broker pid {stale.pid} from {STATE_FILE}: dead or not answering")
                stale.stop()
            broker = _start_logged(args.timeout, args.secure, args.brokers)
            save_state(broker)
    print(broker.bootstrap, flush=True)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    with maven.locked(STATE_FILE.with_suffix(".lock")):
        broker = load_state()
        if broker is not None:
            broker.stop()
        log(
            "no broker to stop" if broker is None else f"stopped {broker.pid} at {broker.bootstrap}"
        )
        STATE_FILE.unlink(missing_ok=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    broker = load_state()
    alive = broker is not None and broker.is_alive()
    print("running" if alive else "not running")
    if broker is not None:
        print(f"pid: {broker.pid}\nbootstrap: {broker.bootstrap}\ndata dir: {broker.data_dir}")
        for node in getattr(broker, "nodes", []):
            print(f"node {node.port}: pid {node.pid}, {'alive' if node.is_alive() else 'down'}")
        print(f"answering: {'yes' if alive and answers(broker.port) else 'no'}")
    return 0 if alive else 3


def cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        log("usage: localkafka.py run -- CMD ARGS...")
        return 2
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return exec_command(command, dict(os.environ))
    broker = running_broker()
    if broker is not None and len(getattr(broker, "nodes", [broker])) == args.brokers:
        log(f"using running broker at {broker.bootstrap} (pid {broker.pid})")
        return exec_command(command, {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap})
    broker = _start_logged(args.timeout, args.secure, args.brokers)
    try:
        return run_child(command, {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap})
    finally:
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local Kafka broker from Maven jars.")
    sub = parser.add_subparsers(dest="action", required=True)
    for name, func, text in (
        ("up", cmd_up, "start a detached broker (or reuse the running one), print its address"),
        ("down", cmd_down, "stop the broker from the state file and delete its data"),
        ("status", cmd_status, "show the broker from the state file; exit 3 if not running"),
        ("run", cmd_run, "run CMD with KAFKA_BOOTSTRAP_SERVERS (starts a broker if needed)"),
    ):
        command = sub.add_parser(name, help=text)
        command.set_defaults(func=func)
        if name in ("up", "run"):
            command.add_argument("--timeout", type=float, default=60.0, help="readiness wait, s")
            command.add_argument(
                "--secure", action="store_true", help="add SASL and TLS listeners (a new broker)"
            )
            command.add_argument(
                "--brokers", type=int, default=1, help="a KRaft cluster of N nodes (3: RF 3, ISR 2)"
            )
        if name == "run":
            command.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on)
    try:
        return int(args.func(args))
    except (BrokerError, SecurityError) as exc:
        log(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
