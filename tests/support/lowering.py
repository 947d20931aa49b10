"""Helpers for unit tests of one lowering pass: a calibrated observed model, and the program just before
and just after the pass (the reference prefix of the lowered pipeline, then the pass alone)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.ao.quantization import QConfigMapping, get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import prepare_fx

from qfx.api import convert_options
from qfx.ir import lift
from qfx.ir.program import Program
from qfx.passes import Pipeline

# The lowered pipeline up to its first lowering pass.
REFERENCE_PREFIX = "apply-qconfig-mapping,equalize,observe-weights,swap-modules,insert-qdq,dce"


def observe(model: nn.Module, inputs: tuple, mapping: QConfigMapping | None = None) -> torch.fx.GraphModule:
    """`model` (put in eval mode) prepared with `mapping` (default: x86's) and calibrated once on `inputs`."""
    mapping = mapping if mapping is not None else get_default_qconfig_mapping("x86")
    observed = prepare_fx(model.eval(), mapping, inputs)
    observed(*inputs)
    return observed


def around_pass(observed: torch.fx.GraphModule, pass_name: str) -> tuple[Program, Program]:
    """(the program the lowering pass `pass_name` receives in convert_fx, the program it returns)."""
    program = lift(observed, options=convert_options(is_reference=False, convert_custom_config=None))
    before = Pipeline.parse(REFERENCE_PREFIX).run(program)
    return before, Pipeline.parse(pass_name).run(before)
