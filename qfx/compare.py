"""Comparing converted models with torch's, and checking that a model was left alone.

`compare(ours, theirs, inputs)` / `differences(ours, theirs, inputs)` tell how two GraphModules differ (code,
state_dict, module attribute names, outputs);
`fingerprint(model)` / `same_fingerprint(a, b)` record and compare everything convert could change;
`copy_for_torch(observed)` is the copy torch's convert, which works in place, compares from.
Tensors are compared bit for bit, never with a tolerance.
"""

from __future__ import annotations

import contextlib
import copy
import io
import types
import warnings
from typing import Any

import attrs
import torch
from torch.ao.quantization import FakeQuantizeBase, ObserverBase
from torch.fx import GraphModule
from torch.nn.modules.batchnorm import _NormBase


def copy_for_torch(observed: GraphModule) -> GraphModule:
    """A deep copy of `observed` for torch's convert (which converts in place) to run on, whose graphs name
    new nodes as converting `observed` itself would. A deepcopy rebuilds each graph's name space from the
    nodes it holds: after a dead-code elimination the copy would hand out again names the model itself
    still counts as used, and torch's result would name nodes otherwise than qfx's (and torch's own, on the
    model). A GraphModule's deepcopy also keeps only what its graph uses and torch's own entries: the
    copy gets the other attributes set on the original (one a user set after prepare, to be preserved,
    say) too, copied with the rest. And a deepcopy lists every node's users in graph order, where the
    model's may be in another (prepare sets some nodes' arguments again, which moves them to the end),
    which torch's convert reads (the first user of an input observer names its qparams): the copy's
    nodes list their users in the model's order. Tensors with autograd history, which torch refuses to
    deep-copy, are copied detached."""
    memo: dict[int, Any] = {}
    try:
        copied = copy.deepcopy(observed, memo)
    except RuntimeError:
        # torch refuses to deep-copy a tensor with autograd history (standalone module example inputs
        # recorded under autograd, say): the copy gets such tensors detached, which torch's convert never
        # differentiates through
        memo = _detached_non_leaf_tensors(observed)
        if not memo:
            raise
        copied = copy.deepcopy(observed, memo)
    for original, new in zip(observed.modules(), copied.modules()):
        if isinstance(original, GraphModule) and isinstance(new, GraphModule):
            state, copied_state = vars(original), vars(new)
            for name in [name for name in state if name not in copied_state]:
                copied_state[name] = copy.deepcopy(state[name], memo)
            used, made = original.graph._graph_namespace, new.graph._graph_namespace
            made._used_names.update(used._used_names)
            for base, count in used._base_count.items():
                made._base_count[base] = max(count, made._base_count.get(base, 0))
            _restore_users_order(original.graph, new.graph)
    return copied


def _detached_non_leaf_tensors(root: Any) -> dict[int, Any]:
    """A deepcopy memo mapping each tensor with autograd history reachable from `root` (through containers
    and instance dicts) to a detached clone of it."""
    memo: dict[int, Any] = {}
    seen: set[int] = set()
    stack = [root]
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            if value.grad_fn is not None:
                memo[id(value)] = value.detach().clone()
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            stack.extend(value)
        elif hasattr(value, "__dict__") and not isinstance(value, (type, types.ModuleType)):
            stack.extend(vars(value).values())
    return memo


def _restore_users_order(original: torch.fx.Graph, copied: torch.fx.Graph) -> None:
    """Make each node of `copied` (a deepcopy of `original`) list its users in the order its original does."""
    by_name = {node.name: node for node in copied.nodes}
    for node in original.nodes:
        if len(node.users) > 1:
            users = by_name[node.name].users
            order = [by_name[user.name] for user in node.users]
            users.clear()
            users.update(dict.fromkeys(order))


def same_value(a: Any, b: Any) -> bool:
    """Bitwise equality for tensors (dtype, shape, quantization parameters and bits), packed-weight objects by
    their pickled state, == otherwise."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.dtype != b.dtype or a.shape != b.shape or a.is_quantized != b.is_quantized:
            return False
        if a.is_quantized:
            if a.qscheme() != b.qscheme():
                return False
            if a.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
                params_equal = a.q_scale() == b.q_scale() and a.q_zero_point() == b.q_zero_point()
            else:
                params_equal = (a.q_per_channel_axis() == b.q_per_channel_axis()
                                and same_value(a.q_per_channel_scales(), b.q_per_channel_scales())
                                and same_value(a.q_per_channel_zero_points(), b.q_per_channel_zero_points()))
            return params_equal and same_value(a.int_repr(), b.int_repr())
        a, b = a.detach().contiguous().reshape(-1), b.detach().contiguous().reshape(-1)
        if a.dtype.is_floating_point or a.dtype.is_complex:
            return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
        return torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, torch.ScriptObject) or isinstance(b, torch.ScriptObject):
        # packed weights have no __eq__: compare their class and the state they pickle to
        if not (isinstance(a, torch.ScriptObject) and isinstance(b, torch.ScriptObject)):
            return False
        return a._type().qualified_name() == b._type().qualified_name() and same_value(
            a.__getstate__(), b.__getstate__())
    return a == b


@attrs.frozen
class Comparison:
    """How two converted models compare: `found` lists how they differ (empty when they are the same); where
    both fail alike, the error their `state_dict()`s raise and the error both raise on the inputs (None when
    they work, or when no inputs were given)."""

    found: tuple[str, ...]
    state_dict_error: str | None = None
    output_error: str | None = None


def compare(ours: GraphModule, theirs: GraphModule, inputs: tuple | None) -> Comparison:
    """Compare `ours` with `theirs`: generated code, state_dict (keys, order, bits; or, where torch cannot
    save a module, the error `state_dict()` raises), the names of each module's attributes and, when
    `inputs` are given, outputs (or the error each model raises on them; see `outputs_or_error`: neither
    module is changed)."""
    found: list[str] = []
    if ours.code != theirs.code:
        a, b = ours.code.splitlines(), theirs.code.splitlines()
        line = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        found.append(f"code differs from line {line + 1} (qfx: {_line(a, line)!r}, torch: {_line(b, line)!r})")
    (ours_state, ours_error), (theirs_state, theirs_error) = state_dict_or_error(ours), state_dict_or_error(theirs)
    state_error = None
    if ours_error is not None or theirs_error is not None:
        # torch cannot save some lowered modules (a 3-D conv packed by qnnpack): then both must fail alike
        if ours_error != theirs_error:
            found.append(f"state_dict() differs: qfx's {ours_error or 'works'}, torch's {theirs_error or 'works'}")
        state_error = ours_error
    elif list(ours_state) != list(theirs_state):
        only = sorted(set(ours_state) ^ set(theirs_state))
        found.append(f"state_dict keys differ ({', '.join(only[:4]) if only else 'same keys, other order'})")
    else:
        bad = [k for k in ours_state if not same_value(ours_state[k], theirs_state[k])]
        if bad:
            found.append(f"state_dict values differ: {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}")
    ours_attributes, theirs_attributes = _attribute_names(ours), _attribute_names(theirs)
    if ours_attributes != theirs_attributes:
        paths = [p for p in dict.fromkeys([*ours_attributes, *theirs_attributes])
                 if ours_attributes.get(p) != theirs_attributes.get(p)]
        first_ours = ours_attributes.get(paths[0], frozenset())
        first_theirs = theirs_attributes.get(paths[0], frozenset())
        found.append(f"attributes differ on {', '.join(repr(p) for p in paths[:4])} (first: only qfx's "
                     f"{sorted(first_ours - first_theirs)}, only torch's {sorted(first_theirs - first_ours)})")
    output_error = None
    if inputs is not None:
        ours_out, ours_error = outputs_or_error(ours, inputs)
        theirs_out, theirs_error = outputs_or_error(theirs, inputs)
        if ours_error is not None or theirs_error is not None:
            # (a quantized kernel may refuse what the float op took, torch's as much as qfx's: then alike)
            if ours_error != theirs_error:
                found.append(f"outputs differ: qfx's model {_ran(ours_error)}, torch's {_ran(theirs_error)}")
            output_error = ours_error
        elif not same_value(ours_out, theirs_out):
            found.append("outputs differ")
    return Comparison(tuple(found), state_error, output_error)


def differences(ours: GraphModule, theirs: GraphModule, inputs: tuple | None) -> list[str]:
    """How `ours` differs from `theirs` (see `compare`); empty when they are the same."""
    return list(compare(ours, theirs, inputs).found)


def outputs_or_error(model: GraphModule, inputs: tuple) -> tuple[Any, str | None]:
    """`run_or_error` on `copy_to_run(model)`: `model` itself is not changed."""
    return run_or_error(copy_to_run(model), inputs)


def run_or_error(model: torch.nn.Module, inputs: tuple) -> tuple[Any, str | None]:
    """What `model(*inputs)` returns (without autograd; run on `fresh_inputs(inputs)`) and None, or None and
    the error it raised ("Type: message"; what the failing forward prints to stderr, as a GraphModule prints
    its code, is dropped)."""
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            return model(*fresh_inputs(inputs)), None
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"


def fresh_inputs(inputs: tuple) -> tuple:
    """A copy of `inputs` for one run: a model may edit its inputs in place (`x.mul_(2)`, a list input
    appended to), and the next model run on them would see the edit. Inputs that cannot be copied (a
    tensor with autograd history) are passed as they are."""
    try:
        return copy.deepcopy(inputs)
    except Exception:
        return inputs


def _ran(error: str | None) -> str:
    return "runs" if error is None else f"raises {error}"


def copy_to_run(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` to run: a module may share observers with the observed model, and running them
    records stats. A model torch cannot copy (a 3-D conv packed by qnnpack cannot be unpacked) is run itself
    when running cannot change it: nothing in it observes, and no batch or instance norm is in training mode
    (it would update its running statistics); otherwise the copy's error is raised."""
    try:
        return copy.deepcopy(model)
    except Exception:
        if any(isinstance(module, (ObserverBase, FakeQuantizeBase))
               or (isinstance(module, _NormBase) and module.training) for module in model.modules()):
            raise
        return model


def state_dict_or_error(model: torch.nn.Module) -> tuple[dict[str, Any], str | None]:
    """`model.state_dict()` and None, or an empty dict and the error it raised ("Type: message")."""
    try:
        return model.state_dict(), None
    except Exception as exc:
        return {}, f"{type(exc).__name__}: {exc}"


def _attribute_names(model: torch.nn.Module) -> dict[str, frozenset[str]]:
    """The names in each module's instance dict (preserved attributes, constructor attributes), by path."""
    return {path: frozenset(vars(module)) for path, module in model.named_modules(remove_duplicate=False)}


def _line(lines: list[str], i: int) -> str:
    return lines[i].strip() if i < len(lines) else "<end>"


def fingerprint(model: GraphModule) -> tuple:
    """Everything about `model` that convert could change: graph, code, modules, state and meta."""
    graph = tuple((n.name, n.op, str(n.target), str(n.args), str(n.kwargs)) for n in model.graph.nodes)
    modules = tuple((name, id(m), type(m).__name__, m.training)
                    for name, m in model.named_modules(remove_duplicate=False))
    state = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else copy.copy(v))
             for k, v in model.state_dict(keep_vars=True).items()}
    attrs = {name: sorted(vars(m)) for name, m in model.named_modules(remove_duplicate=False)}
    meta = {k: id(v) for k, v in model.meta.items()}
    return graph, model.code, modules, state, attrs, meta


def same_fingerprint(a: tuple, b: tuple) -> bool:
    """True when two fingerprints (see `fingerprint`) describe the same model state."""
    return a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and same_value(a[3], b[3]) and a[4] == b[4] and a[5] == b[5]
