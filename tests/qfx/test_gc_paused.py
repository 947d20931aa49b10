"""gc_paused leaves the collector as it found it, and frozen objects of the process frozen."""

from __future__ import annotations

import gc
from typing import Iterator

import pytest

from qfx.api import _FrozenObjects, gc_paused


@pytest.fixture(autouse=True)
def _forget_frozen_objects() -> Iterator[None]:
    """Each test starts in a process never seen freezing, whatever the tests before did."""
    _FrozenObjects.seen = False
    yield
    _FrozenObjects.seen = False


def test_collector_state_is_restored():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        made = [[i] for i in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    # what was allocated while paused went straight to the oldest generation (no traversal of it pending)
    assert any(obj is made for obj in gc.get_objects(generation=2))
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def _tracked_in_a_generation(obj: object) -> bool:
    return any(o is obj for generation in range(3) for o in gc.get_objects(generation=generation))


def test_a_process_that_froze_objects_keeps_them_frozen():
    # the freeze count alone is no test: frozen objects that die meanwhile leave the permanent generation
    kept = [[0]]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0 and not _tracked_in_a_generation(kept)
        with gc_paused():
            made = [[i] for i in range(100)]
        assert not _tracked_in_a_generation(kept), "an object the process froze was unfrozen"
        assert _tracked_in_a_generation(made), "what was allocated while paused was frozen"
        assert gc.get_freeze_count() <= frozen
        assert gc.isenabled()
    finally:
        gc.unfreeze()


def test_frozen_objects_are_counted_until_some_are_seen(monkeypatch: pytest.MonkeyPatch):
    # counting walks every frozen object: a process seen freezing is not asked again, and its collector
    # is left alone from then on (nothing it froze is ever unfrozen, nothing new frozen)
    counts: list[int] = []
    real = gc.get_freeze_count
    monkeypatch.setattr(gc, "get_freeze_count", lambda: counts.append(real()) or counts[-1])
    with gc_paused():
        pass
    assert counts == [0]
    kept = [[0]]
    gc.freeze()
    try:
        for _ in range(3):
            with gc_paused():
                made = [[i] for i in range(100)]
            assert not _tracked_in_a_generation(kept)
            assert _tracked_in_a_generation(made)
        assert len(counts) == 2 and counts[1] > 0
    finally:
        gc.unfreeze()
    with gc_paused():
        made = [[i] for i in range(100)]
    assert len(counts) == 2, "counted again after the process was seen freezing"
    assert gc.isenabled() and _tracked_in_a_generation(made)
