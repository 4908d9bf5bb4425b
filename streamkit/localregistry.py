#!/usr/bin/env python3
"""Start and stop a real Confluent-compatible schema registry: Apicurio Registry from Maven
Central, for development and tests (docs/registry.md).

    python -m streamkit.localregistry run -- CMD ARGS...   (CMD gets STREAMKIT_SCHEMA_REGISTRY_URL)
    python -m streamkit.localregistry up                  (prints the URL; Ctrl-C stops it)

Maven unpacks the distribution named in the pom shipped in the package
(streamkit/registry/pom.xml: `io.apicurio:apicurio-registry-app`, type tar.gz, classifier
`all`, ≈ 170 MB) once, into <cache>/apicurio-registry-<version>, where <cache> is
$STREAMKIT_KAFKA_CACHE or ~/.cache/streamkit (beside the Kafka jars). It needs Java 21 or
later: $STREAMKIT_REGISTRY_JAVA_HOME, else $JAVA_HOME, else `java` on PATH, else a JDK under
/usr/lib/jvm, whichever is 21+ first. Storage is in memory: a stopped registry forgets its
schemas. The HTTP and management ports are free ports of 127.0.0.1; the registry is ready when
its Confluent API (`/apis/ccompat/v7/subjects`) answers.
Tests: start_registry() -> Registry (a context manager; stop() also after a failed start).
Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamkit import maven
from streamkit.childproc import exit_on, run_child
from streamkit.localkafka import HOST, free_ports

POM = Path(__file__).resolve().parent / "registry" / "pom.xml"
API = "/apis/ccompat/v7"
MIN_JAVA = 21
JVM_DIRS = ("/usr/lib/jvm",)  # where Debian's (and Temurin's) packages put JDKs


class RegistryError(RuntimeError):
    """The registry, or a step to start it, failed; the message says why."""


def log(message: str) -> None:
    print(f"localregistry: {message}", file=sys.stderr, flush=True)


def registry_version(pom: Path = POM) -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:apicurio.version", ns)
    if node is None or not node.text:
        raise RegistryError(f"no <apicurio.version> property in {pom}")
    return node.text.strip()


def resolve_app(pom: Path = POM) -> Path:
    """The unpacked distribution (the folder of quarkus-run.jar); Maven runs only when it is
    not cached."""
    target = maven.cache_dir(f"apicurio-registry-{registry_version(pom)}")
    return _resolve(pom, target, ["dependency:unpack"], "quarkus-run.jar")


def resolve_jars(pom: Path) -> Path:
    """The folder of the runtime jars a pom depends on (Apicurio's Java serdes for the tests),
    cached as `apicurio-serde-<version>`; Maven runs only when it is not cached."""
    target = maven.cache_dir(f"apicurio-serde-{registry_version(pom)}")
    return _resolve(pom, target, maven.COPY_DEPENDENCIES, "")


def _resolve(pom: Path, target: Path, goal: Sequence[str], expect: str) -> Path:
    try:
        return maven.resolve(pom, target, goal, expect=expect, label="localregistry")
    except maven.MavenError as exc:
        raise RegistryError(str(exc)) from None


def java_major(java: str) -> int:
    """The major version `java -version` reports (0 if it does not run)."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except OSError:
        return 0
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if found is None:
        return 0
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def find_java(minimum: int = MIN_JAVA) -> str:
    candidates = [
        str(Path(home) / "bin" / "java")
        for home in (os.environ.get("STREAMKIT_REGISTRY_JAVA_HOME"), os.environ.get("JAVA_HOME"))
        if home
    ]
    candidates += [found] if (found := shutil.which("java")) else []
    candidates += sorted(str(p) for root in JVM_DIRS for p in Path(root).glob("*/bin/java"))
    for java in candidates:
        if os.access(java, os.X_OK) and java_major(java) >= minimum:
            return java
    raise RegistryError(
        f"Apicurio Registry needs Java {minimum} or later; none found among "
        f"{', '.join(candidates) or 'JAVA_HOME, PATH, /usr/lib/jvm'}: set "
        "STREAMKIT_REGISTRY_JAVA_HOME to a JDK 21+"
    )


def answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class Registry:
    """An Apicurio Registry on 127.0.0.1 with in-memory storage; its log under data_dir."""

    port: int
    management_port: int
    data_dir: Path
    java: str
    version: str
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        """The Confluent-compatible API's base URL (STREAMKIT_SCHEMA_REGISTRY_URL)."""
        return f"http://{HOST}:{self.port}{API}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "registry.log"

    def start(self, app: Path, timeout: float = 90.0) -> None:
        command = [
            self.java, "-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Dquarkus.http.host={HOST}", f"-Dquarkus.http.port={self.port}",
            f"-Dquarkus.management.host={HOST}",
            f"-Dquarkus.management.port={self.management_port}",
            "-jar", str(app / "quarkus-run.jar"),
        ]  # fmt: skip
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(
                command, cwd=self.data_dir, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not answers(self.url):
            if self.proc.poll() is not None:
                raise RegistryError(
                    f"registry exited with code {self.proc.returncode}; last lines of "
                    f"{self.log_file}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RegistryError(f"registry did not answer within {timeout:g} s")
            time.sleep(0.2)

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """End the process (SIGTERM, SIGKILL after timeout) and delete the data dir."""
        if self.proc is not None:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
                if self.proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(wait)
        if (self.data_dir / "registry.log").exists():  # only ever delete a folder made here
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, n: int = 60) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        return ""

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_registry(timeout: float = 90.0) -> Registry:
    """Start a fresh registry on free ports; stop() ends it and removes its folder."""
    app, java, version = resolve_app(), find_java(), registry_version()
    for attempt in range(3):  # a port picked as free can be taken before the JVM binds it
        port, management_port = free_ports(2)
        data_dir = Path(tempfile.mkdtemp(prefix="streamkit-registry-"))
        (data_dir / "registry.log").touch()
        registry = Registry(port, management_port, data_dir, java, version)
        try:
            registry.start(app, timeout)
            return registry
        except BaseException as exc:
            tail = registry.log_tail()
            registry.stop()
            if "Address already in use" not in f"{exc}{tail}" or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _started(timeout: float) -> Registry:
    resolve_app()  # timed on its own when Maven has to run
    started = time.monotonic()
    registry = start_registry(timeout)
    took = time.monotonic() - started
    log(f"Apicurio Registry {registry.version} up at {registry.url} in {took:.1f} s")
    return registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local schema registry (Apicurio).")
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start a registry, print its URL, run until interrupted")
    run = sub.add_parser("run", help="run CMD with STREAMKIT_SCHEMA_REGISTRY_URL set")
    for command in (up, run):
        command.add_argument("--timeout", type=float, default=90.0, help="readiness wait, s")
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on)  # unwinds, so the registry gets stopped
    try:
        if args.action == "run":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not command:
                log("usage: python -m streamkit.localregistry run -- CMD ARGS...")
                return 2
            if os.environ.get("STREAMKIT_SCHEMA_REGISTRY_URL"):  # an explicit URL wins
                return run_child(command, dict(os.environ))
            with _started(args.timeout) as registry:
                env = {**os.environ, "STREAMKIT_SCHEMA_REGISTRY_URL": registry.url}
                return run_child(command, env)
        with _started(args.timeout) as registry:
            print(registry.url, flush=True)
            while registry.is_alive():
                time.sleep(1.0)
            log(f"registry exited; last lines:\n{registry.log_tail()}")
            return 1
    except RegistryError as exc:
        log(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
