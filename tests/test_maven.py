"""streamkit/maven.py with the real Maven: a pom's jars resolved into the cache once, however
many processes ask at the same time; a changed pom resolves again; a failed resolve says why
and leaves neither the target nor a temporary folder behind. The artifact is slf4j-nop, which
the Kafka Streams peer's pom already brings into the local Maven repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamkit import maven

pytestmark = pytest.mark.skipif(shutil.which("mvn") is None, reason="needs Maven (mvn)")

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.streamkit</groupId><artifactId>maven-test</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies><dependency>
    <groupId>org.slf4j</groupId><artifactId>{artifact}</artifactId><version>2.0.17</version>
  </dependency></dependencies>
</project>
"""

RESOLVE = """
import sys
from pathlib import Path
from streamkit import maven
print(maven.resolve(Path(sys.argv[1]), Path(sys.argv[2]), label="child"))
"""


def test_parallel_callers_resolve_once_and_a_changed_pom_again(tmp_path: Path) -> None:
    pom, target = tmp_path / "pom.xml", tmp_path / "cache" / "lib"
    pom.write_text(POM.format(artifact="slf4j-nop"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", RESOLVE, str(pom), str(target)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], outputs
    assert all(out.strip() == str(target) for out, _ in outputs)
    assert sum("resolving" in err for _, err in outputs) == 1  # Maven ran once, under the lock
    assert sorted(p.name for p in target.glob("*.jar")) == [
        "slf4j-api-2.0.17.jar",
        "slf4j-nop-2.0.17.jar",
    ]
    assert maven.is_resolved(pom, target)
    assert not list(target.parent.glob(".lib-*"))  # no temporary folder left

    pom.write_text(POM.format(artifact="slf4j-simple"))
    assert not maven.is_resolved(pom, target)
    maven.resolve(pom, target)
    assert "slf4j-simple-2.0.17.jar" in {p.name for p in target.glob("*.jar")}
    assert "slf4j-nop-2.0.17.jar" not in {p.name for p in target.glob("*.jar")}


def test_a_failed_resolve_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    pom, target = tmp_path / "pom.xml", tmp_path / "cache" / "lib"
    pom.write_text(POM.format(artifact="slf4j-nop").replace("2.0.17", "0.0.0-no-such-version"))
    with pytest.raises(maven.MavenError, match="Maven failed"):
        maven.resolve(pom, target)
    assert not target.exists()
    assert not list(target.parent.glob(".lib-*"))


def test_the_cache_root_is_the_environment_s_or_the_home_s(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMKIT_KAFKA_CACHE", str(tmp_path))
    assert maven.cache_dir("kafka-4.1.1") == tmp_path / "kafka-4.1.1"
    monkeypatch.delenv("STREAMKIT_KAFKA_CACHE")
    assert maven.cache_dir() == Path.home() / ".cache" / "streamkit"
