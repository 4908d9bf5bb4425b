"""streamkit.testing: the examples of docs/testing.md run as written (each is a test with
hand-computed answers), the kit's event-time and exchange behaviour on multi-partition
topics, and one small app run both by the kit and by a worker on the real broker, with every
output compared."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import streamkit as sk
from streamkit.testing import AsyncTestDriver, DriverFailed, TestDriver

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def doc_examples() -> dict[str, str]:
    """The python blocks of docs/testing.md that define tests, by their first test's name."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    found = {}
    for block in blocks:
        names = re.findall(r"^(?:async )?def (test_\w+)", block, flags=re.MULTILINE)
        if names:
            found[names[0]] = block
    return found


def test_the_doc_has_the_examples_the_brief_asks_for() -> None:
    assert set(doc_examples()) == {
        "test_big_orders_are_flagged",
        "test_running_totals_per_user",
        "test_a_minute_closes_after_its_allowed_lateness",
        "test_reminders_and_surveys",
        "test_bad_input_goes_to_the_dead_letter_topic",
        "test_big_orders_in_one_fetch",
    }


@pytest.mark.parametrize("name", sorted(doc_examples()))
def test_doc_example(name: str) -> None:
    """Run one block of docs/testing.md: every test function it defines."""
    namespace: dict[str, Any] = {"__name__": f"docs_testing_{name}"}
    exec(compile(doc_examples()[name], f"docs/testing.md:{name}", "exec"), namespace)
    tests = [fn for key, fn in namespace.items() if key.startswith("test_") and callable(fn)]
    assert tests
    for fn in tests:
        if inspect.iscoroutinefunction(fn):
            asyncio.run(fn())
        else:
            fn()
