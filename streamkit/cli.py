"""The `streamkit` command: worker, send, topics, topology, tables, status, reset.

Every user mistake (a wrong MODULE:APP, a bad setting, an unreachable broker) ends in one line
on stderr and a non-zero exit, never a traceback wall.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from aiokafka.errors import MessageSizeTooLargeError

from streamkit import (
    cli_ops,  # noqa: F401  (registers dashboard, dlq, tail, broker)
    cli_windows,  # registers windows
)
from streamkit.app import App
from streamkit.cli_common import AppArg, UsageError, _arun, _run, cli, load_app, setup_logging
from streamkit.registry.codec import prepare_codecs
from streamkit.runtime.admin import describe, ensure_topics, open_admin
from streamkit.runtime.worker import Worker
from streamkit.state import inspect as inspect_state


@cli.command()
def worker(
    app: AppArg,
    workdir: Annotated[Path | None, typer.Option(help="Local state directory.")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None,
    commit_interval: Annotated[float | None, typer.Option(help="Seconds between commits.")] = None,
    max_poll_records: Annotated[int | None, typer.Option(help="Records per fetch.")] = None,
    max_buffered_per_partition: Annotated[
        int | None, typer.Option(help="Fetched, unprocessed records allowed per partition.")
    ] = None,
) -> None:
    """Run a worker process of APP. Start more processes to share the partitions."""

    def body() -> None:
        loaded = load_app(app)
        settings = loaded.configure(
            workdir=workdir,
            log_level=log_level,
            commit_interval=commit_interval,
            max_poll_records=max_poll_records,
            max_buffered_per_partition=max_buffered_per_partition,
        )
        setup_logging(settings.log_level)
        _arun(Worker(loaded).run())

    _run(body)


@cli.command()
def send(
    app: AppArg,
    topic: Annotated[str, typer.Argument(help="A topic the app declares.")],
    value: Annotated[str | None, typer.Option(help="The value (JSON for JSON topics).")] = None,
    key: Annotated[str | None, typer.Option(help="The key, as text.")] = None,
    key_field: Annotated[
        str | None, typer.Option(help="Take each key from this field of the JSON value.")
    ] = None,
    partition: Annotated[int | None, typer.Option(help="Send to this partition.")] = None,
) -> None:
    """Send one value (--value) or JSON lines read from stdin to TOPIC."""

    def body() -> None:
        loaded = load_app(app)
        declared = loaded.topics.get(topic)
        if declared is None:
            raise UsageError(
                f"app {loaded.id} declares no topic {topic!r}: {sorted(loaded.topics)}"
            )
        lines = [value] if value is not None else [ln for ln in sys.stdin.read().splitlines() if ln]
        count = _arun(_send_lines(loaded, topic, lines, key, key_field, partition))
        typer.echo(f"sent {count} records to {topic}", err=True)

    _run(body)


def _parse(line: str, raw: bool) -> Any:
    if raw:
        return line
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"not JSON: {line[:80]!r} ({exc})") from None


async def _send_lines(
    app: App,
    topic_name: str,
    lines: list[str],
    key: str | None,
    key_field: str | None,
    partition: int | None,
) -> int:
    topic = app.topics[topic_name]
    raw = topic.value_type in (str, bytes)
    values = [_parse(line, raw) for line in lines]
    await ensure_topics(app.settings, [topic], client_id=f"{app.id}-cli")
    # a schema-registry codec registers (or looks up) its schema first, as a worker's does
    await asyncio.to_thread(prepare_codecs, [topic], app.settings.schema_registry_url)
    async with app.producer() as producer:
        for number, v in enumerate(values, 1):
            k: Any = key
            if key_field is not None:
                if not isinstance(v, dict) or key_field not in v:
                    raise UsageError(f"--key-field {key_field}: missing in {v!r:.200}")
                k = str(v[key_field])
            if partition is not None and not 0 <= partition < (topic.partitions or 1):
                raise UsageError(
                    f"--partition {partition}: {topic_name} has partitions 0 to "
                    f"{(topic.partitions or 1) - 1}"
                )
            try:
                await producer.send(topic, v, key=k, partition=partition)
            except MessageSizeTooLargeError:
                raise UsageError(
                    f"record {number} is {len(lines[number - 1])} bytes, over the producer's "
                    "1 MB limit: send smaller values"
                ) from None
    return len(values)


@cli.command()
def topics(app: AppArg) -> None:
    """List the app's topics: partitions declared, partitions on the broker."""

    def body() -> None:
        loaded = load_app(app)
        found = _arun(_describe(loaded))
        typer.echo(f"{'topic':40} {'declared':>8} {'broker':>8}  role")
        sources = loaded.source_topics
        sinks = loaded.sink_topics
        for name, t in sorted(loaded.topics.items()):
            on_broker = found.get(name)
            role = "internal" if t.internal else "source" if name in sources else ""
            role = role or ("sink" if name in sinks else "declared")
            typer.echo(
                f"{name:40} {t.declared_partitions or '-':>8} "
                f"{on_broker if on_broker is not None else 'missing':>8}  {role}"
            )

    _run(body)


@cli.command()
def tables(
    args: Annotated[
        list[str],
        typer.Argument(
            help="MODULE:APP | get MODULE:APP TABLE KEY | scan MODULE:APP TABLE",
            show_default=False,
        ),
    ],
    workdir: Annotated[Path | None, typer.Option(help="The workers' state directory.")] = None,
    prefix: Annotated[str, typer.Option(help="scan: keys starting with this text.")] = "",
    limit: Annotated[int, typer.Option(help="scan: at most this many rows.")] = 100,
    local: Annotated[
        bool, typer.Option("--local", help="get: read this machine's state files, not a worker.")
    ] = False,
) -> None:
    """List the tables in the local workdir (partitions, keys); read one key (`get`) or scan
    a table (`scan`) by asking any live worker, which routes to the partition's owner."""

    def body() -> None:
        if args[0] in ("get", "scan"):
            _table_query(args, workdir, prefix, limit, local)
            return
        if len(args) != 1:
            raise UsageError(
                "usage: streamkit tables MODULE:APP | tables get MODULE:APP TABLE KEY | "
                "tables scan MODULE:APP TABLE [--prefix P] [--limit N]"
            )
        loaded = load_app(args[0])
        loaded.configure(workdir=workdir)
        typer.echo(f"{'table':20} {'partition':>9} {'keys':>10}  file")
        for part in inspect_state.local_partitions(loaded):
            typer.echo(f"{part.table:20} {part.partition:>9} {part.keys:>10}  {part.path}")

    _run(body)


def _table_query(
    args: list[str], workdir: Path | None, prefix: str, limit: int, local: bool
) -> None:
    from urllib.parse import quote

    from streamkit import ops_commands

    get = args[0] == "get"
    if len(args) != (4 if get else 3):
        raise UsageError(
            "usage: streamkit tables get MODULE:APP TABLE KEY"
            if get
            else "usage: streamkit tables scan MODULE:APP TABLE [--prefix P] [--limit N]"
        )
    loaded = load_app(args[1])
    loaded.configure(workdir=workdir)
    name = args[2]
    if name not in loaded.tables:
        raise UsageError(f"app {loaded.id} has no table {name!r}: {sorted(loaded.tables)}")
    if get and not local and (name in loaded.windows or name in loaded.timers):
        cli_windows.query_windows(loaded, name, args[3], None, None)
        return
    if get and local:
        found = inspect_state.read_key(loaded, name, args[3])
        if found is None:
            raise UsageError(f"key {args[3]!r} is not in the local state of {name}")
        typer.echo(f"{name}[{args[3]!r}] = {found[1]!r}  (partition {found[0]}, local file)")
        return
    path = f"/tables/{quote(name, safe='')}"
    params = {"prefix": prefix, "limit": str(limit)}
    if get:
        path, params = f"{path}/{quote(args[3], safe='')}", {}
    try:
        code, answer = _arun(ops_commands.ask_any_worker(loaded, path, params))
    except ops_commands.NoWorker as exc:
        typer.echo(f"error: {exc}; is a worker running? (`--local` reads state files)", err=True)
        raise typer.Exit(3) from None
    if get:
        if code == 200 or (code == 404 and "found" in answer):
            if not answer["found"]:
                typer.echo(
                    f"error: no key {args[3]!r} in {name} (partition {answer['partition']}, "
                    f"asked {answer['served_by']})",
                    err=True,
                )
                raise typer.Exit(1)
            typer.echo(
                f"{name}[{args[3]!r}] = {orjson.dumps(answer['value']).decode()}  "
                f"(partition {answer['partition']}, served by {answer['served_by']})"
            )
            return
        typer.echo(f"error: HTTP {code}: {answer.get('error', answer)}", err=True)
        raise typer.Exit(1)
    if code not in (200, 206):
        typer.echo(f"error: HTTP {code}: {answer.get('error', answer)}", err=True)
        raise typer.Exit(1)
    for row in answer["items"]:
        typer.echo(orjson.dumps(row).decode())
    missing = answer.get("missing") or {}
    typer.echo(
        f"{len(answer['items'])} rows from partitions {answer['partitions']}"
        + (f"; missing {missing}" if missing else ""),
        err=True,
    )
    if missing:
        raise typer.Exit(4)


@cli.command()
def status(app: AppArg) -> None:
    """The app's group: members, their partitions, lag per input partition (from the broker),
    and per-stage rates from the workers' /status."""
    from streamkit import ops_commands

    def body() -> None:
        for line in _arun(ops_commands.status_lines(load_app(app))):
            typer.echo(line)

    _run(body)


@cli.command()
def reset(
    app: AppArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    workdir: Annotated[Path | None, typer.Option(help="The local state directory.")] = None,
    dead_letters: Annotated[
        bool, typer.Option("--dead-letters", help="Also delete the dead-letter and late topics.")
    ] = False,
    local_only: Annotated[
        bool,
        typer.Option("--local-only", help="Only remove this machine's state directory."),
    ] = False,
) -> None:
    """Start APP over: delete its repartition and changelog topics, commit the earliest
    offsets of its sources for the group, remove the local state. Refuses while workers run."""
    from streamkit import ops_commands
    from streamkit.runtime.group import GroupActive

    def body() -> None:
        loaded = load_app(app)
        settings = loaded.configure(workdir=workdir)
        plan = ops_commands.reset_plan(
            loaded, dead_letters=dead_letters, state_dir=settings.workdir, local_only=local_only
        )
        typer.echo(plan)
        if not yes and not typer.confirm("go ahead?", default=False):
            typer.echo("nothing done", err=True)
            raise typer.Exit(1)
        try:
            lines = _arun(
                ops_commands.reset_lines(
                    loaded,
                    dead_letters=dead_letters,
                    state_dir=settings.workdir,
                    local_only=local_only,
                )
            )
        except GroupActive as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        for line in lines:
            typer.echo(line)

    _run(body)


@cli.command()
def topology(
    app: AppArg,
    format: Annotated[str, typer.Option("--format", help="text, mermaid or json")] = "text",
) -> None:
    """Print the app's graph: stages and their inputs, operators (fan-out, merges, branches),
    agents, sinks, internal topics, tables, windows, timers."""

    def body() -> None:
        if format not in ("text", "mermaid", "json"):
            raise UsageError(f"--format {format!r}: use text, mermaid or json")
        typer.echo(load_app(app).topology(format), nl=False)

    _run(body)


async def _describe(app: App) -> dict[str, int | None]:
    admin = await open_admin(app.settings, f"{app.id}-cli")
    try:
        return await describe(admin, sorted(app.topics))
    finally:
        await admin.close()


def main() -> None:
    cli()


if __name__ == "__main__":  # python -m streamkit.cli: the module as imported holds every command
    from streamkit.cli import main as imported_main

    imported_main()
