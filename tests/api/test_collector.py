"""A serving worker freezes its start-up heap and collects garbage less often."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from approval_service.api import collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_start_up_objects_are_frozen_and_thresholds_raised(restored_collector: None) -> None:
    alive = {"policy": ["made at start-up"]}  # a container, tracked by the collector
    collector.tune_for_serving()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (collector.YOUNG, collector.MIDDLE, collector.OLD)
    assert gc.is_tracked(alive) and not any(o is alive for o in gc.get_objects())


def test_cycles_made_after_start_up_are_still_collected_automatically(
    restored_collector: None,
) -> None:
    collector.tune_for_serving()

    class Node:
        other: Node

    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    assert gone() is not None  # only the collector can free a cycle
    kept = [[] for _ in range(3 * collector.YOUNG)]  # allocations trigger a collection
    assert gone() is None and len(kept) == 3 * collector.YOUNG
