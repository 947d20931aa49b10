"""qfx passes: pure functions Program -> Program, the manager that runs them, and its instruments."""

from .instruments import BaseInstrument, DumpIR, PrintIR, Timing, Verify
from .manager import GLOBAL_INSTRUMENTS, REGISTRY, Pass, Pipeline, get_pass, register

# Importing each pass module registers its pass under its text name.
from . import apply_qconfig_mapping, cleanup, dce, equalize, insert_qdq, observe_weights, swap_modules  # noqa: F401,E402
from .pipelines import REFERENCE_PIPELINE, reference_pipeline  # noqa: E402

__all__ = [
    "BaseInstrument", "DumpIR", "GLOBAL_INSTRUMENTS", "Pass", "Pipeline", "PrintIR", "REFERENCE_PIPELINE",
    "REGISTRY", "Timing", "Verify", "get_pass", "reference_pipeline", "register",
]
