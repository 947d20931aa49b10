"""pysource: the `PythonCode` FX would generate for a Program's graph, written straight from the IR.

`GraphModule.recompile()` asks its graph for `python_code(root_module="self")`; on large graphs FX's
generator is the slowest part of building the module. `python_code(program)` produces the same value
(identical `src`, the same globals under the same names, the same line map) from the IR's nodes, without
FX nodes, and returns None for anything it does not reproduce exactly, so the caller lets FX do the work.
`serving(graph, code)` hands a precomputed value to `GraphModule` while it is being constructed.

The text follows torch 2.13's `CodeGen._gen_python_code` (torch/fx/graph.py) in its default, non-verbose
form: one line per node (`name = expr`, then `;  a = b = None` for the values whose last reader it is),
the output's `return`, a `def forward(self, ...)` prologue, and the `torch.fx.wrap` lines of wrapped
functions. Globals are named by FX's rules; wherever those rules would rename one (a clash with a node
name or with another object's name) we give up rather than replay the renaming.
"""

from __future__ import annotations

import contextlib
import enum
import os
import types
from typing import Any, Callable, Iterator

import torch
from torch.fx.experimental import _config as fx_config
from torch.fx.graph import (
    CodeGen,
    PythonCode,
    _custom_builtins,
    _illegal_char_regex,
    _illegal_names,
    _is_from_torch,
    _name_regex,
    inplace_methods,
    magic_methods,
)
from torch.fx.node import _get_qualified_name, _type_repr

from qfx.ir.args import DictArg, ListArg, Ref, SliceArg, TupleArg
from qfx.ir.program import Program

__all__ = ["python_code", "fallback_reason", "serving"]


class _Unsupported(Exception):
    """The graph uses something this emitter does not reproduce; FX must generate the code."""


# Leaves whose text in generated code is plain `repr` (FX's last resort in `_get_repr`), by exact type:
# subclasses (str enums, int flags, ...) may take other branches there.
_REPR_LEAVES = frozenset({
    int, float, bool, str, complex, type(None), type(Ellipsis),
    torch.dtype, torch.device, torch.memory_format, torch.layout,
})

# Per-object facts that do not depend on the graph, kept across calls (bounded; see `_remember`). Objects
# are keyed by id (some, like OpOverload, hash in Python) and kept in the entry, which pins their id.
_CACHE_LIMIT = 4096
_call_forms: dict[int, tuple] = {}  # id(call_function target) -> (target, *_call_form(target))
_torch_names: dict[int, tuple] = {}  # id(obj) -> (obj, the dotted name FX writes for a torch object, or None)
_candidates: dict[str, tuple[str, bool]] = {}  # global name hint -> (identifier, has a numeric suffix)


def _remember(table: dict, key: Any, value: Any) -> Any:
    if len(table) >= _CACHE_LIMIT:
        table.clear()
    table[key] = value
    return value


def python_code(program: Program) -> PythonCode | None:
    """The PythonCode FX's `Graph.python_code("self")` gives for the graph `codegen(program)` builds, with
    the options `GraphModule.recompile()` uses; None when the emitter cannot guarantee the identical value
    (then FX must generate it). Reads the program only."""
    try:
        return _emit(program)
    except Exception:  # noqa: BLE001 - any surprise means "let FX do it", which is always correct
        return None


def fallback_reason(program: Program) -> str | None:
    """Why `python_code(program)` returns None (None when it does not): for tests and diagnostics."""
    try:
        _emit(program)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"
    return None


@contextlib.contextmanager
def serving(graph: torch.fx.Graph, code: PythonCode | None) -> Iterator[None]:
    """While active, `graph.python_code(root_module="self")` with recompile's default options returns
    `code` (computed by `python_code` for the program the graph was built from); any other request, and
    every request when `code` is None, goes to FX as usual. The graph is left as it was on exit."""
    if code is None:
        yield
        return
    generate = graph.python_code

    def serve(root_module: str, **options: Any) -> PythonCode:
        if root_module == "self" and not any(options.values()):
            return code
        return generate(root_module, **options)

    graph.python_code = serve  # an instance attribute, shadowing the method
    try:
        yield
    finally:
        del graph.python_code


# ---------------------------------------------------------------------------------------------------------
# the emitter


def _emit(program: Program) -> PythonCode:
    func_name = _plain_codegen(program.root.codegen)
    if fx_config.enrich_profiler_metadata:
        raise _Unsupported("profiler metadata recording is on (recompile adds _RecordFunctionFast lines)")
    if os.environ.get("FX_GRAPH_SHOW_META", "0") == "1":
        raise _Unsupported("FX_GRAPH_SHOW_META=1 adds meta docstrings")
    nodes = program.graph.nodes
    if not nodes:
        raise _Unsupported("an empty graph (FX emits `pass`)")
    return _Emitter(nodes, func_name).run()


def _plain_codegen(codegen: Any) -> str:
    """The function name of a stock `CodeGen` (no body transformer, nothing overridden on the instance)."""
    if codegen is None:
        return "forward"
    if type(codegen) is not CodeGen:
        raise _Unsupported(f"codegen {type(codegen).__name__} is not the plain CodeGen")
    if set(vars(codegen)) - {"_body_transformer", "_func_name"} or codegen._body_transformer is not None:
        raise _Unsupported("the CodeGen has a body transformer or instance overrides")
    return codegen._func_name


class _Emitter:
    """One run: the body lines, globals and free variables of one graph."""

    def __init__(self, nodes: Any, func_name: str) -> None:
        self.nodes = nodes
        self.func_name = func_name
        # every name the generated code binds to a node (the output node is never named)
        names = [n.name for n in nodes if n.op != "output"]
        self.node_names = set(names)
        # FX's code generator renames a node whose name is not a plain identifier or shadows a builtin,
        # keyword or FX global (a user may set node.name to anything); the emitter writes names as they are
        if not (all(map(str.isidentifier, names)) and all(map(str.isascii, names))
                and self.node_names.isdisjoint(_illegal_names)):
            raise _Unsupported("a node name that FX's code generator renames")
        self.globals: dict[str, Any] = {}
        self.global_of: dict[Any, str] = {}  # object -> its global name (FX's namespace dedups objects by ==)

    # -- globals ---------------------------------------------------------------------------------------

    def add_global(self, hint: str, obj: Any) -> str:
        """The name generated code uses for `obj`: FX's `add_global` for names it would not rename."""
        torch_name = _torch_name(obj)
        if torch_name is not None:
            return torch_name
        name = self.global_of.get(obj)
        if name is not None:
            return name
        candidate = _candidates.get(hint)
        if candidate is None:
            candidate = _remember(_candidates, hint, _identifier(hint))
        name, numbered = candidate
        if name in self.globals or name in self.node_names:
            raise _Unsupported(f"global name {name!r} clashes with another global or a node")
        if not numbered and _illegal_names.get(name, obj) is not obj:
            raise _Unsupported(f"global name {name!r} shadows a builtin")
        self.globals[name] = obj
        self.global_of[obj] = name
        return name

    def type_text(self, annotation: Any) -> str:
        """A node's type annotation as FX writes it: plain classes, and strings (postponed annotations,
        which FX binds to a global named after their repr); anything generic is not supported."""
        if type(annotation) is str:
            return self.add_global(repr(annotation), annotation)
        if (not isinstance(annotation, type) or isinstance(annotation, types.GenericAlias)
                or getattr(annotation, "__origin__", None) is not None):
            raise _Unsupported(f"type annotation {annotation!r}")
        return self.add_global(_type_repr(annotation), annotation)

    # -- arguments -------------------------------------------------------------------------------------

    def arg(self, value: Any) -> str:
        """FX's `_get_repr` of an argument."""
        kind = type(value)
        text = self._common(value, kind, self.arg)
        if text is not None:
            return text
        if kind is DictArg:
            return self.plain(value)
        if kind is TupleArg:
            if hasattr(value.kind, "_fields"):  # a namedtuple: its class as a global, then the plain tuple
                cls = value.kind
                name = self.add_global(_get_qualified_name(cls), cls)
                return name + self.plain(tuple(value.items))
            if value.kind is torch.Size:
                return self.arg(tuple(value.items))
            raise _Unsupported(f"tuple subclass {value.kind.__name__}")
        if isinstance(value, (torch._ops.OpOverload, torch._ops.HigherOrderOperator)):
            return self.add_global(_get_qualified_name(value), value)
        if isinstance(value, enum.Enum):
            cls = type(value)
            return f"{self.add_global(cls.__name__, cls)}.{value.name}"
        raise _Unsupported(f"argument of type {kind.__name__}")

    def plain(self, value: Any) -> str:
        """Python's own `repr` of an FX argument (what FX writes for dicts and namedtuple contents)."""
        kind = type(value)
        text = self._common(value, kind, self.plain)
        if text is not None:
            return text
        if kind is DictArg:
            parts = []
            for key, item in value.items:
                if type(key) not in _REPR_LEAVES:
                    raise _Unsupported(f"dict key of type {type(key).__name__}")
                parts.append(f"{key!r}: {self.plain(item)}")
            return "{" + ", ".join(parts) + "}"
        raise _Unsupported(f"argument of type {kind.__name__} inside a dict or namedtuple")

    def _common(self, value: Any, kind: type, recurse: Callable[[Any], str]) -> str | None:
        """The text both `arg` and `plain` give node references, plain leaves, tuples, lists and slices
        (their items rendered by `recurse`); None for other values."""
        if kind is Ref:
            return value.name
        if kind in _REPR_LEAVES:
            return repr(value)
        if kind is tuple:
            if len(value) == 1:
                return f"({recurse(value[0])},)"
            return "(" + ", ".join(map(recurse, value)) + ")"
        if kind is ListArg:
            return "[" + ", ".join(map(recurse, value.items)) + "]"
        if kind is SliceArg:
            return f"slice({recurse(value.start)}, {recurse(value.stop)}, {recurse(value.step)})"
        return None

    def call_args(self, args: tuple, kwargs: tuple) -> str:
        """FX's `_format_args`: positional arguments, then `key = value` pairs."""
        parts = []
        for a in args:
            kind = type(a)
            if kind is Ref:  # the common cases inline: this runs for almost every argument
                parts.append(a.name)
            elif kind in _REPR_LEAVES:
                parts.append(repr(a))
            else:
                parts.append(self.arg(a))
        for key, value in kwargs:
            parts.append(f"{key} = {self.arg(value)}")
        return ", ".join(parts)

    # -- nodes -----------------------------------------------------------------------------------------

    def statement(self, node: Any, free_vars: list[str], wrapped: dict[str, None]) -> str:
        """The node's statement (without the trailing deletions and newline); '' for a placeholder that
        needs none. Appends to `free_vars` (placeholders) and `wrapped` (wrapped functions)."""
        op = node.op
        name = node.name
        annotation = "" if node.type is None else " : " + self.type_text(node.type)
        args = node.args
        if op == "call_function":
            target = node.target
            form = _call_forms.get(id(target))
            if form is None or form[0] is not target:
                form = _remember(_call_forms, id(target), (target, *_call_form(target)))
            _, style, text, arity, torch_name = form
            if style == "call":
                callee = torch_name if torch_name is not None else self.add_global(text, target)
                if callee == "getattr":
                    if len(args) < 2:
                        raise _Unsupported("getattr with fewer than two arguments")  # FX fails on it
                    if len(args) == 2 and type(args[1]) is str and args[1].isidentifier():
                        return f"{name}{annotation} = {self.arg(args[0])}.{args[1]}"
                line = f"{name}{annotation} = {callee}({self.call_args(args, node.kwargs)})"
                meta = node.meta
                if meta and meta.get("is_wrapped", False):
                    wrapped.setdefault(callee)
                return line
            if len(args) != arity or node.kwargs:
                raise _Unsupported(f"operator {target.__name__} with {len(args)} args and kwargs {node.kwargs}")
            operands = list(map(self.arg, args))
            if style == "operator":
                return f"{name}{annotation} = {text.format(*operands)}"
            return f"{text.format(*operands)};  {name}{annotation} = {operands[0]}"  # in-place operator
        if op == "call_module":
            return f"{name}{annotation} = {_self_path(node.target)}({self.call_args(args, node.kwargs)})"
        if op == "get_attr":
            return f"{name}{annotation} = {_self_path(node.target)}"
        if op == "call_method":
            if not args:
                raise _Unsupported("call_method without a receiver")
            receiver = self.arg(args[0])
            method = node.target
            callee = f"{receiver}.{method}" if method.isidentifier() else _attr_path(receiver, method)
            return f"{name}{annotation} = {callee}({self.call_args(args[1:], node.kwargs)})"
        if op == "placeholder":
            target = node.target
            if type(target) is not str:
                raise _Unsupported("placeholder target is not a string")
            default = f" = {self.arg(args[0])}" if args else ""
            free_vars.append(f"{target}{annotation}{default}")
            raw = target.replace("*", "")
            return "" if raw == name else f"{name} = {raw}"
        if op == "output":
            if not args:
                raise _Unsupported("output without a value")
            return f"return {self.arg(args[0])}"
        raise _Unsupported(f"op {op}")

    def run(self) -> PythonCode:
        for name, (_, obj) in _custom_builtins.items():
            self.add_global(name, obj)
        nodes = self.nodes
        free_vars: list[str] = []
        wrapped: dict[str, None] = {}
        statements: list[str] = []
        return_type = ""
        for node in nodes:
            statements.append(self.statement(node, free_vars, wrapped))
            if node.op == "output" and node.type is not None:
                return_type = " -> " + self.type_text(node.type)

        # Walking backwards: a value is deleted right after its last reader, and a value nobody reads
        # right after it is made (placeholders and the output delete nothing). A node's reads are FX's
        # `_input_nodes`: the references in its args, then kwargs, in order.
        count = len(nodes)
        lines: list[str] = []  # the body's lines, last first, without newlines
        owners: list[int] = []  # node index of each line
        read_later: set[str] = set()
        for i in range(count - 1, -1, -1):
            node = nodes[i]
            text = statements[i]
            gone = []
            for name in node.input_name_tuple():  # (a loop, not a comprehension: most read one or two)
                if name not in read_later:
                    read_later.add(name)
                    gone.append(name)
            op = node.op
            if op == "placeholder":
                if not text:
                    continue
            elif op != "output":
                if node.name not in read_later:
                    gone.append(node.name)
                if gone:
                    text = f"{text};  {' = '.join(gone)} = None"
            lines.append(text)
            owners.append(i)
        lines.reverse()
        owners.reverse()
        body = "\n    ".join(lines)  # the body, indented but for its first line (if no statement spans lines)
        if "# COUNTER: " in body:
            raise _Unsupported("a line contains FX's counter marker")

        wrap_stmts = ""
        if wrapped:
            wrap = self.add_global("wrap", torch.fx.wrap)
            wrap_stmts = "\n".join(f'{wrap}("{name}")' for name in wrapped)
        if not free_vars or free_vars[0] != "self":
            free_vars.insert(0, "self")
        prologue = f"def {self.func_name}({', '.join(free_vars)}){return_type}:"

        first = prologue.count("\n") + 1
        if "\n" not in "".join(lines):  # one line per statement: the common case
            code = f"    {body}\n    "
            lineno_map = dict(enumerate(owners, first))
            lineno_map[first + len(owners)] = count - 1  # the empty line after the final newline
        else:
            lineno_map = _line_owners(lines, owners, first, count - 1)
            code = "    " + ("\n".join(lines) + "\n").lstrip("\n").replace("\n", "\n    ")
        src = f"\n{wrap_stmts}\n\n{prologue}\n{code}"
        return PythonCode(src, self.globals, _lineno_map=lineno_map, _prologue_start=wrap_stmts.count("\n") + 4)


def _line_owners(lines: list[str], owners: list[int], first: int, last: int) -> dict[int, int | None]:
    """The line -> node index map when some statements span several lines."""
    out: dict[int, int | None] = {}
    lineno = first
    for text, owner in zip(lines, owners):
        for _ in range(text.count("\n") + 1):
            out[lineno] = owner
            lineno += 1
    out[lineno] = last
    return out


# ---------------------------------------------------------------------------------------------------------
# per-object facts


def _call_form(target: Callable[..., Any]) -> tuple[str, str, int, str | None]:
    """How FX renders a call_function of `target`: ("operator", template, arity, None) for operator-module
    functions it writes as Python operators, ("inplace", template, arity, None) for augmented assignments,
    else ("call", qualified name, 0, the name FX writes for a torch function or None)."""
    if not callable(target):
        raise _Unsupported(f"call_function target {target!r} is not callable")
    if getattr(target, "__module__", "") == "_operator":
        for style, table in (("operator", magic_methods), ("inplace", inplace_methods)):
            template = table.get(target.__name__)
            if template is not None:
                return style, template, template.count("{}"), None
    return "call", _get_qualified_name(target), 0, _torch_name(target)


def _torch_name(obj: Any) -> str | None:
    """The dotted name FX writes for an object of torch's own instead of registering a global (None for
    other objects, and for `torch.device`, which FX registers as the global `device`)."""
    entry = _torch_names.get(id(obj))
    if entry is None or entry[0] is not obj:
        name = _get_qualified_name(obj) if _is_from_torch(obj) and obj != torch.device else None
        entry = _remember(_torch_names, id(obj), (obj, name))
    return entry[1]


def _identifier(hint: str) -> tuple[str, bool]:
    """FX's identifier for a global name hint, and whether it ends in a numeric suffix."""
    match = _name_regex.match(hint)
    if match is None:
        hint = _illegal_char_regex.sub("_", hint) or "_unnamed"
        if hint[0].isdigit():
            hint = "_" + hint
        match = _name_regex.match(hint)
    return hint, match.group(2) is not None


def _attr_path(base: str, path: str) -> str:
    """`base` followed by the attribute path, with getattr for atoms that are not identifiers."""
    if path.isidentifier():  # (a name on the base itself, as every attribute the passes add is)
        return f"{base}.{path}"
    atoms = path.split(".")
    if all(map(str.isidentifier, atoms)):
        return f"{base}.{path}"
    for atom in atoms:
        base = f"{base}.{atom}" if atom.isidentifier() else f'getattr({base}, "{atom}")'
    return base


def _self_path(target: str) -> str:
    if type(target) is not str:
        raise _Unsupported("module or attribute target is not a string")
    return _attr_path("self", target)
