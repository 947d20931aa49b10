"""qfx.lowering: lowering passes + codegen.

codegen (the package codegen/) turns a Program back into a torch GraphModule. Lowering passes, to native
quantized kernels, will sit beside it as lowering/<pass_name>.py (or a package lowering/<pass_name>/).
"""

from .codegen import codegen

__all__ = ["codegen"]
