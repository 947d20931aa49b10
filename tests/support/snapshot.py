"""Exact comparisons of models, programs and values, for purity and differential tests.

Import from any test:

    from tests.support.snapshot import snapshot, assert_unchanged, assert_same_model, assert_same_outputs

- `snapshot(module)` records everything observable about a module (generated code and graph, state_dict
  keys in order and exact values, the module tree, meta keys, every module's parameters, buffers and plain
  attributes such as an observer's min_val/max_val/histogram, dtype and qscheme); `assert_unchanged(before,
  module)` fails, listing each difference, if anything changed since.
- `assert_same_model(a, b)` checks two GraphModules are interchangeable: same `.code`, same state_dict
  (same keys in the same order, tensors exactly equal including dtype; quantized tensors compared by
  qscheme, int_repr and qparams; packed-params ScriptObjects by their state), same module tree, same
  values behind every get_attr.
- `assert_same_outputs(a, b, *inputs)` runs both and compares every output leaf bitwise.
- `snapshot_program(program)` / `assert_program_unchanged(before, program)` do the same for an IR Program
  (the conftest purity instrument uses them around every pass).

Values are compared bit for bit: floats by their bytes (so NaN equals the same NaN and -0.0 differs from
0.0), never with a tolerance.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import enum
import math
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn
from pyrsistent import PMap, PSet

MAX_REPORTED = 25  # differences listed in one failure message

# --------------------------------------------------------------------------------------------------
# Frozen values: a comparable copy of anything a model holds


@dataclasses.dataclass(frozen=True, eq=False)
class Opaque:
    """An object compared by identity (a function, an observer constructor, a class...): we keep a
    reference to it, which also keeps its id from being reused."""

    obj: Any

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __repr__(self) -> str:
        return f"<{type(self.obj).__qualname__} at {id(self.obj):#x}>"


@dataclasses.dataclass(frozen=True)
class ScriptState:
    """A torch ScriptObject (e.g. packed weights), captured through its __getstate__ or unpack()."""

    qualified_name: str
    state: Any


@dataclasses.dataclass(frozen=True)
class Obj:
    """A dataclass or namedtuple, captured by its type and (field name, frozen value) pairs."""

    kind: type
    fields: tuple


_ATOMS = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, torch.layout,
          torch.memory_format, torch.qscheme, torch.Size, type(Ellipsis), enum.Enum, range)


def freeze_value(value: Any, depth: int = 6, _seen: set | None = None) -> Any:
    """A comparable, independent copy of `value`: tensors cloned, ScriptObjects unpacked, containers
    copied recursively; other objects wrapped as Opaque (compared by identity)."""
    if isinstance(value, _ATOMS):
        return value
    if isinstance(value, torch.Tensor):
        return _clone_tensor(value)
    if isinstance(value, torch.ScriptObject):
        # (a script object's state is plain, acyclic data, but may nest other script objects several levels
        # deep, as an LSTM's packed cells do: always captured whole)
        state = _script_state(value)
        return ScriptState(_script_name(value), state if isinstance(state, Opaque) else freeze_value(state, max(depth, 32)))
    if depth <= 0:
        return Opaque(value)
    seen = _seen if _seen is not None else set()
    if id(value) in seen:  # a cycle: compare by identity
        return Opaque(value)
    seen = seen | {id(value)}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple (QConfig, ...)
        return Obj(type(value), tuple((f, freeze_value(v, depth - 1, seen)) for f, v in zip(value._fields, value)))
    if isinstance(value, tuple):
        return tuple(freeze_value(v, depth - 1, seen) for v in value)
    if isinstance(value, list):
        return [freeze_value(v, depth - 1, seen) for v in value]
    if isinstance(value, dict):
        return {freeze_key(k): freeze_value(v, depth - 1, seen) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze_key(v) for v in value)
    if isinstance(value, nn.Module):
        return Opaque(value)  # modules are snapshotted one by one, by name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return Obj(type(value), tuple((f.name, freeze_value(getattr(value, f.name), depth - 1, seen))
                                      for f in dataclasses.fields(value) if hasattr(value, f.name)))
    return Opaque(value)


def freeze_key(key: Any) -> Any:
    """Dict keys and set members: atoms stay, anything else is taken by identity."""
    return key if isinstance(key, _ATOMS) or type(key) is tuple else Opaque(key)


_CLONING = [True]  # False while capturing the "after" side of a comparison: no need to copy then


@contextlib.contextmanager
def _live_values() -> Iterator[None]:
    _CLONING.append(False)
    try:
        yield
    finally:
        _CLONING.pop()


def _clone_tensor(t: torch.Tensor) -> torch.Tensor:
    if not _CLONING[-1]:
        return t
    with torch.no_grad():
        if t.is_quantized and t.qscheme() == torch.per_channel_affine_float_qparams:
            out = copy.deepcopy(t.detach())  # (torch's clone does not support this qscheme; deepcopy keeps quint4x2)
        else:
            out = t.detach().clone()
    if isinstance(t, nn.Parameter):
        return nn.Parameter(out, requires_grad=t.requires_grad)
    # (a non-leaf that requires grad, such as the bias a QNNPACK packed weight unpacks to, keeps the flag)
    return out.requires_grad_(True) if t.requires_grad else out


def _script_name(obj: Any) -> str:
    try:
        return obj._type().qualified_name()
    except Exception:  # pragma: no cover - very old ScriptObjects
        return type(obj).__name__


def _script_state(obj: Any) -> Any:
    for method in ("__getstate__", "unpack"):
        try:
            return getattr(obj, method)()
        except Exception:
            continue
    return Opaque(obj)


# --------------------------------------------------------------------------------------------------
# Differences between frozen (or live) values


_PLAIN = frozenset({type(None), bool, int, str, bytes, complex, torch.dtype, torch.device, torch.layout,
                    torch.memory_format, torch.qscheme, torch.Size, type(Ellipsis), range, type})


def values_equal(a: Any, b: Any) -> bool:
    """Whether `a` and `b` are exactly equal, in the sense of `diff_values` (a fast path for it)."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind in _PLAIN:
        return a == b
    if kind is tuple or kind is list:
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if kind is dict:
        return len(a) == len(b) and list(a) == list(b) and all(values_equal(a[k], b[k]) for k in a)
    if kind is Opaque:
        return a.obj is b.obj
    if kind is Obj:
        return a.kind is b.kind and values_equal(a.fields, b.fields)
    return not _diff_values(a, b, "")


def diff_values(a: Any, b: Any, path: str = "value") -> list[str]:
    """Every way `a` and `b` differ, as lines naming the path; empty when they are exactly equal.

    Works on live values and on `freeze_value` copies alike (tensors are compared bitwise)."""
    if values_equal(a, b):
        return []
    return _diff_values(a, b, path)


def _diff_values(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return [f"{path}: {_short(a)} vs {_short(b)}"]
        return diff_tensors(a, b, path)
    if isinstance(a, torch.ScriptObject) or isinstance(b, torch.ScriptObject):
        return diff_values(freeze_value(a), freeze_value(b), path)
    if isinstance(a, Opaque) and isinstance(b, Opaque):
        return [] if a.obj is b.obj else [f"{path}: a different object ({a!r} vs {b!r})"]
    if type(a) is not type(b):
        return [f"{path}: type {type(a).__qualname__} vs {type(b).__qualname__} ({_short(a)} vs {_short(b)})"]
    if isinstance(a, ScriptState):
        if a.qualified_name != b.qualified_name:
            return [f"{path}: script object {a.qualified_name} vs {b.qualified_name}"]
        return diff_values(a.state, b.state, f"{path}.__getstate__()")
    if isinstance(a, Obj):
        if a.kind is not b.kind:
            return [f"{path}: {a.kind.__qualname__} vs {b.kind.__qualname__}"]
        return diff_values(a.fields, b.fields, path)
    if isinstance(a, float):
        same = (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
        return [] if same else [f"{path}: {a!r} vs {b!r}"]
    if isinstance(a, (tuple, list)):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} vs {len(b)}"]
        out: list[str] = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff_values(x, y, f"{path}[{i}]")
        return out
    if isinstance(a, dict):
        if list(a) != list(b):
            return [f"{path}: keys {_key_diff(list(a), list(b))}"]
        out = []
        for k in a:
            out += diff_values(a[k], b[k], f"{path}[{k!r}]")
        return out
    if isinstance(a, (set, frozenset)):
        return [] if a == b else [f"{path}: only in first {sorted(map(repr, a - b))}, only in second "
                                   f"{sorted(map(repr, b - a))}"]
    if isinstance(a, nn.Module):
        return [] if a is b else [f"{path}: a different module object ({type(a).__qualname__})"]
    try:
        equal = a is b or a == b
        if not isinstance(equal, bool):
            equal = bool(equal)
    except Exception:
        equal = a is b
    return [] if equal else [f"{path}: {_short(a)} vs {_short(b)}"]


def diff_tensors(a: torch.Tensor, b: torch.Tensor, path: str = "tensor") -> list[str]:
    """Exact tensor comparison: kind (Parameter or not, requires_grad), dtype, shape, layout, device and
    every bit of the data; quantized tensors by qscheme, integer representation and quantization params."""
    problems: list[str] = []
    if isinstance(a, nn.Parameter) != isinstance(b, nn.Parameter):
        problems.append(f"{path}: Parameter vs plain tensor")
    if a.requires_grad != b.requires_grad:
        problems.append(f"{path}: requires_grad {a.requires_grad} vs {b.requires_grad}")
    for attr in ("dtype", "shape", "layout", "device", "is_quantized"):
        x, y = getattr(a, attr), getattr(b, attr)
        if x != y:
            return problems + [f"{path}: {attr} {x} vs {y}"]
    if a.layout != torch.strided:
        a, b = a.to_dense(), b.to_dense()
    if a.is_quantized:
        scheme = a.qscheme()
        if scheme != b.qscheme():
            return problems + [f"{path}: qscheme {scheme} vs {b.qscheme()}"]
        if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            problems += diff_values(a.q_scale(), b.q_scale(), f"{path}.q_scale()")
            problems += diff_values(a.q_zero_point(), b.q_zero_point(), f"{path}.q_zero_point()")
        else:
            problems += diff_tensors(a.q_per_channel_scales(), b.q_per_channel_scales(), f"{path}.q_per_channel_scales()")
            problems += diff_tensors(a.q_per_channel_zero_points(), b.q_per_channel_zero_points(),
                                     f"{path}.q_per_channel_zero_points()")
            problems += diff_values(a.q_per_channel_axis(), b.q_per_channel_axis(), f"{path}.q_per_channel_axis()")
        return problems + diff_tensors(a.int_repr(), b.int_repr(), f"{path}.int_repr()")
    if not _same_bits(a, b):
        problems.append(f"{path}: values differ ({_first_mismatch(a, b)})")
    return problems


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.device.type == "meta":
        return True
    x = a.detach().contiguous().reshape(-1)
    y = b.detach().contiguous().reshape(-1)
    if x.numel() == 0:
        return y.numel() == 0
    try:
        return torch.equal(x.view(torch.uint8), y.view(torch.uint8))
    except (RuntimeError, TypeError):  # dtypes that cannot be viewed as bytes
        return bool(torch.equal(x, y))


def _first_mismatch(a: torch.Tensor, b: torch.Tensor) -> str:
    try:
        x, y = a.detach().reshape(-1), b.detach().reshape(-1)
        ne = (x != y) & ~(torch.isnan(x) & torch.isnan(y)) if x.is_floating_point() else x != y
        idx = int(ne.nonzero()[0]) if ne.any() else 0
        return f"{int(ne.sum())} of {x.numel()} elements, first at flat index {idx}: {x[idx].item()!r} vs {y[idx].item()!r}"
    except Exception:
        return "bit patterns differ"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_diff(a: list, b: list) -> str:
    only_a = [k for k in a if k not in b]
    only_b = [k for k in b if k not in a]
    if not only_a and not only_b:
        return f"same keys in a different order: {a} vs {b}"
    return f"only in first {only_a}, only in second {only_b}"


def _fail(title: str, problems: list[str]) -> None:
    if problems:
        shown = problems[:MAX_REPORTED]
        more = len(problems) - len(shown)
        tail = [f"... and {more} more"] if more else []
        raise AssertionError("\n  ".join([title, *shown, *tail]))


def _text_diff(a: str, b: str, what: str) -> list[str]:
    if a == b:
        return []
    lines = difflib.unified_diff(a.splitlines(), b.splitlines(), "first", "second", lineterm="", n=1)
    return [f"{what} differs:\n" + "\n".join(lines)]


# --------------------------------------------------------------------------------------------------
# One module's own state (children excluded)

_MODULE_INTERNALS = {"_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"}


def module_state(module: nn.Module) -> dict[str, Any]:
    """A frozen copy of what `module` itself holds: parameters, buffers (persistent or not), which buffers
    are persistent, the training flag, hooks, and every other attribute (an observer's dtype, qscheme,
    bins, eps...). Children are not included."""
    state: dict[str, Any] = {
        "type": type(module),
        "parameters": freeze_value(dict(module._parameters)),
        "buffers": freeze_value(dict(module._buffers)),
        "non_persistent": frozenset(module._non_persistent_buffers_set),
    }
    attrs: dict[str, Any] = {}
    for key, value in vars(module).items():
        if key in _MODULE_INTERNALS:
            continue
        if key.endswith("_hooks") or key.endswith("hooks_with_kwargs") or key.endswith("_always_called"):
            attrs[key] = tuple(value) if hasattr(value, "__iter__") else Opaque(value)
        elif key in ("_graph", "graph"):
            attrs[key] = _graph_lines(value) if isinstance(value, torch.fx.Graph) else freeze_value(value)
        else:
            attrs[key] = freeze_value(value, depth=4)
    state["attributes"] = attrs
    return state


def _graph_lines(graph: torch.fx.Graph) -> tuple[str, ...]:
    return tuple(f"{n.format_node()} meta={sorted(n.meta)} users={[u.name for u in n.users]}" for n in graph.nodes)


# --------------------------------------------------------------------------------------------------
# Whole-module snapshots


@dataclasses.dataclass(frozen=True)
class ModelSnapshot:
    """Everything observable about a module tree at one moment (see `snapshot`)."""

    code: str | None
    graph: tuple[str, ...] | None
    meta: Any
    tree: tuple  # (name, type, alias id) for named_modules(remove_duplicate=False)
    state_dict: tuple  # (key, frozen value), in order
    modules: dict  # name -> module_state, one entry per distinct module object


def snapshot(module: nn.Module) -> ModelSnapshot:
    """Record `module`'s observable state: code and graph (GraphModule), meta, module tree, state_dict
    in order with exact values, and each submodule's own state (observer internals included)."""
    is_gm = isinstance(module, torch.fx.GraphModule)
    named = list(module.named_modules(remove_duplicate=False))
    first_name: dict[int, str] = {}
    for name, m in named:
        first_name.setdefault(id(m), name)
    return ModelSnapshot(
        code=module.code if is_gm else None,
        graph=_graph_lines(module.graph) if is_gm else None,
        meta=_meta_state(getattr(module, "meta", None)) if is_gm else None,
        tree=tuple((name, type(m), first_name[id(m)]) for name, m in named),
        state_dict=tuple((k, freeze_value(v)) for k, v in module.state_dict(keep_vars=True).items()),
        modules={name: module_state(m) for name, m in named if first_name[id(m)] == name},
    )


def _meta_state(meta: Any) -> Any:
    if meta is None:
        return None
    # ObservedGraphModuleAttrs is a dataclass of dicts and sets; copy its containers, keep its leaves
    return tuple((k, freeze_value(v, depth=4)) for k, v in meta.items())


def diff_snapshots(before: ModelSnapshot, after: ModelSnapshot) -> list[str]:
    """Every difference between two snapshots, as readable lines."""
    out: list[str] = []
    if before.code != after.code:
        out += _text_diff(before.code or "", after.code or "", "code")
    if before.graph != after.graph:
        out += _text_diff("\n".join(before.graph or ()), "\n".join(after.graph or ()), "graph")
    if before.meta is not None or after.meta is not None:
        meta_a = dict(before.meta or ())
        meta_b = dict(after.meta or ())
        if list(meta_a) != list(meta_b):
            out.append(f"meta keys: {_key_diff(list(meta_a), list(meta_b))}")
        else:
            for k in meta_a:
                out += diff_values(meta_a[k], meta_b[k], f"meta[{k!r}]")
    out += _diff_tree(before.tree, after.tree)
    out += _diff_state_dicts(dict(before.state_dict), dict(after.state_dict), [k for k, _ in before.state_dict],
                             [k for k, _ in after.state_dict])
    for name in before.modules.keys() & after.modules.keys():
        out += diff_values(before.modules[name], after.modules[name], f"module '{name or '<root>'}'")
    return out


def _diff_tree(a: tuple, b: tuple) -> list[str]:
    if a == b:
        return []
    names_a = [f"{n or '<root>'}: {t.__qualname__}" + (f" (alias of {f})" if f != n else "") for n, t, f in a]
    names_b = [f"{n or '<root>'}: {t.__qualname__}" + (f" (alias of {f})" if f != n else "") for n, t, f in b]
    return _text_diff("\n".join(names_a), "\n".join(names_b), "module tree")


def _diff_state_dicts(a: dict, b: dict, keys_a: list, keys_b: list) -> list[str]:
    if keys_a != keys_b:
        return [f"state_dict keys: {_key_diff(keys_a, keys_b)}"]
    out: list[str] = []
    for k in keys_a:
        out += diff_values(a[k], b[k], f"state_dict[{k!r}]")
    return out


def assert_unchanged(before: ModelSnapshot, module: nn.Module) -> None:
    """Fail, listing each difference, if `module` is not exactly as it was when `before` was taken."""
    with _live_values():
        now = snapshot(module)
    _fail(f"{type(module).__name__} was modified:", diff_snapshots(before, now))


# --------------------------------------------------------------------------------------------------
# Comparing two models


def assert_same_model(a: nn.Module, b: nn.Module, *, check_aliasing: bool = True) -> None:
    """Fail unless `a` and `b` are interchangeable GraphModules: the same `.code`; the same state_dict
    (same keys in the same order; tensors exactly equal incl. dtype; quantized tensors by qscheme,
    int_repr and qparams; ScriptObjects by their state); the same module tree (named_modules names,
    types and training flags; with `check_aliasing`, the same names share one object); and the same
    value behind every get_attr target that is not a module."""
    problems: list[str] = []
    if type(a).__name__ != type(b).__name__:
        problems.append(f"class name {type(a).__name__} vs {type(b).__name__}")
    code_a = getattr(a, "code", None)
    code_b = getattr(b, "code", None)
    if code_a != code_b:
        problems += _text_diff(code_a or "", code_b or "", "code")
    tree_a = [(n, type(m), m.training) for n, m in a.named_modules(remove_duplicate=False)]
    tree_b = [(n, type(m), m.training) for n, m in b.named_modules(remove_duplicate=False)]
    if tree_a != tree_b:
        fmt = lambda rows: "\n".join(f"{n or '<root>'}: {t.__qualname__}{'' if tr else ' (eval)'}"  # noqa: E731
                                     for n, t, tr in rows)
        problems += _text_diff(fmt(tree_a), fmt(tree_b), "module tree")
    elif check_aliasing:
        problems += _diff_aliasing(a, b)
    params_a = [(n, p.requires_grad) for n, p in a.named_parameters(remove_duplicate=False)]
    params_b = [(n, p.requires_grad) for n, p in b.named_parameters(remove_duplicate=False)]
    if params_a != params_b:
        problems.append(f"parameters (name, requires_grad): {params_a} vs {params_b}")
    sd_a = a.state_dict(keep_vars=False)
    sd_b = b.state_dict(keep_vars=False)
    problems += _diff_state_dicts(sd_a, sd_b, list(sd_a), list(sd_b))
    problems += _diff_attribute_targets(a, b)
    _fail("the two models differ:", problems)


def _diff_aliasing(a: nn.Module, b: nn.Module) -> list[str]:
    def groups(m: nn.Module) -> list[tuple[str, ...]]:
        by_obj: dict[int, list[str]] = {}
        for name, sub in m.named_modules(remove_duplicate=False):
            by_obj.setdefault(id(sub), []).append(name)
        return sorted(tuple(v) for v in by_obj.values() if len(v) > 1)

    ga, gb = groups(a), groups(b)
    return [] if ga == gb else [f"shared submodules: {ga} vs {gb}"]


def _diff_attribute_targets(a: nn.Module, b: nn.Module) -> list[str]:
    graph_a = getattr(a, "graph", None)
    if not isinstance(graph_a, torch.fx.Graph):
        return []
    out: list[str] = []
    for node in graph_a.nodes:
        if node.op != "get_attr":
            continue
        va, ok_a = _lookup(a, node.target)
        vb, ok_b = _lookup(b, node.target)
        if not ok_a or not ok_b:
            if ok_a != ok_b:
                out.append(f"get_attr target '{node.target}' exists only in the {'first' if ok_a else 'second'} model")
            continue
        if isinstance(va, nn.Module) or isinstance(vb, nn.Module):
            if type(va) is not type(vb):
                out.append(f"get_attr target '{node.target}': {type(va).__qualname__} vs {type(vb).__qualname__}")
            continue
        out += diff_values(freeze_value(va), freeze_value(vb), f"get_attr '{node.target}'")
    return out


def _lookup(root: Any, target: str) -> tuple[Any, bool]:
    obj = root
    for atom in target.split("."):
        if not hasattr(obj, atom):
            return None, False
        obj = getattr(obj, atom)
    return obj, True


def run_model(model: nn.Module, inputs: Iterable[Any], *, isolate: bool = True, seed: int = 0) -> Any:
    """`model(*inputs)` under no_grad with a fixed RNG seed, on cloned inputs; with `isolate` on a deep
    copy, so stateful modules (observers, fake-quant, BatchNorm in training) of `model` do not change."""
    target = copy.deepcopy(model) if isolate else model
    args = [_clone_input(x) for x in inputs]
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return target(*args)


def _clone_input(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.clone()
    if type(x) in (tuple, list):
        return type(x)(_clone_input(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone_input(v) for k, v in x.items()}
    return x


def assert_same_outputs(a: nn.Module, b: nn.Module, *inputs: Any, isolate: bool = True) -> Any:
    """Run `a` and `b` on the same inputs and fail unless every output leaf is bitwise equal (nested
    tuples, lists and dicts must match in structure; quantized outputs are compared by int_repr and
    qparams). Each model runs from the same state (a deep copy, unless `isolate=False`) and the same RNG
    seed. Returns `a`'s outputs."""
    out_a = run_model(a, inputs, isolate=isolate)
    out_b = run_model(b, inputs, isolate=isolate)
    _fail("the outputs differ:", diff_values(out_a, out_b, "output"))
    return out_a


# --------------------------------------------------------------------------------------------------
# Programs


@dataclasses.dataclass(frozen=True)
class ProgramSnapshot:
    """What a pass must leave unchanged in its input Program."""

    text: str
    modules: tuple  # (name, id) in table order
    attributes: tuple  # (name, id)
    module_states: dict  # id -> (first name, module_state)
    attribute_values: dict  # name -> frozen value
    configs: Any  # frozen quant facts and options (config objects by identity, containers copied)
    keep_alive: tuple  # the program itself, so no id above can be reused while the snapshot lives


def snapshot_program(program: Any) -> ProgramSnapshot:
    """Record a Program's printed form, its tables (which object under which name), the exact state of
    every module and attribute value it reaches, and the containers inside its quant facts and options."""
    from qfx.ir.printer import print_program

    states: dict[int, tuple[str, dict]] = {}
    for name, module in program.modules.items():
        if id(module) not in states:
            states[id(module)] = (name, module_state(module))
    return ProgramSnapshot(
        text=print_program(program),
        modules=tuple((k, id(v)) for k, v in program.modules.items()),
        attributes=tuple((k, id(v)) for k, v in program.attributes.items()),
        module_states=states,
        attribute_values={k: freeze_value(v) for k, v in program.attributes.items()},
        configs=_config_state(program),
        keep_alive=(program,),
    )


def _config_state(program: Any) -> Any:
    parts: list[Any] = [("root.meta", _deep_config(dict(program.root.meta)))]
    for holder in (program.quant, program.options):
        if holder is None:
            parts.append(None)
            continue
        for field in type(holder).__attrs_attrs__:
            value = getattr(holder, field.name)
            parts.append((field.name, _deep_config(value)))
    return tuple(parts)


def _deep_config(value: Any, depth: int = 5) -> Any:
    # torch's config objects (QConfigMapping, BackendConfig, custom configs) keep their state in plain
    # dicts and lists; copy that structure so an in-place edit shows up. Leaves are kept by identity.
    if depth <= 0 or isinstance(value, (nn.Module, torch.Tensor)) or isinstance(value, _ATOMS):
        return freeze_value(value, depth=1)
    if isinstance(value, PMap):
        return {freeze_key(k): _deep_config(v, depth - 1) for k, v in value.items()}
    if isinstance(value, (PSet, set, frozenset)):
        return frozenset(freeze_key(v) for v in value)
    if isinstance(value, dict):
        return {freeze_key(k): _deep_config(v, depth - 1) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return Obj(type(value), tuple((f, _deep_config(v, depth - 1)) for f, v in zip(value._fields, value)))
    if isinstance(value, (list, tuple)):
        return type(value)(_deep_config(v, depth - 1) for v in value)
    if hasattr(value, "__dict__") and type(value).__module__.startswith("torch.ao.quantization"):
        # a BackendConfig holds hundreds of pattern configs: record which ones, not their insides
        inner = 1 if type(value).__name__ == "BackendConfig" else depth - 1
        return Obj(type(value), tuple((k, _deep_config(v, inner)) for k, v in vars(value).items()))
    return freeze_value(value, depth=1)


def diff_programs(before: ProgramSnapshot, program: Any) -> list[str]:
    """Every way `program` differs from the state recorded in `before`."""
    from qfx.ir.printer import print_program

    out = _text_diff(before.text, print_program(program), "printed program")
    modules = tuple((k, id(v)) for k, v in program.modules.items())
    if modules != before.modules:
        changed = sorted(set(before.modules) ^ set(modules))
        out.append(f"module table changed: {changed[:10]}")
    attributes = tuple((k, id(v)) for k, v in program.attributes.items())
    if attributes != before.attributes:
        out.append(f"attribute table changed: {sorted(set(before.attributes) ^ set(attributes))[:10]}")
    for name, module in program.modules.items():
        entry = before.module_states.get(id(module))
        if entry is not None and entry[0] == name:
            out += diff_values(entry[1], module_state(module), f"module '{name}'")
    for name, value in program.attributes.items():
        if name in before.attribute_values:
            out += diff_values(before.attribute_values[name], freeze_value(value), f"attribute '{name}'")
    out += diff_values(before.configs, _config_state(program), "root meta/quant facts/options")
    return out


def assert_program_unchanged(before: ProgramSnapshot, program: Any, what: str = "program") -> None:
    """Fail, listing each difference, if `program` (or anything it reaches) changed since `before`."""
    with _live_values():
        problems = diff_programs(before, program)
    _fail(f"{what} was modified:", problems)
