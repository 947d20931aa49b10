"""Building torch's quantized modules under the current quantized engine, with typed failures.

The engine (`torch.backends.quantized.engine`) decides how `from_reference` packs weights, and some
engines refuse some modules (qnnpack has no fp16 linear prepack, for one). torch lets that RuntimeError
through; qfx reports it as an `EngineError`, which is a RuntimeError too.
"""

from __future__ import annotations

from typing import Any

import torch

from qfx.ir.errors import ConvertError


class EngineError(ConvertError, RuntimeError):
    """The quantized engine cannot build a lowered module or op (torch fails with the same RuntimeError)."""


def quantized_from_reference(q_class: type, ref_module: Any, *args: Any, where: str) -> Any:
    """`q_class.from_reference(ref_module, *args)`, built afresh under the current engine (never cached:
    the packing depends on the engine). A RuntimeError from torch becomes an EngineError naming `where`
    (the node and module path), the engine and the way out."""
    try:
        return q_class.from_reference(ref_module, *args)
    except RuntimeError as exc:
        engine = torch.backends.quantized.engine
        raise EngineError(
            f"{where}: the '{engine}' quantized engine cannot build {q_class.__module__}.{q_class.__qualname__} "
            f"({exc}); pick another engine with torch.backends.quantized.engine, or give this module a "
            f"qconfig that engine supports") from exc
