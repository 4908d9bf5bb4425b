# The native record reader (_records.c); see records.py for what calls it.
from typing import Any

def slot_offsets(cls: type, names: tuple[str, ...], /) -> tuple[int, ...]: ...
def input_records(
    batch: memoryview | bytes,
    start: int,
    out: list[Any],
    cls: type,
    topic: str,
    partition: int,
    offsets: tuple[int, ...],
    /,
) -> None: ...
def rows(
    batch: memoryview | bytes,
    start: int,
    out: list[tuple[bytes, bytes | None]],
    times: list[int] | None,
    /,
) -> None: ...
