"""The compiled parts: `streamkit/aiokafka_internals/_records.c`, the native reader of
uncompressed record batches, `_batches.c`, the collector's per-record calls, and
`runtime/_keyby.c`, a key_by exchange's per-value call, and `state/_joinindex.c`, a
stream-stream join's in-memory index. Optional: without a C compiler the package installs,
reads every batch with aiokafka's reader (`records.py`), adds records, routes them and
indexes a join's records in Python (`batches.py`, `exchange.py`, `join_index.py`). The rest
of the metadata: pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streamkit.aiokafka_internals._records",
            ["streamkit/aiokafka_internals/_records.c"],
            optional=True,
        ),
        Extension(
            "streamkit.aiokafka_internals._batches",
            ["streamkit/aiokafka_internals/_batches.c"],
            optional=True,
        ),
        Extension("streamkit.runtime._keyby", ["streamkit/runtime/_keyby.c"], optional=True),
        Extension(
            "streamkit.state._joinindex",
            [
                "streamkit/state/_joinmodule.c",
                "streamkit/state/_joinindex.c",
                "streamkit/state/_joinpush.c",
            ],
            depends=["streamkit/state/_joinindex.h", "streamkit/state/_joinpush.h"],
            optional=True,
        ),
    ]
)
