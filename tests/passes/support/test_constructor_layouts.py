"""constructor_layouts: the keys constructor calls are remembered by, and what a replayed instance dict holds."""

from __future__ import annotations

import torch
from torch import nn

from qfx.passes.support.constructor_layouts import PLACEHOLDER, call_key, holds_placeholder, layout_of, replay


def test_keys_tell_apart_equal_values_of_different_kinds() -> None:
    """A constructor's result is replayed only for arguments of the same types and exact values: 1, 1.0
    and True are equal in Python but not to a constructor that stores them; nor are 0.0 and -0.0."""
    keys = [call_key(args, {}) for args in [(1, (2, 2)), (True, (2, 2)), (1.0, (2, 2)), (1, (2, True))]]
    keys += [call_key((0.01,), {"slope": value}) for value in (0.0, -0.0)]
    assert all(key is not None for key in keys)
    assert len(set(keys)) == len(keys)
    assert call_key((1, (2, 2)), {}) == keys[0]
    assert call_key(([1],), {}) is None
    assert call_key((1,), {"x": torch.zeros(1)}) is None


def _replayed(module: nn.Module, **options) -> nn.Module:
    layout = layout_of(module.__dict__, **options)
    assert layout is not None
    made = type(module).__new__(type(module))
    replay(layout, made.__dict__)
    return made


def test_a_replayed_conv_has_the_constructors_dict_with_placeholders_for_its_parameters() -> None:
    built = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    made = _replayed(built, parameters=True)
    assert list(made.__dict__) == list(built.__dict__)
    assert made._parameters == {"weight": PLACEHOLDER, "bias": None} and holds_placeholder(made)
    for name, value in built.__dict__.items():
        if name == "_parameters":
            continue
        assert made.__dict__[name] == value and type(made.__dict__[name]) is type(value)
        if isinstance(value, (dict, set, list)):
            assert made.__dict__[name] is not value  # tables and lists of its own
    made.weight = nn.Parameter(torch.ones(4, 2, 3, 3))
    assert not holds_placeholder(made)
    assert torch.equal(made(torch.ones(1, 2, 5, 5)), nn.functional.conv2d(torch.ones(1, 2, 5, 5), made.weight,
                                                                         padding=1))


def test_what_a_layout_does_not_replay() -> None:
    assert layout_of(nn.Conv2d(2, 2, 1).__dict__) is None  # parameters, unless asked for
    assert layout_of(nn.BatchNorm2d(2).__dict__, parameters=True) is None  # buffers
    odd = nn.Module()
    odd.note = [torch.zeros(1)]
    assert layout_of(odd.__dict__) is None  # a list of tensors
    odd = nn.Module()
    odd.__dict__["packed"] = torch.zeros(1)
    assert layout_of(odd.__dict__) is None
    assert layout_of(odd.__dict__, slot=("packed", torch.Tensor)) is not None  # the slot, replayed as None
    assert _replayed(odd, slot=("packed", torch.Tensor)).__dict__["packed"] is None


def test_children_are_replayed_from_their_own_layouts() -> None:
    built = nn.Sequential(nn.ReLU(), nn.Flatten())
    made = _replayed(built)
    assert [type(m) for m in made] == [nn.ReLU, nn.Flatten]
    assert made[0] is not built[0] and made[1].__dict__ == built[1].__dict__


def test_buffers_replay_as_fresh_scalars_and_placeholders() -> None:
    built = nn.BatchNorm2d(4)
    made = _replayed(built, parameters=True, buffers=True)
    assert list(made._buffers) == ["running_mean", "running_var", "num_batches_tracked"]
    assert made.running_mean is PLACEHOLDER and made.running_var is PLACEHOLDER
    assert torch.equal(made.num_batches_tracked, built.num_batches_tracked)
    assert made.num_batches_tracked is not built.num_batches_tracked
    assert holds_placeholder(made)
