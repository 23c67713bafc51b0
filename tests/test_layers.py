"""Imports only go downward through the layers, and there are no cycles."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "gausslift"

# module (top-level name inside gausslift) -> layer; base utilities are layer 0
LAYERS = {
    "errors": 0,
    "config": 0,
    "ioutil": 0,
    "_version": 0,
    "progress": 0,
    "cameras": 1,
    "splats": 1,
    "render": 1,
    "metrics": 1,
    "subjects": 1,
    "train": 1,
    "scene": 2,
    "viz": 2,
    "meshrender": 2,
    "framing": 2,
    "io": 3,
    "checks": 3,
    "fit": 3,
    "models": 3,
    "preprocess": 4,
    "synth": 4,
    "lrm": 4,
    "mvdiff": 4,
    "avatar": 4,
    "lift": 5,
    "cli": 6,
    "__main__": 7,
}


def _unit(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            yield None  # relative imports are not used in this package
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in PKG.rglob("*.py")} - {"__init__"}
    missing = sorted(u for u in units if u not in LAYERS)
    assert not missing, f"modules without a layer in tests/test_layers.py: {missing}"


def test_imports_go_downward_only():
    bad = []
    for path in PKG.rglob("*.py"):
        unit = _unit(path)
        if unit == "__init__":
            continue
        for mod in _imports(path):
            assert mod is not None, f"{path}: use absolute imports"
            if not mod.startswith("gausslift.") or mod == "gausslift":
                continue
            target = mod.split(".")[1]
            if target == unit:
                continue
            if LAYERS.get(target, 99) >= LAYERS[unit] and LAYERS.get(target) != 0:
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert not bad, "imports that do not go downward:\n" + "\n".join(bad)
