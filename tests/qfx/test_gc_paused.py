"""gc_paused leaves the collector as it found it, and frozen objects of the process frozen."""

from __future__ import annotations

import gc

from qfx.api import gc_paused


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
