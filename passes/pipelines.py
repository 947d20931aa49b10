"""The standard pipelines, in torch's convert order."""

from __future__ import annotations

from typing import Iterable

from qfx.ir.errors import PipelineSpecError
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


MODES = ("reference", "decomposed", "lowered")


def pipeline_names(mode: str) -> list[str]:
    """The pass names of the standard pipeline of `mode` (one of MODES: decomposed runs the reference
    pipeline, with other options), in order, repeats included."""
    if mode not in MODES:
        raise PipelineSpecError(f"unknown convert mode {mode!r}; the modes are {', '.join(MODES)}")
    return (LOWERED_PIPELINE if mode == "lowered" else REFERENCE_PIPELINE).split(",")


def passes_through(mode: str, after: str, *, asked: str | None = None, also: Iterable[str] = ()) -> int:
    """How many passes of the `mode` pipeline run up to and including `after`: a pass name (its first run)
    or NAME#N (the Nth run of a pass the pipeline runs more than once, dce#2). Otherwise a PipelineSpecError
    that starts with `asked` (how the caller's user spelled the request; `after` quoted by default) and
    offers `also` (other answers the caller accepts) beside the pipeline's pass names."""
    names = pipeline_names(mode)
    asked = asked if asked is not None else f"'{after}'"
    name, numbered, nth = after.partition("#")
    positions = [i for i, n in enumerate(names) if n == name]
    if not positions:
        repeated = sorted({n for n in names if names.count(n) > 1})
        choices = ", ".join(dict.fromkeys(names))
        also = ", ".join(also)
        raise PipelineSpecError(
            f"{asked}: not a pass of the {mode} pipeline; use {f'{also} or one of: ' if also else 'one of: '}"
            f"{choices}"
            + (f" ({', '.join(repeated)} run{'s' if len(repeated) == 1 else ''} more than once: NAME#N names the "
               "Nth run)" if repeated else ""))
    if not numbered:
        return positions[0] + 1
    if not nth.isdigit() or not 1 <= int(nth) <= len(positions):
        runs = "once" if len(positions) == 1 else f"{len(positions)} times"
        raise PipelineSpecError(f"{asked}: the {mode} pipeline runs {name} {runs}; use "
                                f"{' or '.join(f'{name}#{k}' for k in range(1, len(positions) + 1))}")
    return positions[int(nth) - 1] + 1


def runs_lowering(pass_names: Iterable[str]) -> bool:
    """Whether passes of these names lower the program (any of the lower-* passes)."""
    return any(name.startswith("lower-") for name in pass_names)


def pipeline_for(options: ConvertOptions) -> Pipeline:
    """The standard pipeline for these convert options: lowered unless `is_reference`."""
    return reference_pipeline() if options.is_reference else lowered_pipeline()
