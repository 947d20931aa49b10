"""The one compiled part of qfx: the histogram-scoring kernel (pyproject.toml holds everything else).

It is optional: without a C compiler qfx installs all the same and scores histograms with tensor operations.
It must be compiled without floating-point contraction (fused multiply-adds) and without fast-math, so that
each float32 operation is rounded on its own, as torch's tensor operations round it."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "qfx.passes.support._histogram_kernel",
            sources=["passes/support/_histogram_kernel.c"],
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math"],
            optional=True,
        )
    ]
)
