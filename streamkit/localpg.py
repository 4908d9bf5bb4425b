"""A local PostgreSQL server for the tests and the demo, as `localkafka.py` is the broker's.

`start_postgres()` runs `initdb` in a fresh temporary directory, then `postgres` on a free port
of 127.0.0.1 (trust authentication, its socket in that directory), and returns once a client
can connect. `stop()` stops it and removes the directory; `kill()` is `kill -9` of the
postmaster (a crash test), `start()` runs it again on the same directory and port.

`initdb` refuses to run as root: as root the server runs as the `postgres` user that Debian's
package creates (`runuser -u postgres`), the directory owned by it. The binaries come from
PATH or Debian's `/usr/lib/postgresql/<version>/bin`. Standard library only.

    python -m streamkit.localpg run -- CMD ARGS   # CMD with STREAMKIT_POSTGRES_DSN set

An explicit `STREAMKIT_POSTGRES_DSN` always wins: `run` then starts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
DSN_ENV = "STREAMKIT_POSTGRES_DSN"


class PostgresError(RuntimeError):
    pass


def find_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    raise PostgresError(
        f"no {name} found: install PostgreSQL (Debian: apt-get install postgresql) or set "
        f"{DSN_ENV} to a server of your own"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    """As root, the command runs as `postgres` (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser") is None:
        raise PostgresError("running as root needs runuser to start PostgreSQL as postgres")
    return ["runuser", "-u", "postgres", "--", *command]


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
        return True
    return False


class LocalPostgres:
    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/postgres"

    @property
    def log_file(self) -> Path:
        return self.folder / "postgres.log"

    def init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        done = subprocess.run(
            _as_server_user(
                [find_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"]
            ),
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise PostgresError(f"initdb failed: {done.stderr.decode(errors='replace')}")

    def start(self, timeout: float = 30.0) -> None:
        """Run the server (again, after `kill`) and wait until it accepts connections."""
        command = _as_server_user(
            [
                find_binary("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.folder),
                "-c",
                f"listen_addresses={HOST}",
                "-c",
                "max_connections=200",
            ]
        )
        deadline = time.monotonic() + timeout
        while True:  # after a kill -9 the old backends may hold shared memory a moment longer
            log = self.log_file.open("ab")
            self.proc = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
            log.close()
            while time.monotonic() < deadline and self.proc.poll() is None:
                if _answers(self.port) and self._ready():
                    return
                time.sleep(0.1)
            if time.monotonic() >= deadline:
                self.terminate()
                raise PostgresError(f"PostgreSQL did not start in {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        done = subprocess.run(
            [find_binary("pg_isready"), "-h", HOST, "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return None

    def kill(self) -> None:
        """`kill -9` of the postmaster: the database crashes (its backends follow)."""
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> None:
        """A fast shutdown (SIGINT to the postmaster), then SIGKILL if it lingers."""
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        try:
            self.terminate()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def tail(self, n: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        return ""

    def __enter__(self) -> LocalPostgres:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_postgres(timeout: float = 30.0) -> LocalPostgres:
    """A fresh server on a free port in a new temporary directory (stop() removes both)."""
    folder = Path(tempfile.mkdtemp(prefix="streamkit-pg-"))
    server = LocalPostgres(folder, free_port())
    try:
        server.init()
        server.start(timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _exit_on(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def cmd_run(command: list[str]) -> int:
    """Run `command` with STREAMKIT_POSTGRES_DSN set, starting a server unless one is given;
    the server stops afterwards, also on failure or signal."""
    if os.environ.get(DSN_ENV):
        return subprocess.call(command)
    signal.signal(signal.SIGTERM, _exit_on)
    server = start_postgres()
    try:
        print(f"PostgreSQL on {server.dsn}", file=sys.stderr)
        return subprocess.call(command, env={**os.environ, DSN_ENV: server.dsn})
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localpg", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["run"])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run needs a command: run -- CMD ARGS")
    return cmd_run(command)


if __name__ == "__main__":
    sys.exit(main())
