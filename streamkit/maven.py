"""Resolve Maven artifacts into a local cache, once, under a lock: the jars of the local broker
(localkafka), the schema registry's distribution and serdes (localregistry) and the benchmark's
Java peers (bench/flink).

    folder = resolve(pom, cache_dir("kafka-4.1.1") / "lib")

`resolve` runs one Maven goal (by default `dependency:copy-dependencies` of the runtime scope)
with `-DoutputDirectory` pointing at a temporary folder beside the target, writes a marker
holding the sha256 of the pom, and renames the folder into place: the cache is complete or
absent, and a changed pom resolves again. An exclusive file lock beside the target makes
concurrent callers (parallel test workers, several sessions) wait for one download. The cache
root is $STREAMKIT_KAFKA_CACHE or ~/.cache/streamkit. Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

MARKER = ".streamkit-resolved"  # written last; holds the sha256 of the pom the files came from
COPY_DEPENDENCIES = ("dependency:copy-dependencies", "-DincludeScope=runtime")


class MavenError(RuntimeError):
    """Maven is missing or failed; the message says why (with Maven's output)."""


def cache_dir(name: str = "") -> Path:
    """<cache root>/name: $STREAMKIT_KAFKA_CACHE or ~/.cache/streamkit."""
    root = os.environ.get("STREAMKIT_KAFKA_CACHE") or Path.home() / ".cache" / "streamkit"
    return Path(root) / name


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if missing) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def is_resolved(pom: Path, target: Path) -> bool:
    """True if `target` holds a complete resolve of this pom's current content."""
    marker = target / MARKER
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    return marker.is_file() and marker.read_text() == digest


def resolve(
    pom: Path,
    target: Path,
    goal: Sequence[str] = COPY_DEPENDENCIES,
    *,
    expect: str = "",
    label: str = "maven",
) -> Path:
    """Return `target` after Maven ran `goal` of `pom` into it, running it only when the cache
    is missing or came from another pom. `expect`: a file the goal must have produced. `label`
    prefixes the two progress lines on stderr (Maven runs only the first time)."""
    if is_resolved(pom, target):
        return target
    with locked(target.parent / f".{target.name}.lock"):  # another process may be filling it
        if is_resolved(pom, target):
            return target
        mvn = shutil.which("mvn")
        if mvn is None:
            raise MavenError(f"Maven (mvn) is needed once, to fetch {pom} into {target}")
        for leftover in target.parent.glob(f".{target.name}-*"):  # a run killed mid-download
            shutil.rmtree(leftover, ignore_errors=True)
        say = f"{label}: resolving {pom} with Maven into {target} (first run only)"
        print(say, file=sys.stderr, flush=True)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            result = subprocess.run(
                [mvn, "-q", "-B", "-f", str(pom), *goal, f"-DoutputDirectory={tmp}"],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if result.returncode != 0 or not (tmp / expect).exists():
                raise MavenError(f"Maven failed on {pom}:\n{result.stdout}{result.stderr}")
            (tmp / MARKER).write_text(hashlib.sha256(pom.read_bytes()).hexdigest())
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)  # atomic: the cache is either complete or absent
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        took = time.monotonic() - started
        print(f"{label}: resolved into {target} in {took:.1f} s", file=sys.stderr, flush=True)
    return target
