"""JsonLinesSink: one JSON document per line, one file per task, exactly-once.

Each task of the stage writes `{folder}/{task}.jsonl` (the task is its stage's first input
topic and partition) and keeps beside it `{task}.offsets`: the file's committed length and
the next offset of each input partition. The write of one batch (`JsonLinesWriter.write`, in
a thread: it waits for the disk):

1. Cut the data file back to its committed length (a crash may have left a partial batch).
2. Append the batch's lines; flush and fsync.
3. Write the new length and offsets to `{task}.offsets.tmp`, fsync it, rename it over
   `{task}.offsets` (atomic), fsync the folder: the batch is committed.

On open, step 1 runs too: lines written after the last committed offsets are cut off, and
the task resumes after those offsets. A value that is not JSON goes to the dead-letter
topic when it is appended (nothing is refused at write time). The files are local to the
worker: exactly-once holds for the workers that share this disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamkit.settings import ConfigError
from streamkit.sinks.base import GUARANTEES, Coordinates, Mode, Moves, SinkFenced, check_batching


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass(eq=False)
class JsonLinesSink:
    """`stream.to(sk.JsonLinesSink("out/orders"))`: each value as a JSON line (pydantic
    models by `model_dump`), in `out/orders/{topic}-{partition}.jsonl`."""

    folder: str | Path
    name: str = ""
    batch_rows: int = 1000
    batch_seconds: float | None = None
    mode: Mode = "exactly_once"

    def __post_init__(self) -> None:
        check_batching(f"JsonLinesSink({self.folder})", self.batch_rows, self.batch_seconds)
        if self.mode != "exactly_once":
            raise ConfigError(f"JsonLinesSink({self.folder}): only mode='exactly_once'")
        self.name = self.name or f"{Path(self.folder).name}.jsonl"

    @property
    def label(self) -> str:
        return f"json-lines {self.folder}"

    @property
    def guarantee(self) -> str:
        return GUARANTEES[self.mode]

    def row(self, value: Any) -> bytes:
        return orjson.dumps(value, default=_default) + b"\n"

    def check(self, postgres_dsn: str | None) -> None:
        return None

    def writer(self, app_id: str, task: str, postgres_dsn: str | None) -> JsonLinesWriter:
        return JsonLinesWriter(Path(self.folder), task)


def read_offsets(path: Path) -> tuple[int, dict[Coordinates, int]]:
    """The committed length and offsets of a data file's `.offsets` (0 and none if absent)."""
    try:
        doc = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return 0, {}
    offsets = {(t, int(p)): int(o) for t, p, o in doc["offsets"]}
    return int(doc["length"]), offsets


def committed_lines(folder: str | Path) -> Iterator[bytes]:
    """Every committed line of a JsonLinesSink's folder (each file up to the length its
    `.offsets` commits: a batch being written, or torn by a crash, is left out)."""
    for data in sorted(Path(folder).glob("*.jsonl")):
        length, _ = read_offsets(data.with_suffix(".offsets"))
        with data.open("rb") as f:
            yield from f.read(length).splitlines()


class JsonLinesWriter:
    def __init__(self, folder: Path, task: str) -> None:
        self.folder = folder
        self.data = folder / f"{task}.jsonl"
        self.meta = folder / f"{task}.offsets"
        self._length = 0
        self._offsets: dict[Coordinates, int] = {}

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._length, self._offsets = read_offsets(self.meta)
            with self.data.open("ab") as f:  # step 1: cut what no offsets file committed
                f.truncate(self._length)

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    async def stored(self, inputs: Sequence[Coordinates]) -> dict[Coordinates, int]:
        return {c: o for c, o in self._offsets.items() if c in set(inputs)}

    async def write(
        self, rows: Sequence[Any], offsets: Moves, records: Sequence[Any]
    ) -> list[tuple[int, str]]:
        await asyncio.to_thread(self._write, rows, offsets)
        return []

    def _write(self, rows: Sequence[bytes], offsets: Moves) -> None:
        with self._locked():
            if read_offsets(self.meta) != (self._length, self._offsets):
                raise SinkFenced(
                    f"{self.meta}: another writer committed to this file since this task "
                    "opened it (its partition belongs to another task now)"
                )
            self._append(rows, {c: after for c, (_, after) in offsets.items()})

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The file's lock (`{task}.lock`): one writer at a time, across processes."""
        with (self.folder / f"{self.data.stem}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _append(self, rows: Sequence[bytes], offsets: Mapping[Coordinates, int]) -> None:
        with self.data.open("r+b") as f:
            f.truncate(self._length)  # 1.
            f.seek(self._length)
            f.write(b"".join(rows))  # 2.
            f.flush()
            os.fsync(f.fileno())
            length = f.tell()
        merged = {**self._offsets, **offsets}
        doc = {"length": length, "offsets": [[t, p, o] for (t, p), o in sorted(merged.items())]}
        tmp = self.meta.with_suffix(".offsets.tmp")
        with tmp.open("wb") as f:  # 3.
            f.write(orjson.dumps(doc))
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.meta)
        with contextlib.suppress(OSError):
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._length, self._offsets = length, merged

    async def reset(self) -> None:
        return None

    def close(self) -> None:
        return None
