"""Helpers for unit tests of the lowering passes: calibrated observed models, the program a lowering pass
receives inside convert_fx (the reference prefix of the lowered pipeline), torch's lowered result to compare
with, and module-by-module comparisons."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch.ao.quantization import QConfigMapping, get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from qfx.compare import copy_for_torch
from qfx.api import convert_options
from qfx.ir import lift
from qfx.ir.program import Program
from qfx.passes import Pipeline
from tests.support.snapshot import diff_values

# The lowered pipeline up to its first lowering pass.
REFERENCE_PREFIX = "apply-qconfig-mapping,equalize,observe-weights,swap-modules,insert-qdq,dce"


def observe(model: nn.Module, inputs: tuple, mapping: QConfigMapping | None = None) -> torch.fx.GraphModule:
    """`model` (put in eval mode) prepared with `mapping` (default: x86's) and calibrated once on `inputs`."""
    mapping = mapping if mapping is not None else get_default_qconfig_mapping("x86")
    observed = prepare_fx(model.eval(), mapping, inputs)
    observed(*inputs)
    return observed


def calibrated(model: nn.Module, mapping: Any, example: tuple, backend_config: Any = None) -> torch.fx.GraphModule:
    """prepare_fx + two calibration batches (seeded; the second shifted, so ranges are not one batch's)."""
    torch.manual_seed(0)
    observed = prepare_fx(model.eval(), mapping, example, backend_config=backend_config)
    with torch.no_grad():
        for salt in range(2):
            observed(*(x + 0.1 * salt if x.is_floating_point() else x for x in example))
    return observed


def reference_program(observed: torch.fx.GraphModule, backend_config: Any = None) -> Program:
    """The observed model lifted for convert_fx and run through the reference prefix of the lowered pipeline."""
    options = convert_options(is_reference=False, convert_custom_config=None, backend_config=backend_config)
    return Pipeline.parse(REFERENCE_PREFIX).run(lift(observed, options=options))


def around_pass(observed: torch.fx.GraphModule, pass_name: str) -> tuple[Program, Program]:
    """(the program the lowering pass `pass_name` receives in convert_fx, the program it returns)."""
    before = reference_program(observed)
    return before, Pipeline.parse(pass_name).run(before)


def torch_lowered(observed: torch.fx.GraphModule, backend_config: Any = None) -> torch.fx.GraphModule:
    """torch's convert_fx of a copy of `observed`."""
    return convert_fx(copy_for_torch(observed), backend_config=backend_config)


def assert_same_module(ours: nn.Module, theirs: nn.Module, path: str) -> None:
    """Same class, same repr (scale, zero point, shapes) and same state_dict (packed params unpacked)."""
    assert type(ours) is type(theirs), f"{path}: {type(ours).__qualname__} vs {type(theirs).__qualname__}"
    assert repr(ours) == repr(theirs), path
    problems = diff_values(ours.state_dict(), theirs.state_dict(), f"{path}.state_dict()")
    assert not problems, "\n".join(problems)


def assert_modules_lowered_as_torch(observed: torch.fx.GraphModule, lowering: Pipeline, classes: tuple) -> bool:
    """The modules of `classes` that `lowering` leaves in the reference program are at the paths torch's
    convert_fx puts them, each the same module; False (nothing checked) when torch cannot lower the model."""
    try:
        expected = torch_lowered(observed)
    except Exception:  # noqa: BLE001 - models torch cannot lower say nothing about a pass
        return False
    after = lowering.run(reference_program(observed))
    ours = {p for p, m in after.modules.items() if isinstance(m, classes)}
    theirs = {p for p, m in expected.named_modules(remove_duplicate=False) if isinstance(m, classes)}
    assert ours == theirs
    for path in ours:
        assert_same_module(after.modules[path], expected.get_submodule(path), path)
    return True


def node_of(program: Program, target: str):
    """The call_module node calling `target` (the only one)."""
    (node,) = [n for n in program.graph.nodes if n.op == "call_module" and n.target == target]
    return node
