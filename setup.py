"""The compiled parts: `streamkit/aiokafka_internals/_records.c`, the native reader of
uncompressed record batches, `_batches.c`, the collector's per-record calls, and
`runtime/_keyby.c`, a key_by exchange's per-value call. Optional: without a C compiler the
package installs, reads every batch with aiokafka's reader (`records.py`), adds records and
routes them in Python (`batches.py`, `exchange.py`). The rest of the metadata:
pyproject.toml."""

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
    ]
)
