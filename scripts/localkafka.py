#!/usr/bin/env python3
"""The local Kafka broker of `make demo` / `make test`. The code lives in
`streamkit/localkafka.py`, so that an installed wheel has it too (`streamkit broker up|down|
status`); this file loads it by path (standard library only, no virtualenv needed).

    python scripts/localkafka.py up | status | down | run -- CMD ARGS...

Imported as `localkafka` (the tests put scripts/ on sys.path) it is that module itself."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what importers see: the module below
    from streamkit.localkafka import *  # noqa: F403

_PATH = Path(__file__).resolve().parent.parent / "streamkit" / "localkafka.py"
if __name__ == "__main__" and "streamkit" not in sys.modules:
    # the command line runs on the standard library alone: localkafka's sibling modules
    # (maven, localkafka_secure) are found in the package folder without running its __init__
    _package = types.ModuleType("streamkit")
    _package.__path__ = [str(_PATH.parent)]
    sys.modules["streamkit"] = _package
_spec = importlib.util.spec_from_file_location("_streamkit_localkafka", _PATH)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _module
_spec.loader.exec_module(_module)

if __name__ == "__main__":
    sys.exit(_module.main())
else:
    sys.modules[__name__] = _module
