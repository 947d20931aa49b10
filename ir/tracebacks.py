"""Which node a failure happened at, read from the failure's traceback (for the pass manager's and codegen's
error messages)."""

from __future__ import annotations

import functools
import sys
import sysconfig
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from .graph import Node
from .program import Program

# Where installed libraries live (torch's frames are not the code that was working on a node)
_LIBRARY_DIRS = tuple({Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "purelib", "platlib")})


def failing_node(tb: TracebackType | None, program: Program) -> tuple[str | None, str | None]:
    """(node name, "'target': ModuleClass") of the node a failing pass was working on, or Nones.

    Read from the traceback: the innermost frame of qfx's code or of the user's (a pass of their own; not
    of an installed library such as torch) that holds a node (an IR node or, for passes that edit a private
    FX graph, an FX node) in a local called `node`, or failing that in any local. The module is the node's
    call_module target, looked up in `program`."""
    found: Any = None
    while tb is not None:
        frame = tb.tb_frame
        if _working_code(frame.f_code.co_filename):
            local = frame.f_locals
            candidate = local.get("node")
            if not _is_node(candidate):
                candidate = next((v for v in local.values() if _is_node(v)), None)
            if candidate is not None:
                found = candidate
        tb = tb.tb_next
    if found is None:
        return None, None
    module = None
    if found.op == "call_module" and isinstance(found.target, str):
        held = program.modules.get(found.target)
        module = f"'{found.target}': {type(held).__name__}" if held is not None else f"'{found.target}'"
    return found.name, module


_WORKING: dict[str, bool] = {}


def _working_code(filename: str) -> bool:
    """Whether a frame of `filename` is qfx's or the user's code, not an installed library's."""
    known = _WORKING.get(filename)
    if known is None:
        path = Path(filename).resolve()
        known = _WORKING[filename] = (any(path.is_relative_to(d) for d in _qfx_dirs())
                                      or not (filename.startswith("<")
                                              or any(path.is_relative_to(d) for d in _LIBRARY_DIRS)))
    return known


@functools.cache
def _qfx_dirs() -> tuple[Path, ...]:
    """The folders of qfx's packages, wherever they are installed (asked once they are all imported: a pass
    is running)."""
    return tuple(Path(sys.modules[name].__file__).resolve().parent
                 for name in ("qfx", "qfx.ir", "qfx.passes", "qfx.lowering") if name in sys.modules)


def _is_node(value: Any) -> bool:
    return isinstance(value, (Node, torch.fx.Node))
