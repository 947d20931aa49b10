"""Hypothesis strategies for random models, observed models and Programs (for testing passes).

    from qfx.testing.strategies import traced_models, observed_models, programs, examples

- `float_models()` / `traced_models()`: (float model or its `symbolic_trace`, example_inputs).
- `observed_models()`: (GraphModule after `prepare_fx` or `prepare_qat_fx`, calibrated; example_inputs), with
  varied qconfig mappings (default, x86/fbgemm/qnnpack, per-channel, per-object-type, per-module-name, regex,
  dynamic, fp16, mixed None), QAT and fusion (conv/bn/relu, linear/relu).
- `programs()`: `qfx.lift` of an observed model: a `Program` ready for the convert passes; with `mode` the
  options of a decomposed or lowered convert, with `after` the program a pipeline prefix makes of it (after a
  pass you name, as the lowering passes find it, or at a random point).
- `examples(n)`: a number of examples for `@settings(max_examples=...)`, ten times more when the environment
  sets QFX_HYPOTHESIS_PROFILE=thorough.

A model is described by a `ModelSpec`: a random DAG of steps over two kinds of values, image tensors
``(2, 4, 4, 4)`` and feature vectors ``(2, 4)``, whose widths never change so any step can read any earlier
value of the right kind. Steps cover what convert meets in practice: leaf modules (Linear, Conv2d,
BatchNorm2d, ReLU, Sequentials that prepare fuses, modules called twice), functionals and torch ops with
kwargs, call_method ops (``.relu()``, ``.view()``, ``.transpose()``, ``.mean()``, ``.flatten()``,
``.size()``), `get_attr` of parameters, buffers and plain tensor constants (also on nested paths), slicing
with Ellipsis and None, tuple outputs read through getitem, constants, fan-out, fan-in through
add/mul/cat, and results nobody reads (dead branches). Outputs come as one tensor, tuples, nested tuples,
lists or dicts.

`DagModel(spec)` builds the float model; weights and inputs are drawn from the spec's seed, so a spec
always gives the same model. Everything is small so hundreds of models fit in a test run.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

import attrs
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import note, reject
from hypothesis.control import currently_in_test_context
from hypothesis import strategies as st

from qfx.passes.pipelines import passes_through, pipeline_names

BATCH = 2
WIDTH = 4  # channels of image values and features of vector values
SIDE = 4  # height and width of image values
IMG = "img"
VEC = "vec"
SHAPES = {IMG: (BATCH, WIDTH, SIDE, SIDE), VEC: (BATCH, WIDTH)}

PROFILE = os.environ.get("QFX_HYPOTHESIS_PROFILE", "ci")


def examples(n: int) -> int:
    """`n` examples under the "ci" profile, ten times as many under "thorough" (for @settings)."""
    return n * 10 if PROFILE == "thorough" else n


# --------------------------------------------------------------------------------------------------
# The spec


@attrs.frozen
class Step:
    """One node group of the model: `op` applied to earlier values `inputs`; `variant` picks a flavour
    of the op (which function, kwargs or module options), `home` where its module or tensor lives."""

    op: str
    inputs: tuple[int, ...]
    variant: int = 0
    home: int = 0

    def __repr__(self) -> str:
        return f"{self.op}{list(self.inputs)}/v{self.variant}h{self.home}"


@attrs.frozen
class ModelSpec:
    """A whole model: input kinds, the steps, the output structure and the seed of its weights.

    `outputs` is a value index, or ("tuple" | "list", (sub, ...)), or ("dict", ((key, sub), ...)).
    """

    inputs: tuple[str, ...]
    steps: tuple[Step, ...]
    outputs: Any
    seed: int

    def kinds(self) -> list[str]:
        """The kind of every value: inputs first, then one per step."""
        out = list(self.inputs)
        for step in self.steps:
            out.append(OPS[step.op].out_kind(out, step))
        return out

    def example_inputs(self, salt: int = 0) -> tuple[torch.Tensor, ...]:
        """Deterministic random inputs for this spec (`salt` gives other batches)."""
        gen = torch.Generator().manual_seed(self.seed * 7919 + salt)
        return tuple(torch.randn(SHAPES[k], generator=gen) for k in self.inputs)


# --------------------------------------------------------------------------------------------------
# The ops


@attrs.frozen
class Op:
    """An op a step can use: the kinds it reads, how many variants it has, what it builds and runs."""

    reads: tuple[str, ...] | Callable[[str], tuple[str, ...]]
    variants: int
    apply: Callable[..., torch.Tensor]  # (model, step_index, step, kind, *values) -> value
    build: Callable[..., None] | None = None  # (model, step_index, step, kind) -> None
    produces: str | None = None  # the output kind; None: the kind of the first input

    def in_kinds(self, first: str) -> tuple[str, ...]:
        return self.reads(first) if callable(self.reads) else self.reads

    def out_kind(self, kinds: list[str], step: Step) -> str:
        return self.produces or kinds[step.inputs[0]]


def _same(n: int) -> Callable[[str], tuple[str, ...]]:
    return lambda k: (k,) * n


def _module_op(make: Callable[[str, int], nn.Module], variants: int = 1) -> Op:
    def build(model: "DagModel", i: int, step: Step, kind: str) -> None:
        model.place_module(i, step.home, make(kind, step.variant))

    def apply(model: "DagModel", i: int, step: Step, kind: str, x: torch.Tensor) -> torch.Tensor:
        return model.module_of(i)(x)

    return Op(_same(1), variants, apply, build)


def _conv(kind: str, variant: int) -> nn.Module:
    k = 3 if variant % 2 else 1
    return nn.Conv2d(WIDTH, WIDTH, k, padding=k // 2, bias=variant < 2)


def _linear(kind: str, variant: int) -> nn.Module:
    return nn.Linear(WIDTH, WIDTH, bias=variant == 0)


def _block(kind: str, variant: int) -> nn.Module:
    if kind == IMG:
        layers: list[nn.Module] = [nn.Conv2d(WIDTH, WIDTH, 1), nn.BatchNorm2d(WIDTH)]
    else:
        layers = [nn.Linear(WIDTH, WIDTH)]
    if variant % 2:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _norm(kind: str, variant: int) -> nn.Module:
    return nn.BatchNorm2d(WIDTH) if kind == IMG else nn.LayerNorm(WIDTH)


def _act_module(kind: str, variant: int) -> nn.Module:
    return [nn.ReLU(), nn.Sigmoid(), nn.Hardtanh(-1.0, 1.0)][variant]


def _activation(m: "DagModel", i: int, s: Step, kind: str, x: torch.Tensor) -> torch.Tensor:
    v = s.variant
    if v == 0:
        return F.relu(x)
    if v == 1:
        return F.relu(x, inplace=False)
    if v == 2:
        return torch.relu(x)
    if v == 3:
        return torch.sigmoid(x)
    if v == 4:
        return torch.clamp(x, min=-1.0, max=1.0)
    return F.hardtanh(x, min_val=-0.5, max_val=0.5)


def _method(m: "DagModel", i: int, s: Step, kind: str, x: torch.Tensor) -> torch.Tensor:
    return [lambda: x.relu(), lambda: x.sigmoid(), lambda: x.tanh(), lambda: x.clamp(min=0.0)][s.variant]()


def _constant(m: "DagModel", i: int, s: Step, kind: str, x: torch.Tensor) -> torch.Tensor:
    return [lambda: x + 1.0, lambda: x * 0.5, lambda: 2.0 - x, lambda: x / 2.0, lambda: torch.mul(x, 3)][s.variant]()


def _build_tensor(model: "DagModel", i: int, step: Step, kind: str) -> None:
    shape = (1, WIDTH, 1, 1) if kind == IMG else (WIDTH,)
    model.place_tensor(i, step.home, step.variant, torch.randn(shape))


def _tensor_op(m: "DagModel", i: int, s: Step, kind: str, x: torch.Tensor) -> torch.Tensor:
    t = m.tensor_of(i)
    return x + t if s.variant % 2 == 0 else x * t


def _build_linear_weights(model: "DagModel", i: int, step: Step, kind: str) -> None:
    model.place_tensor(i, step.home, 0, torch.randn(WIDTH, WIDTH) / 2, suffix="w")
    model.place_tensor(i, step.home, 0, torch.randn(WIDTH), suffix="b")


def _functional_linear(m: "DagModel", i: int, s: Step, kind: str, x: torch.Tensor) -> torch.Tensor:
    w, b = m.tensor_of(i, "w"), m.tensor_of(i, "b")
    if s.variant == 0:
        return F.linear(x, w, b)
    if s.variant == 1:
        return F.linear(x, w)
    if s.variant == 2:
        return F.linear(input=x, weight=w, bias=b)
    return torch.matmul(x, w)


def _layout(m: "DagModel", i: int, s: Step, kind: str, x: torch.Tensor) -> torch.Tensor:
    if kind == VEC:
        if s.variant == 0:
            return x.view(BATCH, 2, 2).transpose(1, 2).reshape(BATCH, WIDTH)
        if s.variant == 1:
            return x.unsqueeze(1).flatten(1)
        if s.variant == 2:
            return x.view(x.size(0), -1)
        return x.permute(1, 0).t()
    if s.variant == 0:
        return x.transpose(2, 3)
    if s.variant == 1:
        return x.flatten(2).view(BATCH, WIDTH, SIDE, SIDE)
    if s.variant == 2:
        return torch.flatten(x, 2).view(x.size(0), -1, SIDE, SIDE)
    return x.permute(0, 1, 3, 2).contiguous()


def _chunk(m: "DagModel", i: int, s: Step, kind: str, x: torch.Tensor) -> torch.Tensor:
    if s.variant == 0:
        a, b = x.chunk(2, dim=1)
        return torch.cat((b, a), 1)
    if s.variant == 1:
        parts = torch.split(x, 2, 1)
        return torch.cat([parts[1], parts[0]], dim=1)
    if kind == IMG:
        return torch.cat([x[..., :2, :], x[..., 2:, :]], dim=2)
    return torch.cat([x[:, 1:], x[:, :1]], -1)


def _pool(m: "DagModel", i: int, s: Step, kind: str, x: torch.Tensor) -> torch.Tensor:
    v = s.variant
    if v == 0:
        return x.mean((2, 3))
    if v == 1:
        return x.mean(dim=[2, 3], keepdim=False)
    if v == 2:
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    if v == 3:
        return x.amax(dim=(2, 3))
    return m.module_of(i)(x).flatten(1)


def _build_pool(model: "DagModel", i: int, step: Step, kind: str) -> None:
    if step.variant == 4:
        model.place_module(i, step.home, nn.AdaptiveAvgPool2d(1))


def _spatial(m: "DagModel", i: int, s: Step, kind: str, x: torch.Tensor) -> torch.Tensor:
    if s.variant == 0:
        return F.max_pool2d(x, 3, stride=1, padding=1)
    if s.variant == 1:
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)
    return m.module_of(i)(x)


def _build_spatial(model: "DagModel", i: int, step: Step, kind: str) -> None:
    if step.variant == 2:
        model.place_module(i, step.home, nn.MaxPool2d(3, 1, 1))


def _add(m: "DagModel", i: int, s: Step, kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return [lambda: a + b, lambda: torch.add(a, b), lambda: torch.add(a, b, alpha=0.5), lambda: a.add(b)][s.variant]()


def _mul(m: "DagModel", i: int, s: Step, kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return [lambda: a * b, lambda: torch.mul(a, b), lambda: a.mul(b)][s.variant]()


def _cat(m: "DagModel", i: int, s: Step, kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if s.variant == 0:
        return torch.cat([a, b], dim=1)[:, 2:6]
    if s.variant == 1:
        return torch.cat((a, b), 1)[:, 0:WIDTH]
    if s.variant == 2:
        return torch.cat([a[:, 0:2], b[:, 2:4]], dim=1)
    return torch.stack([a, b]).sum(0)


def _scale(m: "DagModel", i: int, s: Step, kind: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if s.variant == 0:
        return a * b.view(BATCH, WIDTH, 1, 1)
    if s.variant == 1:
        return a + b[:, :, None, None]
    return a * b.reshape(-1, WIDTH, 1, 1).sigmoid()


def _reuse(m: "DagModel", i: int, s: Step, kind: str, x: torch.Tensor) -> torch.Tensor:
    return m.module_of(s.variant)(x)


OPS: dict[str, Op] = {
    "conv": _module_op(_conv, 4),
    "linear": _module_op(_linear, 2),
    "block": _module_op(_block, 2),
    "norm": _module_op(_norm),
    "act_module": _module_op(_act_module, 3),
    "activation": Op(_same(1), 6, _activation),
    "method": Op(_same(1), 4, _method),
    "constant": Op(_same(1), 5, _constant),
    "tensor": Op(_same(1), 4, _tensor_op, _build_tensor),
    "f_linear": Op((VEC,), 4, _functional_linear, _build_linear_weights),
    "layout": Op(_same(1), 4, _layout),
    "chunk": Op(_same(1), 3, _chunk),
    "pool": Op((IMG,), 5, _pool, _build_pool, produces=VEC),
    "spatial": Op((IMG,), 3, _spatial, _build_spatial),
    "add": Op(_same(2), 4, _add),
    "mul": Op(_same(2), 3, _mul),
    "cat": Op(_same(2), 4, _cat),
    "scale": Op((IMG, VEC), 3, _scale, produces=IMG),
    "reuse": Op(_same(1), 1, _reuse),
}

_KIND_ONLY = {"conv": IMG, "linear": VEC}
_MODULE_OPS = ("conv", "linear", "block", "norm", "act_module")


# --------------------------------------------------------------------------------------------------
# The model


class DagModel(nn.Module):
    """A float model that runs a ModelSpec. Modules and tensors live at varied paths (see `home`)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self._module_paths: dict[int, str] = {}
        self._tensor_paths: dict[tuple[int, str], str] = {}
        kinds = list(spec.inputs)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            for i, step in enumerate(spec.steps):
                op = OPS[step.op]
                kind = kinds[step.inputs[0]]
                if op.build is not None:
                    op.build(self, i, step, kind)
                kinds.append(op.out_kind(kinds, step))
            for mod in self.modules():
                if isinstance(mod, nn.BatchNorm2d):  # make normalisation do something
                    mod.running_mean.uniform_(-0.5, 0.5)
                    mod.running_var.uniform_(0.5, 2.0)
        self._kinds = kinds

    def _container(self, home: int) -> tuple[nn.Module, str]:
        if home == 0:
            return self, ""
        name = {1: "blocks", 2: "heads", 3: "body"}[home]
        if name not in self._modules:
            self.add_module(name, nn.ModuleList() if home == 1 else nn.ModuleDict() if home == 2 else nn.Module())
        return self._modules[name], name + "."

    def place_module(self, i: int, home: int, module: nn.Module) -> None:
        """Register step i's module: on the root, in a ModuleList, a ModuleDict or a plain submodule."""
        parent, prefix = self._container(home)
        if isinstance(parent, nn.ModuleList):
            parent.append(module)
            path = f"{prefix}{len(parent) - 1}"
        else:
            name = f"m{i}"
            parent.add_module(name, module)
            path = prefix + name
        self._module_paths[i] = path

    def place_tensor(self, i: int, home: int, variant: int, value: torch.Tensor, suffix: str = "t") -> None:
        """Register step i's tensor as a parameter, buffer or plain tensor attribute, at the root or nested."""
        parent = self if home % 2 == 0 else self._container(3)[0]
        prefix = "" if parent is self else "body."
        name = f"{suffix}{i}"
        kind = variant // 2 if suffix == "t" else 0
        if kind == 0:
            parent.register_parameter(name, nn.Parameter(value))
        elif kind == 1:
            parent.register_buffer(name, value)
        else:
            object.__setattr__(parent, name, value)  # a plain tensor: traced as _tensor_constant<N>
        self._tensor_paths[(i, suffix)] = prefix + name

    def module_of(self, i: int) -> nn.Module:
        return self.get_submodule(self._module_paths[i])

    def tensor_of(self, i: int, suffix: str = "t") -> torch.Tensor:
        obj: Any = self
        for atom in self._tensor_paths[(i, suffix)].split("."):
            obj = getattr(obj, atom)
        return obj

    def forward(self, *inputs: torch.Tensor) -> Any:
        values = list(inputs)
        kinds = self._kinds
        for i, step in enumerate(self.spec.steps):
            op = OPS[step.op]
            values.append(op.apply(self, i, step, kinds[step.inputs[0]], *(values[j] for j in step.inputs)))
        return _structure(self.spec.outputs, values)


def _structure(shape: Any, values: list) -> Any:
    if isinstance(shape, int):
        return values[shape]
    kind, items = shape
    if kind == "tuple":
        return tuple(_structure(s, values) for s in items)
    if kind == "list":
        return [_structure(s, values) for s in items]
    return {k: _structure(s, values) for k, s in items}


def _forward_signature(n_inputs: int) -> Callable:
    # symbolic_trace needs named positional parameters (it cannot trace *args).
    names = ["x", "v"][:n_inputs]
    src = f"def forward(self, {', '.join(names)}):\n    return DagModel.forward(self, {', '.join(names)})\n"
    scope: dict[str, Any] = {"DagModel": DagModel}
    exec(src, scope)  # noqa: S102 - a fixed template
    return scope["forward"]


_FORWARDS = {n: _forward_signature(n) for n in (1, 2)}
_CLASSES: dict[int, type] = {}


def build_model(spec: ModelSpec) -> nn.Module:
    """The float model for `spec` (in eval mode), deterministic in the spec."""
    n = len(spec.inputs)
    cls = _CLASSES.get(n)
    if cls is None:
        cls = type(f"DagModel{n}", (DagModel,), {"forward": _FORWARDS[n]})
        _CLASSES[n] = cls
    return cls(spec).eval()


# --------------------------------------------------------------------------------------------------
# Strategies


@st.composite
def model_specs(draw: st.DrawFn, min_steps: int = 1, max_steps: int = 10, dead_branches: bool = True) -> ModelSpec:
    """A random ModelSpec of `min_steps` to `max_steps` steps (at least one: the output is a computed
    value). With `dead_branches=False` every value feeds the output."""
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"model_specs needs 1 <= min_steps <= max_steps, got min_steps={min_steps}, "
                         f"max_steps={max_steps}: a model has at least one step")
    inputs = (IMG, VEC) if draw(st.booleans()) else (IMG,)
    kinds = list(inputs)
    steps: list[Step] = []
    module_steps: dict[str, list[int]] = {IMG: [], VEC: []}
    n = draw(st.integers(min_steps, max_steps))
    names = sorted(OPS)
    for i in range(n):
        op_name = draw(st.sampled_from(names))
        op = OPS[op_name]
        # pick the first input, then the others by the op's signature
        if op_name in _KIND_ONLY:
            wanted = _KIND_ONLY[op_name]
        elif not callable(op.reads):
            wanted = op.reads[0]
        else:
            wanted = None
        candidates = [j for j, k in enumerate(kinds) if wanted is None or k == wanted]
        if op_name == "reuse":
            candidates = [j for j in candidates if module_steps[kinds[j]]]
        if not candidates:
            op_name, op, candidates = "activation", OPS["activation"], list(range(len(kinds)))
        # prefer recent values, so chains get deep, but allow any (fan-out)
        first = draw(st.sampled_from(candidates[::-1]))
        kind = kinds[first]
        reads = op.in_kinds(kind)
        if any(k not in kinds for k in reads):
            op_name, op, reads = "activation", OPS["activation"], (kind,)
        ins = [first]
        for k in reads[1:]:
            ins.append(draw(st.sampled_from([j for j, kk in enumerate(kinds) if kk == k][::-1])))
        if op_name == "reuse":
            variant = draw(st.sampled_from(module_steps[kind]))
        else:
            variant = draw(st.integers(0, op.variants - 1))
        home = draw(st.integers(0, 3))
        step = Step(op_name, tuple(ins), variant, home)
        steps.append(step)
        if op_name in _MODULE_OPS:
            module_steps[kind].append(i)
        kinds.append(op.out_kind(kinds, step))

    produced = list(range(len(inputs), len(kinds)))
    read = {j for s in steps for j in s.inputs}
    sinks = [j for j in produced if j not in read]  # never empty: nothing reads the last value
    if dead_branches:
        # any 1-3 values (a value read by a later step may be an output too); unpicked sinks are dead
        drawn = draw(st.lists(st.sampled_from(produced[::-1]), min_size=1, max_size=3))
        picked = list(dict.fromkeys(drawn))
        if draw(st.booleans()):
            picked = sorted(set(picked) | {sinks[-1]})
    else:
        picked = sinks
    outputs = _draw_structure(draw, picked)
    seed = draw(st.integers(0, 2**16))
    return ModelSpec(inputs, tuple(steps), outputs, seed)


def _draw_structure(draw: st.DrawFn, picked: list[int]) -> Any:
    if len(picked) == 1 and draw(st.booleans()):
        return picked[0]
    form = draw(st.sampled_from(["tuple", "tuple", "list", "dict", "nested"]))
    if form == "dict":
        return ("dict", tuple((f"out{j}", j) for j in picked))
    if form == "nested" and len(picked) >= 2:
        return ("tuple", (picked[0], ("tuple", tuple(picked[1:]))))
    return ("list" if form == "list" else "tuple", tuple(picked))


def _note(text: str) -> None:
    if currently_in_test_context():
        note(text)


def float_models(**spec_kwargs: Any) -> st.SearchStrategy:
    """(float nn.Module in eval mode, example_inputs) for a random spec."""
    return model_specs(**spec_kwargs).map(_with_inputs)


def _with_inputs(spec: ModelSpec) -> tuple[nn.Module, tuple]:
    _note(f"spec: {spec!r}")
    return build_model(spec), spec.example_inputs()


def traced_models(**spec_kwargs: Any) -> st.SearchStrategy:
    """(torch.fx.symbolic_trace of a random DagModel, example_inputs)."""
    return model_specs(**spec_kwargs).map(trace_spec)


def trace_spec(spec: ModelSpec) -> tuple[torch.fx.GraphModule, tuple]:
    """symbolic_trace the model of `spec`; returns (GraphModule, example_inputs)."""
    _note(f"spec: {spec!r}")
    return torch.fx.symbolic_trace(build_model(spec)), spec.example_inputs()


# --------------------------------------------------------------------------------------------------
# Observed models


QCONFIG_STYLES = (
    "global_default", "x86", "qnnpack", "fbgemm", "per_channel", "object_types", "module_names",
    "regex", "dynamic_linear", "float16_static", "mixed_none",
)
QAT_STYLES = ("qat_x86", "qat_qnnpack", "qat_fbgemm", "qat_global")


def make_qconfig_mapping(style: str, spec: ModelSpec, model: nn.Module, pick: int = 0) -> Any:
    """A QConfigMapping of the given style for `model` (module-name entries name its real submodules)."""
    from torch.ao import quantization as q

    module_names = [n for n, m in model.named_modules() if n and not list(m.children())]
    chosen = module_names[pick % len(module_names)] if module_names else None
    if style == "global_default":
        return q.QConfigMapping().set_global(q.default_qconfig)
    if style in ("x86", "qnnpack", "fbgemm"):
        return q.get_default_qconfig_mapping(style)
    if style == "per_channel":
        return q.QConfigMapping().set_global(q.default_per_channel_qconfig)
    if style == "object_types":
        return (q.QConfigMapping().set_global(q.default_qconfig)
                .set_object_type(nn.Linear, q.default_per_channel_qconfig)
                .set_object_type(F.relu, None)
                .set_object_type(torch.add, q.default_qconfig))
    if style == "module_names":
        mapping = q.get_default_qconfig_mapping("fbgemm")
        if chosen is not None:
            mapping.set_module_name(chosen, None if pick % 2 else q.default_per_channel_qconfig)
        return mapping
    if style == "regex":
        return (q.QConfigMapping().set_global(q.default_qconfig)
                .set_module_name_regex(r"blocks\..*", None)
                .set_module_name_regex(r"heads\..*", q.default_per_channel_qconfig))
    if style == "dynamic_linear":
        mapping = q.QConfigMapping().set_object_type(nn.Linear, q.default_dynamic_qconfig)
        if pick % 2:
            mapping.set_object_type(F.linear, q.float16_dynamic_qconfig)
        return mapping
    if style == "float16_static":
        return q.QConfigMapping().set_global(q.float16_static_qconfig)
    if style == "mixed_none":
        mapping = q.get_default_qconfig_mapping("x86").set_object_type(nn.Conv2d, None)
        if chosen is not None:
            mapping.set_module_name(chosen, None)
        return mapping
    if style in ("qat_x86", "qat_qnnpack", "qat_fbgemm"):
        return q.get_default_qat_qconfig_mapping(style[4:])
    if style == "qat_global":
        return q.QConfigMapping().set_global(q.default_qat_qconfig)
    raise ValueError(f"unknown qconfig style {style!r}")


@attrs.frozen
class ObservedCase:
    """What an observed model was made from (kept for error messages and for re-running prepare)."""

    spec: ModelSpec
    style: str
    pick: int
    qat: bool


def prepare_case(case: ObservedCase) -> tuple[torch.fx.GraphModule, tuple]:
    """Run prepare_fx (or prepare_qat_fx) on the case's model and calibrate it with three batches."""
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    _note(f"observed case: {case!r}")
    model = build_model(case.spec)
    mapping = make_qconfig_mapping(case.style, case.spec, model, case.pick)
    inputs = case.spec.example_inputs()
    try:
        if case.qat:
            observed = prepare_qat_fx(model.train(), mapping, inputs)
        else:
            observed = prepare_fx(model, mapping, inputs)
    except LookupError as exc:
        # prepare refuses to fuse e.g. Linear+ReLU when the mapping gives them different qconfigs
        if "During fusion" not in str(exc):
            raise
        reject()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(case.spec.seed)
        for salt in range(3):
            observed(*case.spec.example_inputs(salt))
    return observed, inputs


@st.composite
def observed_cases(draw: st.DrawFn, qat: bool | None = None, styles: tuple[str, ...] | None = None,
                   **spec_kwargs: Any) -> ObservedCase:
    """A random ObservedCase; `qat` forces QAT (True) or post-training (False) preparation."""
    spec = draw(model_specs(**spec_kwargs))
    is_qat = draw(st.integers(0, 4)) == 0 if qat is None else qat
    if styles is None:
        styles = QAT_STYLES if is_qat else QCONFIG_STYLES
    style = draw(st.sampled_from(styles))
    return ObservedCase(spec, style, draw(st.integers(0, 7)), is_qat)


def observed_models(qat: bool | None = None, **kwargs: Any) -> st.SearchStrategy:
    """(prepared and calibrated GraphModule, example_inputs): random DagModels through prepare_fx with
    varied qconfig mappings (about one in five through prepare_qat_fx in train mode)."""
    return observed_cases(qat=qat, **kwargs).map(prepare_case)


def programs(qat: bool | None = None, *, mode: str = "reference", after: str | None = None,
             **kwargs: Any) -> st.SearchStrategy:
    """Programs lifted from `observed_models(qat, **kwargs)` with the convert options of `mode` (reference,
    decomposed or lowered) and, with `after`, run through the start of that mode's standard pipeline:

    - None: the lifted program, the input of the whole pipeline;
    - a pass name: the program after that pass ("dce" after its first run, "dce#2" after its second, as
      `qfx show --after` spells them), e.g. `programs(mode="lowered", after="dce")` is what the lowering
      passes get;
    - "any": after a random number of the pipeline's passes, none to all.

    The observed model is never modified. An unknown mode or pass is a PipelineSpecError at once."""
    names = pipeline_names(mode)
    if after == "any":
        prefixes = st.integers(0, len(names))
    elif after is not None:
        prefixes = st.just(passes_through(mode, after, asked=f"programs(after={after!r})"))
    lifted = observed_models(qat=qat, **kwargs).map(functools.partial(_lift_observed, mode=mode))
    if after is None:
        return lifted
    return st.tuples(lifted, prefixes).map(lambda drawn: _run_prefix(drawn[0], names[:drawn[1]]))


def _lift_observed(observed_and_inputs: tuple[torch.fx.GraphModule, tuple], mode: str) -> Any:
    from qfx.ir.lift import lift
    from qfx.api import convert_options

    observed, _ = observed_and_inputs
    options = convert_options(is_reference=mode != "lowered", is_decomposed=mode == "decomposed",
                              convert_custom_config=None)
    return lift(observed, options=options)


def _run_prefix(program: Any, names: list[str]) -> Any:
    from qfx.passes.manager import Pipeline

    if not names:
        return program
    _note(f"programs(): after the passes {','.join(names)}")
    return Pipeline.parse(",".join(names)).run(program)
