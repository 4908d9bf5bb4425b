"""The Apache Flink peer of bench/compare.py (system "flink"): Pipelines.java on a local
MiniCluster (Flink 2.2 with its Kafka connector, jars from Maven Central).

`command()` builds it when needed — the jars of pom.xml resolved once into
~/.cache/streamkit/flink-<version>/lib (streamkit.maven), Pipelines.java compiled with javac
into .../classes when the source is newer — and returns the java command line. The settings
come from the harness's BENCH_* variables; BENCH_FLINK_PARALLELISM (default 2) is the job's
parallelism and the MiniCluster's task slots.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from streamkit import maven

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
SOURCE = HERE / "Pipelines.java"


def home() -> Path:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(POM).getroot().findtext("m:properties/m:flink.version", "", ns)
    return maven.cache_dir(f"flink-{version.strip()}")


def build() -> Path:
    """The folder holding lib/ (the jars) and classes/ (Pipelines.class), up to date."""
    root = home()
    lib = maven.resolve(POM, root / "lib", label="bench.flink")
    classes = root / "classes"
    built = classes / "Pipelines.class"
    if not built.exists() or built.stat().st_mtime < SOURCE.stat().st_mtime:
        classes.mkdir(parents=True, exist_ok=True)
        javac = ["javac", "-nowarn", "-cp", f"{lib}/*", "-d", str(classes), str(SOURCE)]
        subprocess.run(javac, check=True)
    return root


def command() -> list[str]:
    root = build()
    classpath = f"{root / 'classes'}:{root / 'lib'}/*"
    log4j = f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}"
    return ["java", "-Xmx1g", log4j, "-cp", classpath, "Pipelines"]
