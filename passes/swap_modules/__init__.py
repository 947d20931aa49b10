"""swap-modules: replace the modules that torch's convert swaps, and record how their calls change.

Mirrors the call_module branch of the main loop of torch.ao.quantization.fx.convert.convert, in graph
order: observed standalone modules are converted on their own; weighted modules (root, QAT and fused
classes of the backend config) become float and reference quantized modules; custom modules become
their quantized classes. Observers and DeQuantStubs are insert-qdq's business and are skipped here.

The graph is not edited. New modules enter the Program with `with_modules`; the calling conventions of
standalone and statically quantized custom modules go to `quant.calling_conventions` for insert-qdq.

Torch mutates the model as its loop goes, and later calls of the same module see those mutations (a QAT
module's fake quant has run, a fused module holds a reference module, a standalone module is already
converted). `_Workspace` replays that on private copies so shared modules convert as they do in torch.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
import torch
from torch.ao.nn.intrinsic import _FusedModule
from torch.ao.quantization.stubs import DeQuantStub

from qfx.ir.errors import ConvertError
from qfx.ir.graph import Node
from qfx.ir.program import CallingConvention, ConvertOptions, OwnModule, Program, native_backend_config

from ..manager import register
from ..support.module_copies import as_converted_in_place
from ..support.observers import ObserverTest
from ..support.root_attributes import unique_device
from .custom import convert_custom, custom_module_classes
from .qat import working_module
from .standalone import StandaloneTest, convert_standalone
from .weighted import FastPaths, WeightedClasses, convert_weighted


class _Workspace:
    """Pass-local state: torch's view of the module table while its loop runs, and what changed.

    `current` holds the modules torch's `modules` dict would show for a target once it changed;
    `owned` holds private copies of input modules that torch mutates in place, so that repeated calls
    keep mutating the same copy, all made through one deepcopy memo (what input modules share, their
    copies share); `replaced` is what goes into the new Program.
    """

    def __init__(self, program: Program, options: ConvertOptions) -> None:
        self.program = program
        self.options = options
        self.current: dict[str, torch.nn.Module] = {}
        self.owned: dict[str, torch.nn.Module] = {}
        self.memo: dict[int, Any] = {}
        self.replaced: dict[str, torch.nn.Module] = {}
        self.conventions: dict[str, CallingConvention] = {}

    def owned_copy(self, target: str) -> torch.nn.Module:
        """A deep copy of the input module at `target`, made on first use and then reused."""
        if target not in self.owned:
            self.owned[target] = copy.deepcopy(self.program.modules[target], self.memo)
        return self.owned[target]

    def owned_qat_copy(self, target: str) -> torch.nn.Module:
        """The QAT module at `target` as converting may change it (`qat.working_module`), made on first use
        and then reused."""
        if target not in self.owned:
            self.owned[target] = working_module(self.program.modules[target], self.memo)
        return self.owned[target]


@register("swap-modules")
def swap_modules(program: Program) -> Program:
    """Swap standalone, weighted (reference/QAT/fused) and custom modules as torch's convert does.

    Needs: quant facts (a lifted observed model) and a backend config in the options; runs after the
    weight observers and equalization, before insert-qdq (observers must still be in the graph).
    Guarantees: the graph is unchanged; each swapped call_module target holds a new module object; the
    input Program and every module, observer and tensor it reaches are left as they were; calling
    conventions are recorded for standalone and statically quantized custom module calls, and the model's
    device as the pass found it (`quant.model_device`).
    """
    facts = program.quant
    if facts is None:
        raise ConvertError(
            "swap-modules needs the quantization facts of an observed model; lift the output of "
            "prepare_fx/prepare_qat_fx with observed=True"
        )
    options = program.options
    if options.backend_config is None:  # a hand-made ConvertOptions; qfx.api always sets one
        options = attrs.evolve(options, backend_config=native_backend_config())
    classes = WeightedClasses.of(options.backend_config)
    custom_config = options.convert_custom_config
    mapping = custom_config.observed_to_quantized_mapping if custom_config is not None else {}
    custom_classes = custom_module_classes(mapping)
    device = unique_device(program)
    work = _Workspace(program, options)
    swap_of = _SwapKinds(classes, custom_classes)
    # (node, its module in the input, that module's swap), classified once: the plan needs the weighted ones
    # ahead, and the loop only asks again about a target an earlier swap changed.
    calls = [(node, module, swap_of(module))
             for node, module in ((node, program.modules[node.target]) for node in program.graph.nodes
                                  if node.op == "call_module")]
    fast = FastPaths.plan([module for _, module, kind in calls if kind is _WEIGHTED], classes, device)

    for node, module, kind in calls:
        if node.target in work.current:
            module = work.current[node.target]
            kind = swap_of(module)
        if kind is _STANDALONE:
            _swap_standalone(node, module, work)
        elif kind is _WEIGHTED:
            _swap_weighted(node, module, work, classes, device, fast)
        elif kind is _CUSTOM:
            _swap_custom(node, work, mapping)

    conventions = {**facts.calling_conventions, **work.conventions} if work.conventions else facts.calling_conventions
    result = program.with_modules(work.replaced).evolve(
        quant=attrs.evolve(facts, calling_conventions=conventions, model_device=device))
    return _preserved_as_converted(result)


def _preserved_as_converted(program: Program) -> Program:
    """`program` with each preserved attribute that is an observed submodule (an OwnModule) standing for
    that module as torch's in-place convert leaves it, swapped modules and all (torch re-attaches the
    object it read before converting; lowering replaces modules in the converted model, not in it)."""
    preserved = program.options.preserved_attributes
    if not preserved or not any(isinstance(value, OwnModule) for value in preserved.values()):
        return program
    resolved = dict(preserved)
    for name, value in preserved.items():
        if isinstance(value, OwnModule):
            converted = as_converted_in_place(value.path, value.module, program.modules)
            resolved[name] = (OwnModule(value.path, value.module, in_model=False) if converted is None
                              else OwnModule(value.path, converted))
    return program.evolve(options=attrs.evolve(program.options, preserved_attributes=resolved))


# How swap-modules treats a called module (None: it stays as it is).
_STANDALONE, _WEIGHTED, _CUSTOM = "standalone", "weighted", "custom"


class _SwapKinds:
    """Which swap a called module gets, tested in the order of torch's loop (observers and DeQuantStubs
    first: they get none), for one pass run."""

    def __init__(self, classes: WeightedClasses, custom_classes: frozenset) -> None:
        self._classes = classes
        self._custom_classes = custom_classes
        self._is_observer = ObserverTest()
        self._is_standalone = StandaloneTest(classes.lookup)

    def __call__(self, module: torch.nn.Module) -> str | None:
        if self._is_observer(module) or isinstance(module, DeQuantStub):
            return None
        if self._is_standalone(module):
            return _STANDALONE
        if self._classes.is_weighted(module):
            return _WEIGHTED
        if self._classes.class_before_parametrizations(module) in self._custom_classes:
            return _CUSTOM
        return None


def _swap_standalone(node: Node, module: torch.fx.GraphModule, work: _Workspace) -> None:
    swap = convert_standalone(node, module, work.options)
    work.current[node.target] = swap.module
    work.replaced[node.target] = swap.module
    work.conventions[node.name] = swap.convention


def _swap_weighted(
    node: Node,
    module: torch.nn.Module,
    work: _Workspace,
    classes: WeightedClasses,
    device: torch.device | None,
    fast: FastPaths,
) -> None:
    if isinstance(module, classes.qat):
        # Converting runs the QAT module's weight fake quant, which torch does on the live module.
        module = work.owned_qat_copy(node.target)
    program = work.program
    new = convert_weighted(module, node.target, node.name, program.quant, work.options, classes, device, fast)
    if new is None:
        return
    work.replaced[node.target] = new
    if isinstance(new, _FusedModule) and not isinstance(module, classes.qat):
        # torch assigns the reference member into the fused module it holds, so later calls of the
        # same target find it converted; other swaps leave torch's table pointing at the old module.
        work.current[node.target] = new


def _swap_custom(node: Node, work: _Workspace, mapping: dict) -> None:
    swap = convert_custom(node, work.owned_copy(node.target), work.program, mapping)
    work.replaced[node.target] = swap.module
    if swap.convention is not None:
        work.conventions[node.name] = swap.convention
