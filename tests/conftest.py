"""Session-wide test setup for qfx.

- Every pipeline run in any test verifies the IR after each pass (`qfx.passes.instruments.Verify`) and checks
  that each pass left its input unchanged (`InputUnchanged`): same printed form, same objects in its
  tables, bit-identical tensors and observer state in every module and attribute it reaches.
- Hypothesis profiles: "ci" (the default: few examples, derandomized, no deadline) and "thorough" (many
  random examples); pick one with QFX_HYPOTHESIS_PROFILE=thorough. Tests scale their example counts
  with `qfx.testing.strategies.examples(n)`.
- torch runs single-threaded: the models are tiny, and with two xdist workers on two cores threads
  only add overhead.
- torch's deprecation chatter is silenced.
"""

from __future__ import annotations

import os
import threading
import warnings

import pytest
import torch
from hypothesis import HealthCheck, settings

from qfx.passes.instruments import BaseInstrument, Verify
from qfx.passes.manager import GLOBAL_INSTRUMENTS, Pass
from tests.support.snapshot import ProgramSnapshot, assert_program_unchanged, snapshot_program

torch.set_num_threads(1)

_QUIET = [
    ("ignore", ".*torch.ao.quantization is deprecated.*", DeprecationWarning),
    ("ignore", "", DeprecationWarning),
    ("ignore", "", FutureWarning),
    ("ignore", ".*reduce_range will be deprecated.*", UserWarning),
    ("ignore", ".*Please use quant_min and quant_max.*", UserWarning),
    ("ignore", ".*_check_is_valid_config_dict.*", UserWarning),
    ("ignore", ".*quantized tensor creation functions.*", UserWarning),
    ("ignore", ".*TypedStorage is deprecated.*", UserWarning),
    ("ignore", ".*QConfig must specify a FixedQParamsObserver.*", UserWarning),
]
for _action, _message, _category in _QUIET:
    warnings.filterwarnings(_action, message=_message, category=_category)


def pytest_configure(config: pytest.Config) -> None:
    # pytest re-applies its ini filters around each test; add ours there too.
    for action, message, category in _QUIET:
        config.addinivalue_line("filterwarnings", f"{action}:{message}:{category.__name__}")


settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("QFX_HYPOTHESIS_PROFILE", "ci"))


class PassMutatedInputError(AssertionError):
    """A pass changed its input Program or something reachable from it."""


class InputUnchanged(BaseInstrument):
    """Snapshots each pass's input before it runs and fails the pass if the input changed.

    Re-entrant: a pass may run a nested pipeline (standalone modules); snapshots form a stack matched
    by (pass, program) identity, and entries left behind by a nested failure are dropped. Each thread has
    its own stack (the concurrency tests run pipelines in several threads at once)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.checked = 0

    @property
    def _stack(self) -> list[tuple[Pass, object, ProgramSnapshot]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def before_pass(self, index: int, p: Pass, program: object) -> None:
        self._stack.append((p, program, snapshot_program(program)))

    def after_pass(self, index: int, p: Pass, before: object, after: object, seconds: float) -> None:
        self._check(p, before)

    def after_failure(self, index: int, p: Pass, program: object, error: BaseException) -> None:
        if isinstance(error, PassMutatedInputError):
            return
        self._check(p, program)

    def _check(self, p: Pass, program: object) -> None:
        for i in range(len(self._stack) - 1, -1, -1):
            entry_pass, entry_program, snap = self._stack[i]
            if entry_pass is p and entry_program is program:
                del self._stack[i:]
                self.checked += 1
                try:
                    assert_program_unchanged(snap, program, f"the input of pass '{p.name}'")
                except AssertionError as exc:
                    raise PassMutatedInputError(str(exc)) from None
                return


VERIFY = Verify()
INPUT_UNCHANGED = InputUnchanged()
GLOBAL_INSTRUMENTS.extend([VERIFY, INPUT_UNCHANGED])


@pytest.fixture
def input_unchanged() -> InputUnchanged:
    """The session's purity instrument (its `checked` counter tells how many pass runs it checked)."""
    return INPUT_UNCHANGED
