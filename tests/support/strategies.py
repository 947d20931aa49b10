"""Moved to qfx.testing.strategies; this re-export keeps `from tests.support.strategies import ...` working."""
from qfx.testing.strategies import *  # noqa: F401,F403
from qfx.testing.strategies import _KIND_ONLY, _MODULE_OPS, _draw_structure, _note, _same, _structure  # noqa: F401
