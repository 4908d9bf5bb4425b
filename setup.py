"""The one compiled part: `streamkit/aiokafka_internals/_records.c`, the native reader of
uncompressed record batches. Optional: without a C compiler the package installs, and reads
every batch with aiokafka's reader (`records.py`). The rest of the metadata: pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streamkit.aiokafka_internals._records",
            ["streamkit/aiokafka_internals/_records.c"],
            optional=True,
        )
    ]
)
