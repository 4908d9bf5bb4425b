"""Pipeline A (bench.partitions' keyed running sum) as an app for `streamkit worker`, named by
environment so bench.scaling can run it in several processes:

    BS_UID, BS_SOURCE, BS_OUTPUT, BS_PARTITIONS (source and repartition partitions),
    BS_MODE (`per_worker` or `per_partition` transactional producers), STREAMKIT_WORKDIR
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.partitions import running_sum_app

app = running_sum_app(
    os.environ.get("BS_UID", "unset"),
    os.environ.get("BS_SOURCE", "bs-in"),
    os.environ.get("BS_OUTPUT", "bs-out"),
    int(os.environ.get("BS_PARTITIONS", "64")),
    Path(os.environ.get("STREAMKIT_WORKDIR", ".")),
    os.environ.get("BS_MODE", "per_worker"),
)
