"""The package's shape: import-linter's contracts (pyproject.toml) name every module."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_is_under_an_import_contract():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    named = set()
    for contract in contracts:
        prefix = contract.get("containers", [""])[0]
        for entry in contract.get("source_modules", []) + contract.get("layers", []):
            for name in re.split(r"\s*\|\s*", entry):
                named.add(f"{prefix}.{name}" if prefix else name)
    package = ROOT / "napari_labelreg"
    modules = {".".join(("napari_labelreg", *p.relative_to(package).with_suffix("").parts))
               for p in package.rglob("*.py")}
    modules = {m.removesuffix(".__init__") for m in modules} - {"napari_labelreg"}  # the empty root __init__
    uncovered = sorted(m for m in modules if not any(m == n or m.startswith(n + ".") for n in named))
    assert not uncovered, f"modules no import-linter contract names: {uncovered}"
    assert (package / "__init__.py").read_text().strip().startswith('"""')  # the root stays import-free
    assert not re.search(r"^\s*(import|from)\s", (package / "__init__.py").read_text(), re.M)
