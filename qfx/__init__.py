"""qfx: PyTorch FX quantization convert as a functional compiler (lift -> pure passes -> codegen)."""

from qfx.ir import ConvertError, NotObservedModelError, PassError, Program, QfxError, UnsupportedError, lift, verify
from qfx.lowering import codegen
from qfx.passes import Pipeline, Timing, Verify, get_pass, reference_pipeline, register

from .api import (
    convert,
    convert_fx,
    convert_program,
    convert_to_reference_decomposed_fx,
    convert_to_reference_fx,
)

__all__ = [
    "ConvertError", "NotObservedModelError", "PassError", "Pipeline", "Program", "QfxError", "Timing",
    "UnsupportedError", "Verify", "codegen", "convert", "convert_fx", "convert_program",
    "convert_to_reference_decomposed_fx", "convert_to_reference_fx", "get_pass", "lift", "reference_pipeline",
    "register", "verify",
]
