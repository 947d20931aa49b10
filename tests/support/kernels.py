"""Testing code that has a compiled kernel and a tensor-operation fallback: run it each way, and check that
the kernel was built."""

from __future__ import annotations

import contextlib
import shutil
import sysconfig
from types import ModuleType
from typing import Iterator

import pytest

# "native": the compiled kernel (when built); "tensor": the tensor operations it stands in for
PATHS = ("native", "tensor")


@contextlib.contextmanager
def taking(module: ModuleType, path: str) -> Iterator[None]:
    """Within the block, `module` uses its compiled kernel ("native") or its tensor operations ("tensor"):
    its `native_kernel` is swapped for one that finds no kernel."""
    original = module.native_kernel
    module.native_kernel = original if path == "native" else (lambda: None)
    try:
        yield
    finally:
        module.native_kernel = original


def assert_kernel_built(module: ModuleType) -> None:
    """`module.native_kernel()` finds its kernel (built when qfx is installed with a C compiler, and passing
    its own check against the tensor operations); skipped where no C compiler is at hand."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}): the kernel is not built")
    assert module.native_kernel() is not None
