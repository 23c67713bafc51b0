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
    "stages": 0,
    "cameras": 1,
    "splats": 1,
    "binding": 1,
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
    "track": 4,
    "stylize": 4,
    "idfield": 4,
    "lift": 5,
    "video4d": 5,
    "zoo": 5,
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


# --------------------------------------------------------------------------------------------------
# import cycles between modules (every import statement counts, at module level or inside a function)
def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The gausslift module that importing ``name`` loads (the longest existing prefix), else None."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = PKG) -> dict[str, set[str]]:
    """module -> the gausslift modules it imports. ``from pkg import x`` is an edge to ``pkg.x`` when
    that is a module, else to ``pkg`` (its ``__init__``)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    modules = set(files)
    graph = {}
    for mod, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                if t == "gausslift" or t.startswith("gausslift."):
                    target = _resolve(t, modules)
                    if target is not None and target != mod:
                        deps.add(target)
        graph[mod] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles (function-level imports included):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_cycle_finder_sees_function_level_imports(tmp_path):
    """The finder itself: a cycle closed by an import inside a function is found, the package
    ``__init__`` re-exporting its submodules is not one, and a one-way import is not either."""
    pkg = tmp_path / "gausslift"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from gausslift.sub.a import f\n")
    (pkg / "sub" / "a.py").write_text("from gausslift.sub import b\n\ndef f():\n    return b.g()\n")
    (pkg / "sub" / "b.py").write_text("def g():\n    from gausslift.sub.a import f\n    return f\n")
    (pkg / "c.py").write_text("import gausslift.sub.b\nfrom gausslift.sub import f\n")
    graph = import_graph(pkg)
    assert graph["gausslift.sub"] == {"gausslift.sub.a"}
    assert graph["gausslift.c"] == {"gausslift.sub.b", "gausslift.sub"}
    assert import_cycles(graph) == [["gausslift.sub.a", "gausslift.sub.b"]]
    (pkg / "sub" / "b.py").write_text("def g():\n    return 1\n")
    assert import_cycles(import_graph(pkg)) == []
