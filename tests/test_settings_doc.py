"""docs/settings.md is generated from the Settings model and must agree with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamkit.settings import Settings
from streamkit.settings_doc import DEFAULT_PATH, main, render


def test_docs_settings_md_is_up_to_date() -> None:
    assert DEFAULT_PATH.read_text(encoding="utf-8") == render(), (
        "docs/settings.md is out of date: run `python -m streamkit.settings_doc`"
    )


def test_every_setting_has_a_row_with_its_variable_and_a_description() -> None:
    text = render()
    for name, field in Settings.model_fields.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`STREAMKIT_{name.upper()}`" in row
        assert field.description, f"setting {name} has no description"
    assert "| `transaction_timeout_ms` | `STREAMKIT_TRANSACTION_TIMEOUT_MS` | int, ≥ 1000 |" in text
    assert "one of `at_least_once`, `exactly_once` | `at_least_once` |" in text
    assert (
        "| `sasl_password` | `STREAMKIT_SASL_PASSWORD` | secret string, optional | unset |" in text
    )


def test_check_mode_fails_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "settings.md"
    assert main(["--out", str(out), "--check"]) == 1  # missing
    assert main(["--out", str(out)]) == 0
    assert main(["--out", str(out), "--check"]) == 0
    out.write_text(out.read_text(encoding="utf-8").replace("Local state directory", "Old text"))
    assert main(["--out", str(out), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
