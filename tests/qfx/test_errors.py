"""Every error qfx raises on purpose: the input that provokes it, the message the user sees.

`TABLE` has one row per error (the class, also torch's exception type where torch fails on the same
input, and a regex of the message). Each row builds a fresh input, calls the public API, and checks the
error, its message, and that the input is bit-identical afterwards. `test_every_error_class_is_listed`
finds every QfxError subclass in the product and fails if one has neither a row here nor a test elsewhere
named in `COVERED_ELSEWHERE`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import pickle
import pkgutil
import warnings
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import graphviz

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import QConfigMapping, get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from torch.ao.quantization.fx.custom_config import ConvertCustomConfig
from torch.ao.quantization.quantize_fx import convert_to_reference_fx, prepare_fx, prepare_qat_fx

import qfx
from qfx.cli.modelfile import ModelFileError, load_observed
from qfx.cli.prepare import BackendError, use_backend
from qfx.graphview import GraphvizMissingError, render
from qfx.ir import errors as E
from qfx.ir.edit import GraphEditError, GraphEditor
from qfx.ir.lift import lift
from qfx.lowering.codegen import codegen
from qfx.testing import assert_same_as_torch
from qfx.ir.frozendict import FrozenDict
from qfx.ir.validate import forget_table_devices, table_devices
from qfx.lowering.support.engine import EngineNotImplementedError
from qfx.passes import Pipeline, register
from qfx.passes.apply_qconfig_mapping import QConfigMismatchError
from qfx.passes.apply_qconfig_mapping.qconfig_assign import FusedQConfigError
from qfx.passes.equalize.weights import EqualizationTypeError
from tests.support.models import CASES_BY_NAME, convert_kwargs, prepare_case
from tests.support.snapshot import assert_same_model, assert_unchanged, snapshot

EXAMPLE = (torch.randn(1, 3, 8, 8),)


def _float_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU(), nn.Linear(6, 4)).eval()


@functools.cache
def _observed() -> torch.fx.GraphModule:
    observed = prepare_fx(_float_model(), get_default_qconfig_mapping(), EXAMPLE)
    with torch.no_grad():
        observed(*EXAMPLE)
    return observed


def observed() -> torch.fx.GraphModule:
    """A fresh calibrated observed model: Conv2d -> ReLU -> Linear, HistogramObservers."""
    return copy.deepcopy(_observed())


@functools.cache
def _zoo(name: str) -> torch.fx.GraphModule:
    return prepare_case(CASES_BY_NAME[name])[0]


def zoo(name: str) -> Callable[[], torch.fx.GraphModule]:
    return lambda: copy.deepcopy(_zoo(name))


def _dynamic_linear_reading_constant() -> torch.fx.GraphModule:
    """An observed dynamic Linear whose node was edited to read a constant."""
    model = zoo("keyword_calls_dynamic")()
    for node in model.graph.nodes:
        if node.op == "call_module" and node.target == "fc":
            node.args, node.kwargs = (3.0,), {}
    model.recompile()
    return model


def _observer_reads_constant(model: torch.fx.GraphModule) -> None:
    node = next(n for n in model.graph.nodes if n.target == "activation_post_process_0")
    node.args = (1.0,)
    model.recompile()


def _give_debug_handle(model: torch.fx.GraphModule) -> None:
    node = next(n for n in model.graph.nodes if n.target == "activation_post_process_0")
    node.meta["custom"] = {"numeric_debug_handle": 1}


def _drop_observed_facts(model: torch.fx.GraphModule) -> None:
    model.meta["_observed_graph_module_attrs"] = None


def _drop_prepare_mapping(model: torch.fx.GraphModule) -> None:
    facts = copy.copy(model.meta["_observed_graph_module_attrs"])
    facts.qconfig_mapping = None
    model.meta["_observed_graph_module_attrs"] = facts


def _without_facts_field(field: str) -> Callable[[torch.fx.GraphModule], None]:
    def edit(model: torch.fx.GraphModule) -> None:
        facts = copy.copy(model.meta["_observed_graph_module_attrs"])
        delattr(facts, field)  # (as in a record written by a torch without the field)
        model.meta["_observed_graph_module_attrs"] = facts
    return edit


def _mistype_observed_names(model: torch.fx.GraphModule) -> None:
    facts = copy.copy(model.meta["_observed_graph_module_attrs"])
    facts.observed_node_names = None
    model.meta["_observed_graph_module_attrs"] = facts


def _read_node_of_another_graph(model: torch.fx.GraphModule) -> None:
    node = next(n for n in model.graph.nodes if n.op == "call_module" and n.target == "0")
    node.args = (torch.fx.Graph().placeholder("elsewhere"),)


def _add_unscoped_node(model: torch.fx.GraphModule) -> None:
    output = next(n for n in model.graph.nodes if n.op == "output")
    with model.graph.inserting_before(output):
        output.args = (model.graph.call_function(torch.neg, (output.args[0],)),)
    model.recompile()


def _functional_linear_arg(position: int) -> Callable[[], torch.fx.GraphModule]:
    """A dynamic F.linear whose argument at `position` was edited to a constant."""
    def make() -> torch.fx.GraphModule:
        model = zoo("dynamic_functional_linear")()
        node = next(n for n in model.graph.nodes if n.target is torch.nn.functional.linear)
        node.args = (*node.args[:position], 5, *node.args[position + 1:])
        model.recompile()
        return model
    return make


class _ConvOfInputWeight(nn.Module):
    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, w, None, 1, 1)


class _FunctionalOnModuleWeight(nn.Module):
    """A Linear called as a module and its own weight read by F.linear: lowering replaces the module, whose
    `weight` is then a method, before the functional call's weight is folded."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + F.linear(x, self.linear.weight, self.linear.bias)


def _functional_on_module_weight() -> torch.fx.GraphModule:
    example = (torch.randn(2, 4),)
    model = prepare_fx(_FunctionalOnModuleWeight().eval(), get_default_qconfig_mapping(), example)
    model(*example)
    return model


def _weight_is_an_input() -> torch.fx.GraphModule:
    """F.conv2d whose weight is a forward() input, under dynamic quantization (which inserts no weight
    observer for it: convert meets the input itself as the weight)."""
    example = (torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3))
    model = prepare_fx(_ConvOfInputWeight().eval(),
                       QConfigMapping().set_global(torch.ao.quantization.default_dynamic_qconfig), example)
    model(*example)
    return model


def _size_of_constant() -> torch.fx.GraphModule:
    """A size() call edited to be made on a string constant (code that still compiles)."""
    model = zoo("copy_ops")()
    size = next(n for n in model.graph.nodes if n.name == "size")
    size.args = ("abc", *size.args[1:])
    model.recompile()
    return model


class _ConvCat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x, y):
        return torch.cat([self.conv(x), y], 1)


def _cat_of_constant() -> torch.fx.GraphModule:
    """A quantized cat whose list was edited to hold a constant after a dequantized input."""
    torch.manual_seed(0)
    model = prepare_fx(_ConvCat().eval(), get_default_qconfig_mapping(), (*EXAMPLE, *EXAMPLE))
    model(*EXAMPLE, *EXAMPLE)
    cat = next(n for n in model.graph.nodes if n.target is torch.cat)
    cat.args = ([cat.args[0][0], 5], *cat.args[1:])
    model.recompile()
    return model


def edited(edit: Callable[[torch.fx.GraphModule], None]) -> Callable[[], torch.fx.GraphModule]:
    """A fresh observed model, changed by `edit` (the damage the row is about)."""
    def make() -> torch.fx.GraphModule:
        model = observed()
        edit(model)
        return model
    return make


def qat_observed() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU()).train()
    prepared = prepare_qat_fx(model, get_default_qat_qconfig_mapping(), EXAMPLE)
    prepared(*EXAMPLE)
    return prepared


# --------------------------------------------------------------------------------------------------
# The damage


def _drop_buffer(m: torch.fx.GraphModule) -> None:
    m.activation_post_process_0._buffers["min_val"] = None  # as state_dict skips it


def _reshape_buffer(m: torch.fx.GraphModule) -> None:
    m.activation_post_process_0.min_val = torch.zeros(3)


def _non_tensor_buffer(m: torch.fx.GraphModule) -> None:
    del m.activation_post_process_0._buffers["max_val"]
    m.activation_post_process_0.max_val = "large"


def _integer_buffer(m: torch.fx.GraphModule) -> None:
    m.activation_post_process_1.max_val = torch.tensor(3)


def _second_output(m: torch.fx.GraphModule) -> None:
    out = next(n for n in m.graph.nodes if n.op == "output")
    with m.graph.inserting_before(out):
        m.graph.output(out.args[0])


def _read_missing_attribute(m: torch.fx.GraphModule) -> None:
    placeholder = next(iter(m.graph.nodes))
    with warnings.catch_warnings(), m.graph.inserting_after(placeholder):
        warnings.simplefilter("ignore")
        m.graph.get_attr("no_such_tensor")


def _call_missing_module(m: torch.fx.GraphModule) -> None:
    output = next(n for n in m.graph.nodes if n.op == "output")
    with m.graph.inserting_before(output):
        m.graph.create_node("call_module", "ghost", (next(iter(m.graph.nodes)),))


def _bad_linear_weight(m: torch.fx.GraphModule) -> None:
    m._modules["2"].weight = nn.Parameter(torch.randn(3))


def _qat_broken_fake_quant() -> torch.fx.GraphModule:
    model = qat_observed()
    fq = next(mod for name, mod in model.named_modules() if name.startswith("activation_post_process"))
    fq.activation_post_process = nn.Identity()
    return model


class NoFromObserved(nn.Module):
    """A 'quantized' custom module class that forgot from_observed."""


# --------------------------------------------------------------------------------------------------
# The table


@dataclasses.dataclass(frozen=True)
class Row:
    """One deliberate error: `make` builds the input (fresh each time), `call` gives it to qfx, which must
    raise `error` (also a `torch_type` where torch fails on the same input) with a message matching
    `message`."""

    id: str
    error: type[BaseException]
    make: Callable[[], Any]
    call: Callable[[Any], Any]
    message: str
    torch_type: type[BaseException] | None = None


ref = qfx.convert_to_reference_fx


def with_kwargs(**kwargs: Any) -> Callable[[Any], Any]:
    return lambda model: ref(model, **kwargs)


def program_of(model: torch.fx.GraphModule) -> qfx.Program:
    return lift(model, options=qfx.api.convert_options(is_reference=True, convert_custom_config=None))


def _edit_missing_node(model: torch.fx.GraphModule) -> None:
    GraphEditor(program_of(model))["no_such_node"]


def _erase_used_node(model: torch.fx.GraphModule) -> None:
    editor = GraphEditor(program_of(model))
    editor.erase("activation_post_process_0")


def _register_twice(_: Any) -> None:
    register("dce")(lambda p: p)


def _verify_broken(model: torch.fx.GraphModule) -> None:
    program = program_of(model)
    qfx.verify(program.with_nodes(list(program.graph.nodes)[1:]))


def _render_without_dot(model: torch.fx.GraphModule) -> None:
    def missing(*args: Any, **kwargs: Any) -> bytes:
        raise graphviz.ExecutableNotFound(["dot"])

    with mock.patch.object(graphviz.Digraph, "pipe", missing):
        render(program_of(model), "svg")


def _returns_not_a_program(model: torch.fx.GraphModule) -> None:
    Pipeline([qfx.passes.manager.Pass("bad", lambda p: {})]).run(program_of(model))


TABLE: list[Row] = [
    # the model itself
    Row("not-a-graph-module", E.ConvertValueError, lambda: nn.Linear(2, 2), ref,
        r"input model must be a GraphModule, Got type:.*Linear", ValueError),
    Row("not-a-graph-module-raw", E.NotObservedModelError, lambda: nn.Linear(2, 2),
        lambda m: qfx.convert(m, is_reference=True), r"expected a torch\.fx\.GraphModule, got Linear", AssertionError),
    Row("not-prepared", E.NotObservedModelError, lambda: torch.fx.symbolic_trace(_float_model()), ref,
        r"has no '_observed_graph_module_attrs' in its meta; run prepare_fx", AssertionError),
    Row("meta-device", E.DeviceError, lambda: observed().to("meta"), ref,
        r"observer 'activation_post_process_0' \(HistogramObserver, node 'activation_post_process_0'\): tensor "
        r"'activation_post_process_0\.\w+' is on the meta device", RuntimeError),
    Row("two-outputs", E.MalformedGraphError, edited(_second_output), ref,
        r"(?s)on the model given to convert .*the output node must be last.*2 output nodes"),
    Row("missing-submodule", E.MissingTargetError, edited(_call_missing_module), ref,
        r"node target 'ghost' does not exist on the module", KeyError),
    Row("missing-get-attr-target", E.MissingTargetError, edited(_read_missing_attribute), ref,
        r"node target 'no_such_tensor' does not exist on the module: .*; restore the attribute", RuntimeError),
    # observers
    Row("observer-buffer-missing", E.ObserverStateError, edited(_drop_buffer), ref,
        r"observer 'activation_post_process_0' \(HistogramObserver, node 'activation_post_process_0'\): "
        r"buffer 'min_val' is missing", AttributeError),
    # (a buffer of a shape torch's qparams cannot read fails where torch's does, with its type)
    Row("observer-buffer-shape", E.PassError, edited(_reshape_buffer), ref,
        r"pass 'insert-qdq' failed at node 'activation_post_process_0' \(module 'activation_post_process_0': "
        r"HistogramObserver\): RuntimeError: .*3 elements", RuntimeError),
    Row("observer-buffer-not-a-tensor", E.ObserverStateError, edited(_non_tensor_buffer), ref,
        r"buffer 'max_val' is str 'large', not a tensor", TypeError),
    Row("fake-quantize-without-observer", E.ObserverStateError, _qat_broken_fake_quant, ref,
        r"its activation_post_process is Identity .*, not an observer"),
    # arguments
    Row("flag-without-truth-value", E.FlagError, observed, with_kwargs(_remove_qconfig=torch.ones(2)),
        r"_remove_qconfig must be true or false, got Tensor .*; pass True or False", RuntimeError),
    Row("convert-custom-config-type", E.ConfigAttributeError, observed, with_kwargs(convert_custom_config="abc"),
        r"convert_custom_config must be a ConvertCustomConfig, a dict or None, got str 'abc'", AttributeError),
    Row("preserved-attributes-not-names", E.ArgumentError, observed,
        with_kwargs(convert_custom_config={"preserved_attributes": [1]}),
        r"preserved_attributes must be attribute names, got list \[1\]", TypeError),
    Row("convert-custom-config-dict-unreadable", E.ConfigDictError, observed,
        with_kwargs(convert_custom_config={"observed_to_quantized_custom_module_class": {"nope": {}}}),
        r"convert_custom_config: this dict cannot be read as a ConvertCustomConfig", ValueError),
    Row("qconfig-mapping-type", E.ConvertAssertionError, observed, with_kwargs(qconfig_mapping=[("", None)]),
        r"qconfig_mapping must be None or a QConfigMapping", AssertionError),
    Row("qconfig-mapping-entry", E.ConfigAttributeError, observed,
        with_kwargs(qconfig_mapping=QConfigMapping().set_global("x86")),
        r"qconfig_mapping: the global entry must be a QConfig or None, got str 'x86'", AttributeError),
    Row("backend-config-type", E.ConfigAttributeError, observed, with_kwargs(backend_config=[1]),
        r"backend_config must be a BackendConfig, a dict or None, got list \[1\]", AttributeError),
    Row("backend-config-dict-unreadable", E.ConfigDictError, observed,
        with_kwargs(backend_config={"name": "b", "configs": [3]}),
        r"backend_config: this dict cannot be read as a BackendConfig", ValueError),
    Row("instruments-type", E.ArgumentError, observed, with_kwargs(instruments="timing"),
        r"instruments must be a list or tuple of instruments, got str 'timing'"),
    Row("instrument-without-hooks", E.ArgumentError, observed, with_kwargs(instruments=[object()]),
        r"instruments\[0\] \(object .*\) is not an instrument: it lacks before_pass, after_pass, after_failure"),
    # inside the passes
    Row("pass-fails-on-damaged-module", E.PassError, edited(_bad_linear_weight), ref,
        r"^pass 'swap-modules' failed at node '_2' \(module '2': Linear\): IndexError: Dimension out of range"
        r".*\(passes already run: apply-qconfig-mapping, equalize, observe-weights\); if torch's convert_fx "
        r"converts a copy of this model, this is a qfx bug: please report it .*; if not, fix the node or module "
        r"named$", IndexError),
    Row("pass-returns-not-a-program", E.PassError, observed, _returns_not_a_program,
        r"pass 'bad' failed: returned dict, not a Program"),
    Row("decomposed-fp16", E.ConvertAssertionError, zoo("lstm_fp16_dynamic"),
        lambda m: qfx.convert_to_reference_decomposed_fx(m, **convert_kwargs(CASES_BY_NAME["lstm_fp16_dynamic"])),
        r"Unsupported dtype: torch.float16", AssertionError),
    Row("equalization-parameter-slot", EqualizationTypeError, zoo("equalization_functional_parameters"),
        lambda m: ref(m, **convert_kwargs(CASES_BY_NAME["equalization_functional_parameters"])),
        r"cannot assign 'torch.FloatTensor' as parameter 'w1'", TypeError),
    Row("convert-time-mapping-missing-key", QConfigMismatchError, zoo("convert_time_qconfig_missing_key"),
        lambda m: ref(m, **convert_kwargs(CASES_BY_NAME["convert_time_qconfig_missing_key"])),
        r"Missing key module_name sub in convert QConfigMapping", AssertionError),
    Row("convert-time-mapping-fusion", FusedQConfigError, zoo("convert_time_qconfig_fusion_mismatch"),
        lambda m: ref(m, **convert_kwargs(CASES_BY_NAME["convert_time_qconfig_fusion_mismatch"])),
        r"During fusion, we need to specify the same qconfigs for all module types", LookupError),
    # lowering where torch's lowering fails: the same builtin type
    Row("lower-keyword-input", E.ConvertIndexError, zoo("keyword_calls_unquantized"), qfx.convert_fx,
        r"ReLU node 'relu' has no positional argument, and lowering reads its first one; call it with its "
        r"input as a positional argument", IndexError),
    Row("lower-constant-input", E.ConvertAttributeError, _dynamic_linear_reading_constant, qfx.convert_fx,
        r"dynamic reference module node 'fc' should read a node as its first argument, it reads 3.0",
        AttributeError),
    Row("lower-cat-of-constant", E.ConvertAttributeError, _cat_of_constant, qfx.convert_fx,
        r"node 'cat' \(.*cat.*\): item 5 of its first input is not a node; pass tensors only", AttributeError),
    Row("functional-weight-is-an-input", E.ConvertTypeError, _weight_is_an_input, ref,
        r"node 'conv2d': its weight is the forward\(\) input 'w' itself; .* make the weight a parameter or "
        r"buffer of the model$", TypeError),
    Row("lower-functional-weight-of-lowered-module", E.ConvertTypeError, _functional_on_module_weight,
        qfx.convert_fx, r"weight folding: node 'quantize_per_channel' failed \(TypeError: .*must be Tensor, not "
        r"method\) on 'linear.weight', read from module 'linear', which an earlier pass replaced by a "
        r"torch.ao.nn.quantized.modules.linear.Linear \(its 'weight' is a method\); torch's convert fails here too. "
        r"Give the functional call a weight of its own", TypeError),
    Row("functional-weight-constant", E.ConvertAttributeError, _functional_linear_arg(1), ref,
        r"node 'linear': its weight argument is the constant 5, not a node", AttributeError),
    Row("lower-functional-input-constant", E.ConvertAttributeError, _functional_linear_arg(0), qfx.convert_fx,
        r"functional node 'linear': its input is the constant 5, not a node", AttributeError),
    Row("lower-user-quantize-computed-scale", E.ConvertTypeError, zoo("user_quantize_computed_scale"),
        qfx.convert_fx, r"expected a get_attr node, got node 'truediv' \(call_function .*truediv.*\)", TypeError),
    Row("lower-size-of-constant", E.ConvertAttributeError, _size_of_constant, qfx.convert_fx,
        r"shape or size node 'size' should read a node as its first argument, it reads 'abc'", AttributeError),
    Row("lower-no-fused-relu-op", E.ConvertKeyError, zoo("matmul_relu_pattern"),
        lambda m: qfx.convert_fx(m, **convert_kwargs(CASES_BY_NAME["matmul_relu_pattern"])),
        r"binary op node 'matmul': .*matmul.* has no quantized fused-ReLU op to lower to; leave the ReLU out",
        KeyError),
    Row("engine-no-kernel", EngineNotImplementedError, zoo("fp16_dynamic_between_static"), qfx.convert_fx,
        r"node 'b' \(module 'b'\): the '\w+' quantized engine cannot build .*Linear", NotImplementedError),
    # graphs and meta edited after prepare: torch's exception types
    Row("observer-reads-constant", E.ConvertAssertionError, edited(_observer_reads_constant),
        qfx.convert_to_reference_decomposed_fx,
        r"Expecting observed node to be a Node, but got 1.0 \(observer node 'activation_post_process_0'\)",
        AssertionError),
    Row("numeric-debug-handle", E.ConvertNotImplementedError, edited(_give_debug_handle),
        qfx.convert_to_reference_decomposed_fx,
        r"observer node 'activation_post_process_0' carries a numeric debug handle: pt2e numeric suite has been "
        r"migrated to torchao", NotImplementedError),
    Row("observed-facts-none", E.ConvertAttributeError, edited(_drop_observed_facts), ref,
        r"the model's meta\['_observed_graph_module_attrs'\] is NoneType, not the ObservedGraphModuleAttrs "
        r"prepare_fx records .*; convert the model prepare_fx returned", AttributeError),
    Row("prepare-mapping-none", E.ConvertAttributeError, edited(_drop_prepare_mapping),
        lambda m: ref(m, qconfig_mapping=get_default_qconfig_mapping()),
        r"a qconfig_mapping was passed to convert, but the model carries no QConfigMapping from prepare",
        AttributeError),
    *[Row(f"prepare-record-without-{field}", E.ConvertAttributeError, edited(_without_facts_field(field)),
          lambda m: ref(m, qconfig_mapping=get_default_qconfig_mapping()),
          rf"a qconfig_mapping was passed to convert, but the model's record from prepare has no '{field}'",
          AttributeError) for field in ("qconfig_mapping", "is_qat")],
    Row("observed-facts-field-type", E.ConvertTypeError, edited(_mistype_observed_names), ref,
        r"holds a field of the wrong kind \(TypeError: 'NoneType' object is not iterable\).*observed_node_names a "
        r"set of node names; convert the model prepare_fx returned", TypeError),
    Row("argument-of-another-graph", E.MalformedGraphError, edited(_read_node_of_another_graph), ref,
        r"node '_0' reads node 'elsewhere' of another graph"),
    Row("node-without-scope", E.ConvertKeyError, edited(_add_unscoped_node),
        lambda m: ref(m, qconfig_mapping=get_default_qconfig_mapping()),
        r"node 'neg' \(call_function .*neg.*\) has no entry in prepare's node_name_to_scope", KeyError),
    # the IR and pipeline tools
    Row("verify", E.VerificationError, observed, _verify_broken, r"(?s)IR verification failed:.*defined nowhere"),
    Row("pipeline-spec-unknown", E.UnknownPassError, lambda: None, lambda _: Pipeline.parse("dce,no-such-pass"),
        r"unknown pass 'no-such-pass'; known passes: .*dce", ValueError),
    Row("pipeline-spec-malformed", E.PipelineSpecError, lambda: None, lambda _: Pipeline.parse("dce,,cleanup"),
        r"malformed pipeline spec 'dce,,cleanup'", ValueError),
    Row("register-twice", E.QfxError, lambda: None, _register_twice, r"a pass named 'dce' is already registered"),
    Row("edit-unknown-node", GraphEditError, observed, _edit_missing_node,
        r"no node named 'no_such_node' in the graph being edited"),
    Row("edit-erase-used-node", GraphEditError, observed, _erase_used_node,
        r"cannot erase node 'activation_post_process_0': it still has users"),
    Row("backend-unsupported", BackendError, lambda: None, lambda _: use_backend("no-such-engine"),
        r"backend 'no-such-engine' is not supported by this torch build", ValueError),
    Row("graphviz-missing", GraphvizMissingError, observed, _render_without_dot, r".+", RuntimeError),
    Row("preserved-attribute-unsettable", E.CodegenError, observed,
        lambda m: qfx.convert_fx(m, convert_custom_config=ConvertCustomConfig().set_preserved_attributes(["code"])),
        r"the preserved attribute 'code' cannot be set on the converted GraphModule .*no setter.*; leave it out",
        AttributeError),
    Row("preserved-attribute-own-method", E.ConvertValueError, observed,
        lambda m: qfx.convert_fx(m, convert_custom_config=ConvertCustomConfig().set_preserved_attributes(["forward"])),
        r"preserves 'forward', a method of the observed model itself; .*: leave 'forward' out", ValueError),
    Row("model-file-missing", ModelFileError, lambda: None, lambda _: load_observed("/nonexistent/model.pt"),
        r"cannot read '/nonexistent/model.pt': no such file"),
]

# Error classes whose provoking inputs are internal structures a user cannot build through the API; the
# tests that construct them directly (the file must name the class).
COVERED_ELSEWHERE: dict[str, str] = {
    "ConvertError": "tests/passes/test_swap_modules.py",
    "UnsupportedError": "tests/passes/test_apply_qconfig_mapping.py",
    "MissingQConfigAttributeError": "tests/passes/test_swap_modules.py",
    "CustomModuleError": "tests/passes/test_swap_modules.py",
    "StandaloneOutputError": "tests/passes/test_swap_modules.py",
    "EngineError": "tests/lowering/test_lower_dynamic_modules.py",
    "LiftError": "tests/lowering/test_roundtrip.py",
    "EntryPointError": "tests/qfx/test_entrypoint.py",
    "UserModelError": "tests/qfx/test_cli.py",
    "GraphBuildError": "tests/ir/test_ir.py",
    "InstrumentError": "tests/passes/test_manager.py",
}

# Raised on purpose but not provoked by any test yet: internal-consistency checks whose inputs need a
# hand-built equalization graph or backend config (see the session report).
KNOWN_GAPS: dict[str, str] = {
    "EqualizationStructureError": "equalize: an equalization observer in an unexpected place",
    "EqualizationShapeError": "equalize: input and weight equalization statistics of different shapes",
    "MissingReferenceModuleError": "swap-modules: a backend config pattern without a reference module",
}


@pytest.mark.parametrize("row", TABLE, ids=[r.id for r in TABLE])
def test_error(row: Row) -> None:
    """The row's input gives the row's error and message, and is left exactly as it was."""
    model = row.make()
    before = snapshot(model) if isinstance(model, nn.Module) else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(row.error, match=row.message) as info:
            row.call(model)
    assert isinstance(info.value, qfx.QfxError), f"{row.id}: not a QfxError: {info.value!r}"
    if row.torch_type is not None:
        assert isinstance(info.value, row.torch_type), f"{row.id}: not a {row.torch_type.__name__}"
    if before is not None:
        assert_unchanged(before, model)
    # errors travel back from worker processes: they pickle, as what they are
    clone = pickle.loads(pickle.dumps(info.value))
    assert type(clone) is type(info.value) and str(clone) == str(info.value), row.id


def test_uncalibrated_observers_warn_and_convert_as_torch_does() -> None:
    """Observers that never saw data: one warning naming each observer and its node; the result is torch's."""

    model = prepare_fx(_float_model(), get_default_qconfig_mapping(), EXAMPLE)
    before = snapshot(model)
    with pytest.warns(E.UncalibratedObserverWarning,
                      match=r"3 observer\(s\) never saw data: 'activation_post_process_0' \(node "
                            r"'activation_post_process_0'\), .*as torch does"):
        ours = ref(model)
    assert_unchanged(before, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = convert_to_reference_fx(copy.deepcopy(model))
    torch.testing.assert_close(ours(*EXAMPLE), theirs(*EXAMPLE), rtol=0, atol=0)


def test_calibrated_observers_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", E.UncalibratedObserverWarning)
        ref(observed())


def test_fake_quants_with_qparams_of_their_own_do_not_warn() -> None:
    """A fake quant whose qparams are its own (a _LearnableFakeQuantize learning them, its observer never
    run) does not read its observer: no warning, torch's result; one that asks its observer still warns."""
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, QConfig, QConfigMapping
    from torch.ao.quantization._learnable_fake_quantize import _LearnableFakeQuantize
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    def learnable(dtype: torch.dtype, low: int, high: int) -> Any:
        return _LearnableFakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=low, quant_max=high,
                                                dtype=dtype, scale=0.1, zero_point=0.0)

    qconfig = QConfig(activation=learnable(torch.quint8, 0, 255), weight=learnable(torch.qint8, -128, 127))
    model = prepare_qat_fx(nn.Sequential(nn.Linear(6, 3)).train(), QConfigMapping().set_global(qconfig),
                           (torch.randn(4, 6),))
    for module in model.modules():
        if isinstance(module, _LearnableFakeQuantize):
            module.enable_param_learning()  # (its observer is off from now on)
    model(torch.randn(4, 6)).sum().backward()
    model.eval()
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", E.UncalibratedObserverWarning)
        ours = ref(model)
    assert_unchanged(before, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = convert_to_reference_fx(copy.deepcopy(model))
    assert_same_model(ours, theirs)

    asking = QConfig(activation=FakeQuantize.with_args(observer=MovingAverageMinMaxObserver),
                     weight=qconfig.weight)
    model = prepare_qat_fx(nn.Sequential(nn.Linear(6, 3)).train(), QConfigMapping().set_global(asking),
                           (torch.randn(4, 6),))
    with pytest.warns(E.UncalibratedObserverWarning, match=r"2 observer\(s\) never saw data"):
        ref(model.eval())


class _FakeDevice(torch.Tensor):
    """A CPU tensor that reports another device (this machine has one)."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 0)


# Arguments torch converts with: it tests flags for truth, iterates over the preserved names and reads only
# the custom-module and qconfig entries that apply to the model's nodes.
ACCEPTED_ARGUMENTS: dict[str, Callable[[], dict[str, Any]]] = {
    "flags-truthy": lambda: {"_remove_qconfig": "yes"},
    "flags-none": lambda: {"_remove_qconfig": None},
    "preserved-set": lambda: {"convert_custom_config": ConvertCustomConfig().set_preserved_attributes({"extra"})},
    "custom-modules-not-in-the-model": lambda: {"convert_custom_config": ConvertCustomConfig()
                                                .set_observed_to_quantized_mapping(nn.Linear, NoFromObserved)
                                                .set_observed_to_quantized_mapping("Linear", "QuantizedLinear")},
    "qconfig-entry-matching-nothing": lambda: {"qconfig_mapping": get_default_qconfig_mapping()
                                               .set_module_name("no_such_module", "x86")},
}


@pytest.mark.parametrize("name", sorted(ACCEPTED_ARGUMENTS))
def test_arguments_torch_converts_with_are_accepted(name: str) -> None:
    model, for_torch = observed(), observed()  # (a deepcopy would drop the plain attribute)
    model.extra = for_torch.extra = 7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = ref(model, **ACCEPTED_ARGUMENTS[name]())
        theirs = convert_to_reference_fx(for_torch, **ACCEPTED_ARGUMENTS[name]())
    assert ours.code == theirs.code and getattr(ours, "extra", None) == getattr(theirs, "extra", None)


def test_an_unused_call_after_the_output_is_dropped_as_torch_drops_it() -> None:
    """graph.call_function puts a node after the output by default; torch's dead-code elimination removes
    it (its name stays taken)."""
    model = observed()
    model.graph.call_function(torch.neg, (next(iter(model.graph.nodes)),))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ref(model).code == convert_to_reference_fx(copy.deepcopy(model)).code


@pytest.mark.parametrize("name", ["head", "input", "def", "a-b"])
def test_a_node_renamed_by_assignment_converts_as_torch_converts_it(name: str) -> None:
    """`node.name = ...` leaves the new name out of FX's namespace, and FX's code generator renames a name
    that is a builtin, a keyword or no identifier; torch converts such a model."""
    from qfx.compare import copy_for_torch, differences

    model = observed()
    next(n for n in model.graph.nodes if n.op == "call_module" and n.target == "2").name = name
    model.recompile()
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ours, theirs in ((qfx.convert_to_reference_fx, convert_to_reference_fx),
                             (qfx.convert_fx, torch.ao.quantization.quantize_fx.convert_fx)):
            assert differences(ours(model), theirs(copy_for_torch(model)), EXAMPLE) == []
    assert_unchanged(before, model)


def test_observer_states_torch_converts_are_converted() -> None:
    """Buffers torch's qparams read however they are (an integer max_val): no up-front refusal."""
    model = observed()
    _integer_buffer(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ref(model).code == convert_to_reference_fx(copy.deepcopy(model)).code


def test_observers_on_the_meta_device_are_refused_and_other_meta_tensors_are_not() -> None:
    """Convert reads the observers' statistics (torch fails on meta ones with a RuntimeError); a meta tensor
    convert never reads (an extra buffer, a float module's weight) is left alone, as torch leaves it."""
    model = observed()
    model.activation_post_process_0.to("meta")
    with pytest.raises(E.DeviceError, match=r"observer 'activation_post_process_0' .*: tensor "
                                            r"'activation_post_process_0\.\w+' is on the meta device"):
        ref(model)
    model = observed()
    model.register_buffer("unread", torch.zeros(3, device="meta"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ref(model).code == convert_to_reference_fx(copy.deepcopy(model)).code


def test_table_devices_are_remembered_for_immutable_tables_only() -> None:
    """The devices of the last pair of FrozenDict tables are remembered; plain dicts, which may change, are
    looked at every time, and other tables get their own answer."""
    child = torch.nn.Linear(2, 2)
    plain = {"fc": child}
    assert table_devices(plain, {}) == {torch.device("cpu")}
    plain["odd"] = torch.nn.Module()
    plain["odd"].register_buffer("elsewhere", torch.zeros(1).as_subclass(_FakeDevice))
    assert table_devices(plain, {}) == {torch.device("cpu"), torch.device("cuda", 0)}
    frozen, attributes = FrozenDict({"fc": child}), FrozenDict()
    first = table_devices(frozen, attributes)
    assert table_devices(frozen, attributes) is first
    other = FrozenDict({"odd": plain["odd"]})
    assert table_devices(other, attributes) == {torch.device("cuda", 0)}


def test_table_devices_of_a_table_sharing_entries_with_the_last_one() -> None:
    """A new table that shares entries with the last one asked about (as after a pass swapped some
    modules) is answered from its other entries when those settle it, else by a full walk."""
    shared, attributes = torch.nn.Linear(2, 2), FrozenDict()
    forget_table_devices()
    assert table_devices(FrozenDict({"a": shared, "b": torch.nn.Linear(2, 2)}), attributes) == {torch.device("cpu")}
    # the shared entry is not looked at again (the Program contract: its modules do not change) ...
    shared.register_buffer("moved", torch.zeros(1).as_subclass(_FakeDevice))
    assert table_devices(FrozenDict({"a": shared, "b": torch.nn.Linear(3, 3)}), attributes) == {torch.device("cpu")}
    # ... while fresh entries on another device, or with no tensors at all, take the full walk
    elsewhere = torch.nn.Module()
    elsewhere.register_buffer("x", torch.zeros(1).as_subclass(_FakeDevice))
    assert table_devices(FrozenDict({"a": shared, "c": elsewhere}), attributes) == {
        torch.device("cpu"), torch.device("cuda", 0)}
    forget_table_devices()
    plain = torch.nn.Linear(2, 2)
    assert table_devices(FrozenDict({"a": plain}), attributes) == {torch.device("cpu")}
    assert table_devices(FrozenDict({"r": torch.nn.ReLU()}), attributes) == frozenset()
    forget_table_devices()


def _product_error_classes() -> dict[str, type]:
    for package in ("qfx", "qfx.ir", "qfx.passes", "qfx.lowering"):
        pkg = importlib.import_module(package)
        for info in pkgutil.walk_packages(pkg.__path__, f"{package}."):
            if not info.name.startswith("qfx.testing") and not info.name.endswith("__main__"):
                importlib.import_module(info.name)
    found: dict[str, type] = {}
    todo = [qfx.QfxError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("qfx.") or cls.__module__ == "qfx":
            found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    # (the generated PassError[KeyError]-style classes and private bases are not raised by name)
    return {k: v for k, v in found.items() if "[" not in k and not k.startswith("_")}


def test_every_error_class_is_listed() -> None:
    """A new QfxError subclass needs a row in TABLE (or a named test elsewhere)."""
    listed = {r.error.__name__ for r in TABLE}
    missing = sorted(set(_product_error_classes()) - listed - set(COVERED_ELSEWHERE) - set(KNOWN_GAPS))
    assert not missing, f"QfxError subclasses with no row in TABLE: {missing}"
    root = Path(__file__).resolve().parents[2]
    for name, path in COVERED_ELSEWHERE.items():
        assert name in (root / path).read_text(), f"{path} does not test {name}"


@pytest.mark.parametrize("field", ["qconfig_mapping", "is_qat"])
@pytest.mark.parametrize("mode", ["reference", "lowered"])
def test_a_record_without_the_fields_only_a_convert_time_mapping_reads_converts_as_torchs(field: str,
                                                                                         mode: str) -> None:
    model = edited(_without_facts_field(field))()
    assert_same_as_torch(model, is_reference=mode == "reference", example_inputs=EXAMPLE)
    rebuilt = codegen(lift(model))  # the observed model rebuilt (as saving does) keeps its record as it is
    assert not hasattr(rebuilt.meta["_observed_graph_module_attrs"], field)
