"""Lowering: from the IR back to torch (codegen) and, later, to native quantized kernels."""

from .codegen import codegen

__all__ = ["codegen"]
