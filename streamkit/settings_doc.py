"""The settings reference, docs/settings.md, rendered from the `Settings` model.

    python -m streamkit.settings_doc            # (re)write docs/settings.md
    python -m streamkit.settings_doc --check    # exit 1 if docs/settings.md is out of date

Each setting's name, environment variable, type (with its bounds), default and description come
from the model, so the page cannot drift from the code: tests/test_settings_doc.py fails when the
file differs from what this renders.
"""

from __future__ import annotations

import argparse
import enum
import sys
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from streamkit.settings import NOT_SETTINGS, Settings

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "settings.md"

_HEADER = """\
# Settings reference

<!-- Generated from streamkit/settings.py by `python -m streamkit.settings_doc`: do not edit by
hand; change the model's fields and descriptions and run it again (a test checks the two agree). -->

A worker's settings are one pydantic-settings model, `streamkit.settings.Settings`. Give them as
keyword arguments of the app (`sk.App("shop", commit_interval=0.5)`) or as environment variables
with the prefix `STREAMKIT_` (`STREAMKIT_COMMIT_INTERVAL=0.5`); an argument wins over a variable.
`KAFKA_BOOTSTRAP_SERVERS`, when set, always wins for the broker. Every value is validated when
the app is built: a bad value, or an unknown `STREAMKIT_` variable, stops the start with a message
that names the setting and what to change (docs/bad-input.md).

"""

_FOOTER = """
Variables with the prefix that are not settings, and which a worker ignores: {ignored}.
"""


def render() -> str:
    """docs/settings.md as it should read for the current model."""
    rows = [
        "| Setting | Environment variable | Type | Default | Description |",
        "|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        rows.append(
            "| "
            + " | ".join(
                [
                    f"`{name}`",
                    f"`STREAMKIT_{name.upper()}`",
                    _cell(type_text(field)),
                    _cell(default_text(field)),
                    _cell(" ".join((field.description or "").split())),
                ]
            )
            + " |"
        )
    ignored = ", ".join(f"`{name}`" for name in sorted(NOT_SETTINGS))
    return _HEADER + "\n".join(rows) + "\n" + _FOOTER.format(ignored=ignored)


def type_text(field: FieldInfo) -> str:
    """`int, ≥ 1000`, one of `DEBUG`, `INFO`..., `path, optional`."""
    text = _annotation_text(field.annotation)
    bounds = []
    for meta in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if isinstance(meta, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{sign} {_number(getattr(meta, attr))}")
    return ", ".join([text, *bounds])


def _annotation_text(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in get_args(annotation))
    if origin is Union or origin is types.UnionType:
        args = [a for a in get_args(annotation) if a is not type(None)]
        inner = " or ".join(_annotation_text(a) for a in args)
        return f"{inner}, optional" if len(args) < len(get_args(annotation)) else inner
    names = {bool: "bool", int: "int", float: "float", str: "string", Path: "path"}
    if annotation in names:
        return names[annotation]
    if annotation is SecretStr:
        return "secret string"
    return getattr(annotation, "__name__", repr(annotation))


def default_text(field: FieldInfo) -> str:
    """The default as the page shows it; a field whose default depends on another setting
    says so in `json_schema_extra={"default_doc": ...}`."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("default_doc"), str):
        return str(extra["default_doc"])
    value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, int | float):
        return f"`{_number(value)}`"
    return f"`{value}`"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return str(value)


def _cell(text: str) -> str:
    """Markdown table cells cannot hold a bare `|` (not even in code spans on GitHub)."""
    return text.replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamkit.settings_doc",
        description="Render the settings reference from the Settings model.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help="the file to write")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the file differs from what would be written",
    )
    args = parser.parse_args(argv)
    text = render()
    out: Path = args.out
    if args.check:
        current = out.read_text(encoding="utf-8") if out.exists() else ""
        if current != text:
            print(f"{out} is out of date: run `python -m streamkit.settings_doc`", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
