"""Packaging: the repository's package folders install as the single namespace `qfx`.

pyproject.toml lists the packages explicitly (the root folders ir/, passes/, lowering/ are mapped to
qfx.ir, qfx.passes, qfx.lowering), so a package folder missing from the list would silently be left out of
a wheel while still working in an editable install. This test keeps the list and the tree in step.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> tuple[set[str], dict[str, str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(config["packages"]), dict(config.get("package-dir", {}))


def test_every_package_folder_is_declared() -> None:
    packages, package_dir = _declared()
    roots = {"qfx": "qfx", **package_dir}
    found = set()
    for name, folder in roots.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(base).parts
            found.add(".".join((name, *rel)))
    assert found - packages == set(), f"package folders missing from pyproject's packages: {sorted(found - packages)}"
    assert packages - found == set(), f"pyproject lists packages with no folder: {sorted(packages - found)}"


def test_only_qfx_at_the_top() -> None:
    packages, package_dir = _declared()
    assert {p.split(".")[0] for p in packages} == {"qfx"}
    assert all(name.startswith("qfx.") for name in package_dir)
