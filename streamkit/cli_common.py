"""What every `streamkit` subcommand shares: the typer app, loading MODULE:APP, turning known
errors into one line and an exit code, logging. `cli.py` and `cli_ops.py` add the commands."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer

from streamkit import logfilters
from streamkit.app import App
from streamkit.runtime.admin import BrokerUnreachable
from streamkit.runtime.worker import WorkerFailed
from streamkit.settings import ConfigError

cli = typer.Typer(
    help="streamkit: stream processing for Apache Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")
AppArg = Annotated[str, typer.Argument(help="The app to load, as MODULE:ATTRIBUTE (apps.shop:app)")]


class UsageError(Exception):
    """Bad command-line input."""


def load_app(spec: str) -> App:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{spec!r} is not MODULE:APP (for example apps.shop:app)")
    if "/" in module_name or module_name.endswith(".py"):
        dotted = module_name.removesuffix(".py").strip("/").replace("/", ".")
        raise UsageError(
            f"{module_name!r} is a file path: give the module's dotted name, {dotted}:{attr}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        own = module_name == missing or module_name.startswith(f"{missing}.")
        if missing and not own:  # the module was found; something it imports was not
            raise UsageError(
                f"module {module_name} imports {missing!r}, which is not installed ({exc})"
            ) from None
        raise UsageError(
            f"cannot import module {module_name!r} ({exc}); run from the project folder "
            "or put it on PYTHONPATH"
        ) from None
    app = getattr(module, attr, None)
    if app is None:
        raise UsageError(f"module {module_name} has no attribute {attr!r}")
    if not isinstance(app, App):
        raise UsageError(f"{spec} is a {type(app).__name__}, not a streamkit.App")
    _ = app.stages  # the graph: declares the internal topics (commands read them too)
    return app


def _run(action: Callable[[], T]) -> T:
    """Run a command body, turning known errors into one line and an exit code."""
    try:
        return action()
    except (UsageError, ConfigError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except BrokerUnreachable as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from None
    except WorkerFailed as exc:
        typer.echo(f"error: worker stopped: {exc}", err=True)
        raise typer.Exit(1) from None


def _arun(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))
    logfilters.install()  # no alarming line on a healthy first start
