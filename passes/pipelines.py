"""The standard pipelines, in torch's convert order."""

from __future__ import annotations

from typing import Iterable

from qfx.ir.program import ConvertOptions

from .manager import Pipeline

# observe weights -> equalize -> convert-time qconfig -> swap modules -> quantize/dequantize -> dce -> clean up
REFERENCE_PIPELINE = "apply-qconfig-mapping,equalize,observe-weights,swap-modules,insert-qdq,dce,cleanup"

# The reference passes up to dce, then torch's lowering to native kernels (one pass
# per step, in its order), dead-code elimination around weight folding, and the clean-up convert ends with.
LOWERED_PIPELINE = ",".join([
    "apply-qconfig-mapping,equalize,observe-weights,swap-modules,insert-qdq,dce",
    "lower-static-modules,lower-dynamic-modules,lower-weight-only-modules",
    "lower-static-functionals,lower-dynamic-functionals,lower-binary-ops,lower-tensor-info-ops",
    "lower-special-patterns,dce,fold-weights,dce,cleanup",
])


def reference_pipeline() -> Pipeline:
    """The pipeline that turns an observed Program into torch's reference (or decomposed) model.

    Mode switches (decomposed, keep qconfig, ...) come from the program's ConvertOptions."""
    return Pipeline.parse(REFERENCE_PIPELINE)


def lowered_pipeline() -> Pipeline:
    """The pipeline that turns an observed Program into torch's lowered model (convert_fx: native fbgemm/x86
    and qnnpack quantized modules and ops, prepacked weights folded into constants)."""
    return Pipeline.parse(LOWERED_PIPELINE)


def runs_lowering(pass_names: Iterable[str]) -> bool:
    """Whether passes of these names lower the program (any of the lower-* passes)."""
    return any(name.startswith("lower-") for name in pass_names)


def pipeline_for(options: ConvertOptions) -> Pipeline:
    """The standard pipeline for these convert options: lowered unless `is_reference`."""
    return reference_pipeline() if options.is_reference else lowered_pipeline()
