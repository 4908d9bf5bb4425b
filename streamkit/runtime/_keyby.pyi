# A key_by exchange's per-value call in C (_keyby.c); see exchange.py for what calls it.
from collections.abc import Callable
from typing import Any

class KeyBy:
    def __init__(
        self,
        host: Any,
        route: Callable[..., bool],
        field: str | None,
        key_of: Callable[[Any], Any],
        encode_key: Callable[[Any], bytes],
        utf8_keys: bool,
        raw: bool,
        encode_value: Callable[[Any], bytes],
        /,
    ) -> None: ...
    def __call__(self, value: Any, /) -> None: ...
