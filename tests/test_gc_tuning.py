"""The collector's settings while workers run (runtime/gc_tuning.py): raised and frozen for
the first, put back by the last to stop, left alone with gc_threshold=0."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streamkit.runtime import gc_tuning


@pytest.fixture(autouse=True)
def python_defaults() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    yield
    gc.set_threshold(*saved)
    gc.unfreeze()


def test_two_workers_raise_the_threshold_and_the_last_to_stop_puts_it_back() -> None:
    assert gc_tuning.tune(50_000)
    assert gc.get_threshold() == (50_000, 10, 10)
    assert gc.get_freeze_count() > 0  # the start-up objects
    assert gc_tuning.tune(20_000)  # a second worker never lowers it
    assert gc.get_threshold() == (50_000, 10, 10)
    gc_tuning.restore()
    assert gc.get_threshold() == (50_000, 10, 10)  # one worker still runs
    assert gc.get_freeze_count() > 0
    gc_tuning.restore()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_zero_leaves_the_collector_alone() -> None:
    assert not gc_tuning.tune(0)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
