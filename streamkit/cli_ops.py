"""The operator subcommands of `streamkit`: dashboard, dlq show|replay, tail.

They are registered on `streamkit.cli.cli` (imported at the end of cli.py); their bodies live
in `streamkit/dashboard` and `streamkit/records_commands.py`."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import orjson
import typer

from streamkit.app import App
from streamkit.cli_common import AppArg, UsageError, _arun, _run, cli, load_app, setup_logging


@cli.command()
def dashboard(
    app: AppArg,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind (0: any free one).")] = 8080,
) -> None:
    """Serve the live dashboard of the whole app (graph, rates, lag, hot partitions and keys,
    checkpoints, dead letters) at http://HOST:PORT/. Every worker serves it at / too."""
    from streamkit.dashboard.server import serve

    def body() -> None:
        loaded = load_app(app)
        settings = loaded.configure()
        setup_logging(settings.log_level)
        with contextlib.suppress(KeyboardInterrupt):
            _arun(serve(loaded, settings, host, port))

    _run(body)


dlq_cli = typer.Typer(help="Dead letters: show them, replay chosen ones.", no_args_is_help=True)
cli.add_typer(dlq_cli, name="dlq")


@dlq_cli.command("show")
def dlq_show(
    app: AppArg,
    limit: Annotated[int, typer.Option(help="Show at most the newest N (0: all).")] = 50,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """The dead letters of APP (read_committed), oldest first: original key and value decoded
    with the source topic's codecs, the reason, the source topic, partition and offset."""
    from streamkit import records_commands as rc

    def body() -> None:
        loaded = load_app(app)
        rows = _arun(_collect(loaded, loaded.dlq.name))
        if limit:
            rows = rows[-limit:]
        for row in rows:
            typer.echo(
                orjson.dumps(rc.jsonable(row)).decode() if json_lines else rc.format_record(row)
            )
        typer.echo(f"{len(rows)} dead letters in {loaded.dlq.name}", err=True)

    _run(body)


@dlq_cli.command("replay")
def dlq_replay(
    app: AppArg,
    offset: Annotated[
        list[int] | None, typer.Option(help="A dead letter's offset in the DLQ (repeatable).")
    ] = None,
    error_type: Annotated[
        str | None, typer.Option(help="Only dead letters of this type (DecodeError, ...).")
    ] = None,
    source_topic: Annotated[str | None, typer.Option(help="Only those from this topic.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead letter.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be sent.")] = False,
) -> None:
    """Send chosen dead letters back to the partition of the topic they came from (after a
    fix), with their original key, value and headers."""
    from streamkit import records_commands as rc

    def body() -> None:
        if not (offset or error_type or source_topic or all_):
            raise UsageError(
                "choose dead letters: --offset N, --error-type T, --source-topic T or --all"
            )
        loaded = load_app(app)
        sent = _arun(
            rc.replay(
                loaded,
                offsets=set(offset or ()),
                error_type=error_type,
                source_topic=source_topic,
                dry_run=dry_run,
            )
        )
        for item in sent:
            typer.echo(f"{'would send' if dry_run else 'sent'} {item.dead_letter} -> {item.to}")
        typer.echo(f"{len(sent)} dead letters {'chosen' if dry_run else 'replayed'}", err=True)

    _run(body)


@cli.command()
def tail(
    app: AppArg,
    topic: Annotated[str, typer.Argument(help="The topic to follow.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record.")
    ] = False,
    limit: Annotated[int, typer.Option(help="Stop after N records (0: never).")] = 0,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Follow TOPIC (read_committed), decoded with the app's codecs; dead letters and late
    events show their reason and where they came from."""
    from streamkit import records_commands as rc

    async def follow(loaded: App) -> None:
        shown = 0
        records = rc.read(loaded, topic, from_beginning=from_beginning, follow=True)
        async with contextlib.aclosing(records):  # the consumer stops here, not at teardown
            async for record in records:
                row = rc.describe_record(loaded, record)
                typer.echo(
                    orjson.dumps(rc.jsonable(row)).decode() if json_lines else rc.format_record(row)
                )
                shown += 1
                if limit and shown >= limit:
                    return

    def body() -> None:
        loaded = load_app(app)
        try:
            _arun(follow(loaded))
        except rc.NoSuchTopic as exc:
            raise UsageError(str(exc)) from None
        except KeyboardInterrupt:
            pass

    _run(body)


async def _collect(app: App, topic: str) -> list[dict[str, Any]]:
    from streamkit import records_commands as rc

    return [
        rc.describe_record(app, r)
        async for r in rc.read(app, topic, from_beginning=True, follow=False)
    ]


broker_cli = typer.Typer(
    help="A local single-node Kafka broker (KRaft) from Maven Central jars: needs a JDK ≥ 17 "
    "and Maven. Remembered in .kafka/state.json under the current folder.",
    no_args_is_help=True,
)
cli.add_typer(broker_cli, name="broker")


@broker_cli.command("up")
def broker_up(
    secure: Annotated[bool, typer.Option("--secure", help="Add SASL and TLS listeners.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for it to answer.")] = 60.0,
) -> None:
    """Start a broker in the background (or reuse the running one); print its address."""
    from streamkit import localkafka

    args = ["up", "--timeout", str(timeout), *(["--secure"] if secure else [])]
    raise typer.Exit(localkafka.main(args))


@broker_cli.command("down")
def broker_down() -> None:
    """Stop the broker and delete its data."""
    from streamkit import localkafka

    raise typer.Exit(localkafka.main(["down"]))


@broker_cli.command("status")
def broker_status() -> None:
    """Say whether the broker runs, where, and whether it answers (exit 3 if not running)."""
    from streamkit import localkafka

    raise typer.Exit(localkafka.main(["status"]))
