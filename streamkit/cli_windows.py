"""`streamkit windows get MODULE:APP NAME KEY [--from MS] [--to MS]`: the open windows of one
key in a window table (or the pending timers of a key in a timer set), asked of any live
worker, which routes the query to the owner of the key's partition (`GET /windows/...`).
`streamkit tables get` on a window table or timer set answers the same way."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer

from streamkit.app import App
from streamkit.cli_common import UsageError, _arun, _run, cli, load_app

USAGE = "usage: streamkit windows get MODULE:APP NAME KEY [--from MS] [--to MS]"


@cli.command()
def windows(
    args: Annotated[list[str], typer.Argument(help="get MODULE:APP NAME KEY", show_default=False)],
    start_from: Annotated[
        int | None, typer.Option("--from", help="windows starting at or after (epoch ms)")
    ] = None,
    to: Annotated[
        int | None, typer.Option("--to", help="windows starting at or before (epoch ms)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the worker's answer as JSON")] = False,
) -> None:
    """The open windows of one key in a window table (start, end, results), or the pending
    timers of one key in a timer set, from the worker that owns the key's partition."""

    def body() -> None:
        if len(args) != 4 or args[0] != "get":
            raise UsageError(USAGE)
        loaded = load_app(args[1])
        loaded.configure()
        query_windows(loaded, args[2], args[3], start_from, to, as_json)

    _run(body)


def query_windows(
    app: App, name: str, key: str, lo: int | None, hi: int | None, as_json: bool = False
) -> None:
    from streamkit import ops_commands

    if name not in app.windows and name not in app.timers:
        known = sorted(app.windows) + sorted(app.timers)
        raise UsageError(f"app {app.id} has no window table or timer set {name!r}: {known}")
    params = {k: str(v) for k, v in (("from", lo), ("to", hi)) if v is not None}
    path = f"/windows/{quote(name, safe='')}/{quote(key, safe='')}"
    try:
        code, answer = _arun(ops_commands.ask_any_worker(app, path, params))
    except ops_commands.NoWorker as exc:
        typer.echo(f"error: {exc}; is a worker running?", err=True)
        raise typer.Exit(3) from None
    if code not in (200, 404) or "found" not in answer:
        typer.echo(f"error: HTTP {code}: {answer.get('error', answer)}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(orjson.dumps(answer).decode())
    else:
        for line in describe(answer):
            typer.echo(line)
    if not answer["found"]:
        raise typer.Exit(1)


def describe(answer: dict[str, Any]) -> list[str]:
    """The lines `windows get` prints for a worker's answer."""
    where = f"partition {answer['partition']}, served by {answer['served_by']}"
    key = orjson.dumps(answer["key"]).decode()
    if "timers" in answer:
        head = f"timers {answer['timers']}[{key}]: {len(answer['pending'])} pending ({where})"
        rows = [
            f"  fire {t['fire']} ({t['kind']} time)  payload {orjson.dumps(t['payload']).decode()}"
            for t in answer["pending"]
        ]
        return [head, *rows]
    head = (
        f"window {answer['window']}[{key}]: {answer['kind']}, {answer['aggregation']}; "
        f"{len(answer['windows'])} open ({where})"
    )
    rows = []
    for w in answer["windows"]:
        result = {k: v for k, v in w.items() if k not in ("start", "end", "at", "value")}
        rows.append(f"  [{w['start']}, {w['end']})  {orjson.dumps(result).decode()}")
    return [head, *rows]
