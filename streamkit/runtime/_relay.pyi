# A relay stage's records in C (_relay.c); see relay.py for what calls it.
from collections import deque
from collections.abc import Callable
from typing import Any

class Relay:
    def __init__(
        self,
        records: deque[Any],
        route: Callable[..., bool],
        field: str,
        encode_key: Callable[[Any], bytes],
        utf8_keys: bool,
        key_check: int,
        /,
    ) -> None: ...
    def __call__(self, limit: int, /) -> tuple[int, Any, int, bool] | None: ...

def scan_field(data: bytes, field: str, /) -> str | int | None: ...
