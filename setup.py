"""The compiled parts of qfx: the histogram-search, weight-range, QAT weight-qparams and weight-quantization
kernels (pyproject.toml holds everything else).

All are optional: without a C compiler qfx installs all the same and does their work with tensor
operations (the QAT qparams with torch's fused fake-quantize op). They must be compiled without
floating-point contraction (fused multiply-adds) and without fast-math, so that each float32 operation is
rounded on its own, as torch's tensor operations round it."""

import platform

from setuptools import Extension, setup

FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math"]
# The histogram kernel's AVX-512 variant in 512-bit vectors, whose float32 arithmetic on subnormals takes no
# microcode assists on recent x86 CPUs (256-bit vectors take one per operation): see _histogram_kernel.c.
WIDE = ["-mprefer-vector-width=512"] if platform.machine().lower() in ("x86_64", "amd64") else []

setup(
    ext_modules=[
        Extension("qfx.passes.support._histogram_kernel", sources=["passes/support/_histogram_kernel.c"],
                  extra_compile_args=FLAGS + WIDE, optional=True),
        Extension("qfx.passes.swap_modules._range_kernel", sources=["passes/swap_modules/_range_kernel.c"],
                  extra_compile_args=FLAGS, optional=True),
        Extension("qfx.passes.swap_modules._channel_qparams_kernel",
                  sources=["passes/swap_modules/_channel_qparams_kernel.c"], extra_compile_args=FLAGS, optional=True),
        Extension("qfx.lowering.support._quantize_kernel", sources=["lowering/support/_quantize_kernel.c"],
                  extra_compile_args=FLAGS, optional=True),
    ]
)
