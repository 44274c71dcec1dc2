"""A serving worker freezes its start-up heap and collects garbage less often."""

from __future__ import annotations

import gc
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


def test_cycles_made_after_start_up_are_still_collected(restored_collector: None) -> None:
    collector.tune_for_serving()

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # type: ignore[attr-defined]
    del a, b
    assert gc.collect() >= 2  # garbage cycles are found and freed
