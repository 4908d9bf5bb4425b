# The collector's per-record calls in C (_batches.c); see batches.py for what calls them.
from collections.abc import Callable
from typing import Any

class Adder:
    def __init__(
        self,
        open: dict[Any, Any],
        slow: Callable[..., bool],
        cls: type,
        offsets: tuple[int, ...],
        /,
    ) -> None: ...
    def __call__(
        self,
        tp: tuple[str, int],
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        timestamp_ms: int | None,
        /,
    ) -> bool: ...

class Router:
    def __init__(
        self,
        adder: Adder,
        tps: list[tuple[str, int]],
        known: dict[bytes, int],
        place: Callable[[bytes], int],
        keyless: Callable[..., bool],
        /,
    ) -> None: ...
    def __call__(
        self,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int | None,
        headers: Any = ...,
        /,
    ) -> bool: ...
