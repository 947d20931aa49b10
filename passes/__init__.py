"""qfx passes: pure functions Program -> Program, and the manager that runs them."""

from .manager import (
    GLOBAL_INSTRUMENTS,
    REGISTRY,
    BaseInstrument,
    DumpIR,
    Pass,
    Pipeline,
    PrintIR,
    Timing,
    Verify,
    get_pass,
    register,
)
from . import dce  # noqa: F401  (registers "dce")

__all__ = [
    "BaseInstrument", "DumpIR", "GLOBAL_INSTRUMENTS", "Pass", "Pipeline", "PrintIR", "REGISTRY", "Timing",
    "Verify", "get_pass", "register",
]
