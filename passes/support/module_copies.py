"""Module objects made from another module's instance dict, for code that would otherwise change it."""

from __future__ import annotations

from typing import Any

import torch


def standin(module: torch.nn.Module, **attributes: Any) -> torch.nn.Module:
    """A new object of `module`'s class whose instance dict holds `module`'s entries (its tables shared, to be
    only read) with `attributes` in place of its own: what a constructor-calling method is run on instead of
    `module`, or what is changed instead of it once given tables of its own."""
    kind = type(module)
    made = kind.__new__(kind)
    made.__dict__.update(module.__dict__)
    made.__dict__.update(attributes)
    return made
