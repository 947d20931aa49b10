"""qfx.lowering: the lowering passes (reference patterns -> native fbgemm/x86 and qnnpack kernels) + codegen.

codegen (the package codegen/) turns a Program back into a torch GraphModule. Each lowering pass is the
module lowering/<pass_name>.py (or the package lowering/<pass_name>/); helpers several of them share live in
lowering/support/. Importing this package registers the lowering passes.
"""

from .codegen import codegen

# Importing each pass module registers its pass under its text name (torch's lowering order).
from . import (  # noqa: F401,E402
    lower_static_modules,
    lower_dynamic_modules,
    lower_weight_only_modules,
    lower_static_functionals,
    lower_dynamic_functionals,
    lower_binary_ops,
    lower_tensor_info_ops,
    lower_special_patterns,
    fold_weights,
)

__all__ = ["codegen"]
