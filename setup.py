"""The compiled parts: `streamkit/aiokafka_internals/_records.c`, the native reader of
uncompressed record batches, `_batches.c`, the collector's per-record calls,
`runtime/_keyby.c`, a key_by exchange's per-value call, `state/_joinindex.c`, a
stream-stream join's in-memory index, and `state/_tables.c`, a table's `t[k]` and `t[k] = v`.
Optional: without a C compiler the package installs, reads every batch with aiokafka's reader
(`records.py`), adds records, routes them, indexes a join's records and reads tables in Python
(`batches.py`, `exchange.py`, `join_index.py`, `table_access.py`). The rest
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
        Extension("streamkit.runtime._relay", ["streamkit/runtime/_relay.c"], optional=True),
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
        Extension("streamkit.state._tables", ["streamkit/state/_tables.c"], optional=True),
    ]
)
