"""cleanup's module work: leftovers removed as torch's `_remove_qconfig` removes them, on copies, and cleaned
children relinked under their own paths as one walk per entry would relink them."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.ao.quantization import MinMaxObserver, default_qconfig
from torch.ao.quantization.quantize import _observer_forward_hook, _observer_forward_pre_hook, _remove_qconfig

from qfx.passes.cleanup import _Descendants, _kept_without_leftovers, without_quantization_leftovers
from qfx.testing.strategies import examples
from tests.support.snapshot import assert_unchanged, snapshot

# One tree: per module, its kind, its leftovers and its children (indices of later modules, so no cycles;
# an index used twice is a shared module).
_KINDS = ("module", "linear", "sequential")
_LEFTOVERS = ("qconfig", "observer_child", "observer_attribute", "hook", "pre_hook", "other_hook")


def _noop_hook(*args: Any) -> None:
    return None


@st.composite
def module_trees(draw: Any) -> nn.Module:
    count = draw(st.integers(1, 9))
    kinds = draw(st.lists(st.sampled_from(_KINDS), min_size=count, max_size=count))
    modules: list[nn.Module] = [nn.Linear(2, 2) if k == "linear" else nn.Sequential() if k == "sequential"
                                else nn.Module() for k in kinds]
    for i in reversed(range(count)):
        module = modules[i]
        leftovers = draw(st.sets(st.sampled_from(_LEFTOVERS), max_size=3))
        # (an observer both as child and as plain attribute loses one per path torch reaches it by)
        leftovers.discard("observer_attribute" if "observer_child" in leftovers else None)
        for leftover in leftovers:
            if leftover == "qconfig":
                module.qconfig = default_qconfig
            elif leftover == "observer_child":
                module.activation_post_process = MinMaxObserver()
            elif leftover == "observer_attribute":
                module.__dict__["activation_post_process"] = MinMaxObserver()
            elif leftover == "hook":
                module.register_forward_hook(_observer_forward_hook)
            elif leftover == "pre_hook":
                module.register_forward_pre_hook(_observer_forward_pre_hook)
            else:
                module.register_forward_hook(_noop_hook)
        later = list(range(i + 1, count))
        if later:
            for j, child in enumerate(draw(st.lists(st.sampled_from(later), max_size=3))):
                module.add_module(f"c{j}", modules[child])
            if draw(st.booleans()):
                module.add_module("empty", None)
    return modules[0]


def _shape(root: nn.Module) -> list[tuple]:
    """Per path (duplicates kept): class, qconfig presence, observer presence, hook functions, and which
    earlier path holds the same object."""
    first: dict[int, str] = {}
    out = []
    for path, m in root.named_modules(remove_duplicate=False):
        observer = "activation_post_process" in m._modules or "activation_post_process" in m.__dict__
        out.append((path, type(m), "qconfig" in m.__dict__, observer,
                    tuple(m._forward_hooks.values()), tuple(m._forward_pre_hooks.values()),
                    first.setdefault(id(m), path)))
    return out


@settings(max_examples=examples(150), deadline=None)
@given(module_trees())
def test_leftovers_are_removed_as_torch_removes_them(root: nn.Module) -> None:
    before = snapshot(root)
    shape_before = _shape(root)
    clean = without_quantization_leftovers(root, {})
    expected = copy.deepcopy(root)
    _remove_qconfig(expected)
    assert _shape(clean) == [(path, *rest) for path, *rest in _shape(expected)]
    # the input tree is untouched, and every subtree without leftovers is shared, not copied
    assert_unchanged(before, root)
    assert _shape(root) == shape_before
    originals = dict(root.named_modules(remove_duplicate=False))
    for path, m in clean.named_modules(remove_duplicate=False):
        if _shape(originals[path]) == _shape(m):
            assert m is originals[path]
        else:
            assert m is not originals[path]
        # tensors are shared either way
        for name, p in m._parameters.items():
            assert p is originals[path]._parameters[name]


def _kept_by_definition(table: dict[str, nn.Module], targets: set[str]) -> dict[str, nn.Module]:
    """The definition: the entries that are a target or lie below a module target, each cleaned, then every
    kept entry, shallowest first, relinks everything in its tree."""
    roots = targets & set(table)
    memo: dict[int, nn.Module] = {}
    out = {p: without_quantization_leftovers(m, memo) for p, m in table.items()
           if p in targets or any(p.startswith(f"{root}.") for root in roots)}
    for path in sorted(out, key=lambda p: p.count(".")):
        for sub, child in out[path].named_modules(remove_duplicate=False):
            if sub and f"{path}.{sub}" in out:
                out[f"{path}.{sub}"] = child
    return out


@settings(max_examples=examples(150), deadline=None)
@given(module_trees(), st.data())
def test_kept_entries_are_cleaned_and_relinked_as_one_walk_per_entry(root: nn.Module, data: Any) -> None:
    tree = dict(root.named_modules(remove_duplicate=False))
    paths = [p for p in tree if p]
    chosen = data.draw(st.lists(st.sampled_from(paths), unique=True)) if paths else []
    # entries as cleanup is given them: some the tree's own object, some a stray object at that path
    table = {p: nn.Module() if data.draw(st.booleans()) else tree[p] for p in chosen}
    targets = set(data.draw(st.lists(st.sampled_from(paths + ["x", "x.y"]), max_size=4)))
    kept = _kept_without_leftovers(table, targets, {})
    expected = _kept_by_definition(table, targets)
    assert _identities(kept, table, tree) == _identities(expected, table, tree)
    assert [_shape(m) for m in kept.values()] == [_shape(m) for m in expected.values()]


def _identities(kept: dict[str, nn.Module], table: dict[str, nn.Module], tree: dict[str, nn.Module]) -> list:
    """Per kept path: the input object it is (by its path in the table or tree), or else the first kept path
    holding the same copy."""
    originals = {id(m): f"table:{p}" for p, m in table.items()} | {id(m): f"tree:{p}" for p, m in tree.items()}
    first: dict[int, str] = {}
    return [(p, originals.get(id(m)) or first.setdefault(id(m), p)) for p, m in kept.items()]


def test_a_deep_chain_is_looked_at_once_per_module() -> None:
    # 300 nested modules, the leftover at the bottom: every level is copied once, none is searched again
    chain = [nn.Module() for _ in range(300)]
    for parent, child in zip(chain, chain[1:]):
        parent.add_module("child", child)
    chain[-1].qconfig = default_qconfig
    calls = []
    real_items = dict.items

    class CountingDict(dict):
        def items(self):  # type: ignore[override]
            calls.append(1)
            return real_items(self)

    for m in chain:
        m.__dict__["_modules"] = CountingDict(m._modules)
    clean = without_quantization_leftovers(chain[0], {})
    assert len(calls) <= 2 * len(chain)
    node = clean
    for _ in range(299):
        node = node.child
    assert "qconfig" not in node.__dict__ and "qconfig" in chain[-1].__dict__


_ATOMS = ("a", "b", "0", "1")


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(st.lists(st.sampled_from(_ATOMS), min_size=1, max_size=5).map(".".join), max_size=30),
       st.lists(st.lists(st.sampled_from(_ATOMS), min_size=1, max_size=4).map(".".join), max_size=5))
def test_descendants_are_the_paths_with_a_root_as_a_strict_prefix(paths: list[str], roots: list[str]) -> None:
    below = _Descendants(set(roots)).holds
    for path in paths:  # (asked in any order, answers kept across questions)
        atoms = path.split(".")
        assert below(path) == any(".".join(atoms[:i]) in roots for i in range(1, len(atoms))), path
