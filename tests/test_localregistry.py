"""streamkit/localregistry.py without starting Apicurio: which Java it takes, and that a
registry that fails to start is stopped and leaves no folder behind."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from streamkit import localregistry


def fake_java(folder: Path, version_line: str, exit_code: int = 0) -> str:
    path = folder / "java"
    path.write_text(f"#!/bin/sh\necho '{version_line}' >&2\nexit {exit_code}\n")
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    ("line", "major"),
    [
        ('openjdk version "25.0.1" 2025-10-21 LTS', 25),
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_402"', 8),
        ("not a java", 0),
    ],
)
def test_the_java_version_is_read_from_java_version(tmp_path: Path, line: str, major: int) -> None:
    assert localregistry.java_major(fake_java(tmp_path, line)) == major


def test_java_17_is_passed_over_and_none_found_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = fake_java(tmp_path, 'openjdk version "17.0.15"')
    monkeypatch.setenv("STREAMKIT_REGISTRY_JAVA_HOME", str(tmp_path.parent / "nowhere"))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path.parent / "nowhere"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(localregistry, "JVM_DIRS", ())
    with pytest.raises(localregistry.RegistryError, match="STREAMKIT_REGISTRY_JAVA_HOME"):
        localregistry.find_java()
    (tmp_path / "jdk25" / "bin").mkdir(parents=True)
    new = fake_java(tmp_path / "jdk25" / "bin", 'openjdk version "25"')
    monkeypatch.setenv("STREAMKIT_REGISTRY_JAVA_HOME", str(tmp_path / "jdk25"))
    assert localregistry.find_java() == new != old


def test_a_registry_that_exits_at_start_is_reported_and_its_folder_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashing = fake_java(tmp_path, "Error: UnsupportedClassVersionError", exit_code=1)
    monkeypatch.setattr(localregistry, "resolve_app", lambda: tmp_path)
    monkeypatch.setattr(localregistry, "find_java", lambda: crashing)
    before = set(Path(tempfile.gettempdir()).glob("streamkit-registry-*"))
    with pytest.raises(localregistry.RegistryError) as failed:
        localregistry.start_registry(timeout=30)
    assert "registry exited with code 1" in str(failed.value)
    assert "UnsupportedClassVersionError" in str(failed.value)  # the log's last lines
    assert set(Path(tempfile.gettempdir()).glob("streamkit-registry-*")) == before
