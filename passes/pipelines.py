"""The standard pipelines, in torch's convert order."""

from __future__ import annotations

from .manager import Pipeline

# observe weights -> equalize -> convert-time qconfig -> swap modules -> quantize/dequantize -> dce -> clean up
REFERENCE_PIPELINE = "apply-qconfig-mapping,equalize,observe-weights,swap-modules,insert-qdq,dce,cleanup"


def reference_pipeline() -> Pipeline:
    """The pipeline that turns an observed Program into torch's reference (or decomposed) model.

    Mode switches (decomposed, keep qconfig, ...) come from the program's ConvertOptions."""
    return Pipeline.parse(REFERENCE_PIPELINE)
