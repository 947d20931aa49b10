"""insert-qdq: turn every activation observer into quantize/dequantize ops, as torch's convert does.

Walks the graph once, in order (torch's convert loop), and for each node:
- a placeholder listed in `input_quantized_idxs` gets a `dequantize` right after it;
- an observer becomes quantize -> dequantize (static per-tensor/per-channel, dynamic, fp16; the
  `quantized_decomposed` ops when `options.is_decomposed`), or disappears when its neighbours all have a None
  qconfig or its dtype cannot be converted; an observer reading a statically quantized custom module, and a
  DeQuantStub, become a lone `dequantize` after the value they read;
- a call_module with a CallingConvention (recorded by swap-modules for standalone and custom modules) reads the
  quantized values behind its `dequantize` inputs, and gets a `dequantize` after it when it returns quantized;
- the output node drops the final `dequantize` of every position in `output_quantized_idxs`.
Scale and zero-point constants become root attributes named as torch names them
(`<module path><_input?>_scale_<n>`), so the generated code is the same.
"""

from __future__ import annotations

import functools
import operator
import warnings
from typing import Any

import torch
from torch.ao.quantization.stubs import DeQuantStub
from torch.ao.quantization.utils import is_per_channel, to_underlying_dtype

from qfx.ir.args import Arg, DictArg, ListArg, Ref, TupleArg
from qfx.ir.errors import (
    ConvertAssertionError,
    ConvertError,
    ConvertIndexError,
    ConvertKeyError,
    ConvertNotImplementedError,
    UnsupportedError,
)
from qfx.ir.graph import Node
from qfx.ir.program import Absent, CallingConvention, Program, QuantFacts
from qfx.ir.rewrite import GraphBuilder
from qfx.ir.users_order import UsersOrder

from .manager import register
from .support.observers import HANDS_OVER, ObserverTest, QParamsReads
from .support.qparams import batched_histogram_qparams, batched_per_tensor_qparams
from .support.root_attributes import AttributeAllocator, unique_device

# Importing registers torch.ops.quantized_decomposed.*.
from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401,E402

qd = torch.ops.quantized_decomposed

# dtypes whose static observers become quantize/dequantize ops.
STATIC_DTYPES_DECOMPOSED = (
    torch.quint8, torch.qint8, torch.qint32, torch.uint8, torch.int8, torch.uint16, torch.int16, torch.int32,
    torch.float8_e5m2, torch.float8_e4m3fn,
)
STATIC_DTYPES_TORCH_OPS = (torch.quint8, torch.qint8, torch.qint32, torch.float8_e5m2, torch.float8_e4m3fn)

def _qparams_source(module: Any) -> Any:
    """The module whose calculate_qparams() gives `module`'s: the observer a torch fake quant holds (read
    from its own tables), else the module itself."""
    if getattr(type(module), "calculate_qparams", None) in HANDS_OVER:
        observer = module.__dict__.get("_modules", {}).get("activation_post_process")
        if observer is not None:
            return observer
    return module


# torch's helpers build their tables on every call; the answers only depend on the argument.
_underlying_dtype = functools.cache(to_underlying_dtype)
_is_per_channel = functools.cache(is_per_channel)

CHOOSE_QPARAMS_BY_QSCHEME = {
    torch.per_tensor_affine: qd.choose_qparams.tensor,
    torch.per_tensor_symmetric: qd.choose_qparams_symmetric.tensor,
}


def observer_is_dynamic(observer: Any) -> bool:
    """Whether the observer asks for dynamic quantization."""
    return bool(getattr(observer, "is_dynamic", False))


def _refuse_debug_handle(node: Node, entries: Any) -> None:
    """torch's decomposed convert refuses an observer whose meta `entries` hold a pt2e numeric debug handle."""
    if "numeric_debug_handle" in entries:
        raise ConvertNotImplementedError(
            f"observer node '{node.name}' carries a numeric debug handle: pt2e numeric suite has been migrated "
            "to torchao (https://github.com/pytorch/ao); drop the handle from the node's meta")


def observer_is_convertible(observer: Any) -> bool:
    """torch's test for observers that convert knows how to turn into ops."""
    dtype = observer.dtype
    return (dtype in STATIC_DTYPES_DECOMPOSED and not observer_is_dynamic(observer)) or observer_is_dynamic(
        observer
    ) or dtype == torch.float16


@register("insert-qdq")
def insert_qdq(program: Program) -> Program:
    """Replace observers by quantize/dequantize ops and apply quantized I/O conventions.

    Needs: swap-modules has run (it records the calling conventions of standalone and custom modules).
    Guarantees: no call_module to an activation observer whose conversion torch supports remains; new
    scale/zero-point tensors live in `program.attributes`; node and attribute names are torch's.
    """
    if program.quant is None:
        return program
    return _QdqRewrite(program).run()


class _QdqRewrite:
    """One run of insert-qdq (mutable state private to the run)."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.quant: QuantFacts = program.quant  # type: ignore[assignment]
        self.builder = GraphBuilder(program)
        self.attrs = AttributeAllocator(program)
        self.decomposed = program.options.is_decomposed
        config = self.quant.prepare_custom_config
        self.input_quantized_idxs = list(config.input_quantized_indexes)
        self.output_quantized_idxs = list(config.output_quantized_indexes)
        self._device: Any = "unset"
        self._per_tensor: dict[int, tuple[float, int]] | None = None
        self.modules = program.modules
        self.is_observer = ObserverTest()
        self.reads = QParamsReads()
        self._plain_lookup_classes: dict[type, bool] = {}
        # node.users as torch's loop leaves them: an input observer's first user names its qparams
        self.users_order = UsersOrder(program.graph, program.users_order)

    @property
    def device(self) -> Any:
        if self._device == "unset":
            known = self.quant.model_device
            self._device = unique_device(self.program) if known is Absent.FIELD else known
        return self._device

    def converts_itself(self, observer: Any) -> bool:
        """`hasattr(observer, "convert")`, torch's test for observers with their own conversion; without the
        exception nn.Module.__getattr__ raises for a missing name when the lookup is nn.Module's: nothing on
        the class, then the instance dict, parameters, buffers and submodules."""
        kind = type(observer)
        plain = self._plain_lookup_classes.get(kind)
        if plain is None:
            plain = self._plain_lookup_classes[kind] = (
                issubclass(kind, torch.nn.Module) and not hasattr(kind, "convert")
                and kind.__getattribute__ is object.__getattribute__
                and kind.__getattr__ is torch.nn.Module.__getattr__
            )
        if not plain:
            return hasattr(observer, "convert")
        state = vars(observer)
        return "convert" in state or any(
            "convert" in state.get(table, ()) for table in ("_parameters", "_buffers", "_modules"))

    def per_tensor_qparams(self, observer: Any) -> tuple[float, int]:
        """(scale, zero_point) of a per-tensor observer as Python numbers, as torch derives them from
        `calculate_qparams()`; computed for all alike observers of the graph at once on first use (a fake
        quant's by its observer's, to which its calculate_qparams hands over)."""
        if self._per_tensor is None:
            sources = {id(module): _qparams_source(self.reads(module)) for n in self.program.graph.nodes
                       if n.op == "call_module" and self.is_observer(module := self.modules[n.target])}
            found = {**batched_per_tensor_qparams(sources.values()), **batched_histogram_qparams(sources.values())}
            self._per_tensor = {key: found[id(source)] for key, source in sources.items() if id(source) in found}
        found = self._per_tensor.get(id(observer))
        if found is not None:
            return found
        scale, zero_point = self.reads(observer).calculate_qparams()
        return float(scale), int(zero_point)

    def run(self) -> Program:
        placeholder_index = 0
        conventions = self.quant.calling_conventions
        static_custom = {name for name, c in conventions.items() if c.output == "observer"}
        for original in self.program.graph.nodes:
            node = self.builder.substituted(original)
            if node.op == "placeholder":
                self.builder.emit(node)
                if placeholder_index in self.input_quantized_idxs:
                    self._dequantize_after(node.name)
                    self.users_order.touch_users(node.name)
                placeholder_index += 1
            elif node.op == "output":
                self.builder.emit(self._keep_outputs_quantized(node))
            elif node.op == "call_module":
                module = self.modules[node.target]
                if self.is_observer(module):
                    observed = node.args[0]
                    if isinstance(observed, Ref) and observed.name in static_custom:
                        self._replace_with_dequantize_of(node)
                    else:
                        self._convert_observer(node, module)
                elif isinstance(module, DeQuantStub):
                    self._replace_with_dequantize_of(node)
                elif node.name in conventions:
                    self._apply_convention(node, conventions[node.name])
                else:
                    self.builder.emit(node)
            else:
                self.builder.emit(node)
        return self.builder.finish(attributes=self.attrs.table())

    # -- I/O conventions -------------------------------------------------------------------------------

    def _dequantize_after(self, name: str) -> Ref:
        """Insert `name.dequantize()` right after node `name`; every other reader of it reads that instead."""
        deq = self.builder.insert_after(name, "call_method", "dequantize", (Ref(name),))
        self.builder.redirect_emitted(name, deq, skip=(deq.name,))
        self.builder.replace_uses(name, deq)
        return deq

    def _replace_with_dequantize_of(self, node: Node) -> None:
        """The node (an observer or DeQuantStub) goes; the value it read gets a dequantize after it."""
        source = node.args[0]
        if not isinstance(source, Ref):  # (torch's assertion and text)
            raise ConvertAssertionError(
                f"Expecting the for call custom module node to be a Node, but got {source} (node '{node.name}')")
        self.builder.replace_uses(node.name, source)
        self._dequantize_after(source.name)
        self.users_order.touch_users(node.name)

    def _dequantize_producing(self, arg: Arg) -> Node | None:
        """The `dequantize` method call that produces `arg`, if that is what produces it."""
        if isinstance(arg, Ref):
            producer = self.builder.emitted(arg.name)
            if producer is not None and producer.op == "call_method" and producer.target == "dequantize":
                return producer
        return None

    def _apply_convention(self, node: Node, convention: CallingConvention) -> None:
        bypass: dict[str, Arg] = {}
        for path in convention.quantized_args:
            arg = _at_path(node.args, path, node)
            dequantize = self._dequantize_producing(arg)
            if dequantize is not None:
                bypass[dequantize.name] = dequantize.args[0]
        kept = self.builder.emit(node.with_inputs_replaced(bypass))
        if bypass:
            self.users_order.touch(node.name)
        if convention.output == "dequantize":
            self._dequantize_after(kept.name)
            self.users_order.touch_users(node.name)

    def _keep_outputs_quantized(self, node: Node) -> Node:
        if not self.output_quantized_idxs:
            return node
        bypass: dict[str, Arg] = {}
        result = node.args[0]
        if isinstance(result, (tuple, ListArg, TupleArg)):
            items = result if isinstance(result, tuple) else result.items
            for idx in self.output_quantized_idxs:
                if idx >= len(items) or idx < -len(items):  # (torch indexes the outputs: an IndexError)
                    raise ConvertIndexError(
                        f"output_quantized_idxs has index {idx}, but the model returns only {len(items)} values; "
                        "fix PrepareCustomConfig.set_output_quantized_indexes"
                    )
                self._collect_bypass(items[idx], bypass)
        elif isinstance(result, (Ref, DictArg)):
            if 0 in self.output_quantized_idxs:
                self._collect_bypass(result, bypass)
        else:
            warnings.warn(f"Unsupported node type for output_quantized_idxs: {type(result)}", stacklevel=2)
        return node.with_inputs_replaced(bypass)

    def _collect_bypass(self, arg: Arg, bypass: dict[str, Arg]) -> None:
        """Point the output at the quantized value behind each dequantize in `arg` (recursively)."""
        dequantize = self._dequantize_producing(arg)
        if dequantize is not None:
            bypass[dequantize.name] = dequantize.args[0]
        elif isinstance(arg, (tuple, ListArg, TupleArg)):
            for item in arg if isinstance(arg, tuple) else arg.items:
                self._collect_bypass(item, bypass)
        elif isinstance(arg, DictArg):
            for _, item in arg.items:
                self._collect_bypass(item, bypass)
        else:
            kind = torch.fx.Node if isinstance(arg, Ref) else type(arg)
            warnings.warn(f"Unsupported node type in recursive remove dequantize: {kind}", stacklevel=2)

    # -- observers ---------------------------------------------------------------------------------------

    def _convert_observer(self, node: Node, observer: Any) -> None:
        x = node.args[0]
        if not isinstance(x, Ref):  # torch asserts this before anything else (its text)
            raise ConvertAssertionError(f"Expecting observed node to be a Node, but got {x} (observer node "
                                        f"'{node.name}')")
        if self.decomposed and self.converts_itself(observer):
            raise UnsupportedError(
                f"observer '{node.target}' ({type(observer).__name__}) converts itself with its own "
                "`convert` method (a pt2e-style observer); qfx does not support such observers"
            )
        # torch skips an observer when every producer and consumer asked for no quantization (a non-node
        # argument never counts as such).
        unwanted = (all(isinstance(a, Ref) and self.quant.has_none_qconfig(a.name) for a in node.args)
                    and all(self.quant.has_none_qconfig(u) for u in self.program.graph.users[node.name]))
        if unwanted or not observer_is_convertible(observer):
            self.builder.replace_uses(node.name, x)
            self.users_order.touch_users(node.name)
            return
        dtype = observer.dtype
        dynamic = observer_is_dynamic(observer)
        if self.decomposed:
            out = self._emit_decomposed(node, observer, x, dtype, dynamic)
        else:
            out = self._emit_torch_ops(node, observer, x, dtype, dynamic)
        if out is None:  # torch leaves such observers in place
            self.builder.emit(node)
        else:
            self.builder.replace_uses(node.name, out)
            self.users_order.touch_users(node.name)

    def _qparam_attributes(self, node: Node, scale: Any, zero_point: Any) -> tuple[Ref, Ref]:
        """New root attributes holding an observer's scale and zero point, and get_attr nodes reading them."""
        module_path, prefix = self._module_path_and_prefix(node)
        device = self.device
        refs = []
        for key, value in (("_scale_", scale), ("_zero_point_", zero_point)):
            name = self.attrs.new(module_path + prefix + key, value, device)
            refs.append(self.builder.add("get_attr", name))
        return refs[0], refs[1]

    def _emit_torch_ops(self, node: Node, observer: Any, x: Arg, dtype: Any, dynamic: bool) -> Ref | None:
        b = self.builder
        if dtype in STATIC_DTYPES_TORCH_OPS and not dynamic:
            if _is_per_channel(observer.qscheme):
                scale, zero_point = self.reads(observer).calculate_qparams()
                axis = int(observer.ch_axis)
                s, z = self._qparam_attributes(node, scale, zero_point)
                q = b.add("call_function", torch.quantize_per_channel, (x, s, z, axis, dtype))
            else:
                scale, zero_point = self.per_tensor_qparams(observer)
                s, z = self._qparam_attributes(node, scale, zero_point)
                q = b.add("call_function", torch.quantize_per_tensor, (x, s, z, dtype))
        elif dynamic:
            reduce_range = torch.backends.quantized.engine in ("fbgemm", "x86")
            q = b.add("call_function", torch.quantize_per_tensor_dynamic, (x, dtype, reduce_range))
        elif dtype == torch.float16:
            q = b.add("call_method", "to", (x, dtype))
        else:
            return None
        return b.add("call_method", "dequantize", (q,))

    def _emit_decomposed(self, node: Node, observer: Any, x: Arg, dtype: Any, dynamic: bool) -> Ref | None:
        b = self.builder
        out_dtype = self._dequantize_kwargs(x)
        if dtype in STATIC_DTYPES_DECOMPOSED and not dynamic:
            qmin, qmax, dtype_ = observer.quant_min, observer.quant_max, _underlying_dtype(dtype)
            if _is_per_channel(observer.qscheme):
                scale, zero_point = self.reads(observer).calculate_qparams()
                axis = int(observer.ch_axis)
                s, z = self._qparam_attributes(node, scale, zero_point)
                params = (s, z, axis, qmin, qmax, dtype_)
                _refuse_debug_handle(node, node.meta.get("custom", ()))
                q = b.add("call_function", qd.quantize_per_channel.default, (x, *params))
                return b.add("call_function", qd.dequantize_per_channel.default, (q, *params), out_dtype)
            params = (*self.per_tensor_qparams(observer), qmin, qmax, dtype_)
            _refuse_debug_handle(node, node.meta.get("custom", ()))
            q = b.add("call_function", qd.quantize_per_tensor.default, (x, *params))
            return b.add("call_function", qd.dequantize_per_tensor.default, (q, *params), out_dtype)
        if dynamic:
            try:
                dtype_ = _underlying_dtype(dtype)
            except AssertionError as exc:
                raise ConvertAssertionError(str(exc)) from None
            if dtype_ not in (torch.uint8, torch.int8):
                raise ConvertAssertionError(
                    "only uint8 and int8 are supported in reference flow for dynamic quantization right now"
                )
            qmin, qmax = observer.quant_min, observer.quant_max
            qscheme = getattr(observer, "qscheme", torch.per_tensor_affine)
            eps = getattr(observer, "eps", torch.finfo(torch.float32).eps)
            if qscheme not in CHOOSE_QPARAMS_BY_QSCHEME:  # (torch looks it up in its table: a KeyError)
                raise ConvertKeyError(
                    f"observer '{node.target}': dynamic quantization with qscheme {qscheme} has no decomposed "
                    "choose_qparams op; use per_tensor_affine or per_tensor_symmetric"
                )
            _refuse_debug_handle(node, node.meta)
            chosen = b.add("call_function", CHOOSE_QPARAMS_BY_QSCHEME[qscheme], (x, qmin, qmax, eps, dtype_))
            s = b.add("call_function", operator.getitem, (chosen, 0))
            z = b.add("call_function", operator.getitem, (chosen, 1))
            params = (s, z, qmin, qmax, dtype_)
            q = b.add("call_function", qd.quantize_per_tensor.tensor, (x, *params))
            return b.add("call_function", qd.dequantize_per_tensor.tensor, (q, *params), out_dtype)
        if dtype == torch.float16:
            half = b.add("call_function", qd.convert_element_type.no_fuse, (x, torch.float16))
            return b.add("call_function", qd.convert_element_type.no_fuse, (half, torch.float))
        return None

    def _dequantize_kwargs(self, x: Arg) -> tuple:
        """torch passes out_dtype to decomposed dequantize ops when the input's recorded dtype is not float32."""
        producer = self.builder.emitted(x.name) if isinstance(x, Ref) else None
        val = producer.meta.get("val") if producer is not None else None
        if val is not None and val.dtype != torch.float32:
            return (("out_dtype", val.dtype),)
        return ()

    def _module_path_and_prefix(self, observer_node: Node) -> tuple[str, str]:
        """Where torch files an observer's qparams: the scope of the observed op (prefix ""), or, when the
        observer only exists for its consumer's input, the scope of its first (preferably F.linear) user
        (prefix "_input")."""
        observed = observer_node.args[0]
        input_only = self.quant.has_none_qconfig(observed.name)
        if input_only:
            users = self.users_order.users(observer_node.name)
            anchor = users[0] if users else None
            for user in users:
                u = self.program.graph[user]
                if u.op == "call_function" and u.target is torch.nn.functional.linear:
                    anchor = user
                    break
            prefix = "_input"
        else:
            anchor, prefix = observed.name, ""
        scope = self.quant.node_name_to_scope
        module_path = scope[anchor][0] if anchor is not None and anchor in scope else ""
        return module_path, prefix


def _at_path(args: tuple, path: tuple, node: Node) -> Arg:
    value: Any = args
    for i in path:
        items = value if isinstance(value, tuple) else getattr(value, "items", None)
        if items is None or i >= len(items):
            raise ConvertError(f"node '{node.name}': expected a quantized argument at position {path}")
        value = items[i]
    return value
