"""Unit tier: the package layout. Imports only point down (core <- atlas, prep <- clone <- space <- board <- explore,
with the seed API and the stage skeleton on top) and no module imports itself back through others."""

import ast
import graphlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "attendome"
# Layer of each top-level part; a module may import only from its own layer or lower ones.
LAYER = {"core": 0, "atlas": 1, "prep": 1, "clone": 2, "space": 3, "board": 4, "explore": 5, "dataset": 5, "stage": 5,
         "report": 5,
         "__init__": 0}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every ``attendome`` module that ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for n in names:
            if not n.startswith("attendome"):
                continue
            # the longest prefix that is a module of the package
            parts = n.split(".")
            for i in range(len(parts), 0, -1):
                cand = ".".join(parts[:i])
                if cand in modules:
                    if cand != "attendome":
                        found.add(cand)
                    break
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def _layer(mod: str) -> int:
    part = mod.split(".")[1] if "." in mod else "__init__"
    return LAYER[part]


def test_every_part_of_the_package_has_a_layer():
    parts = {m.split(".")[1] for m in _graph() if "." in m}
    assert parts <= set(LAYER), f"new top-level part(s) {parts - set(LAYER)}: give them a layer here"
    assert {"core", "atlas", "prep", "clone", "space", "board", "dataset"} <= parts


def test_imports_point_down():
    bad = [f"{m} -> {d}" for m, deps in _graph().items() for d in deps if _layer(d) > _layer(m)]
    assert not bad, "imports that point up the pipeline:\n" + "\n".join(sorted(bad))


def test_no_import_circle():
    graph = _graph()
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import circle: {' -> '.join(err.args[1])}")


def test_scorer_modules_do_not_import_the_filled_registry_or_the_scoring_loop():
    graph = _graph()
    for mod in ("attendome.atlas.patterns", "attendome.atlas.copying", "attendome.atlas.retrieval",
                "attendome.atlas.registry", "attendome.atlas.rows"):
        assert not graph[mod] & {"attendome.atlas.scorers", "attendome.atlas.score"}, mod


def test_the_checker_finds_a_planted_circle_and_an_upward_import(tmp_path):
    # the checks above must be able to fail: a two-module circle and a core -> space import
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from attendome.space.embed import run_embed\n")
    b.write_text("import attendome.core.io\n")
    mods = {"attendome.core.a": a, "attendome.space.embed": b, "attendome.core.io": b}
    deps = {"attendome.core.a": _imports(a, mods), "attendome.core.io": {"attendome.core.a"}}
    assert deps["attendome.core.a"] == {"attendome.space.embed"}
    assert _layer("attendome.space.embed") > _layer("attendome.core.a")
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter({"x": {"y"}, "y": {"x"}}).static_order())


def test_every_subpackage_says_what_it_owns_and_must_not_import():
    for sub in ("core", "atlas", "prep", "clone", "space", "board", "dataset"):
        doc = ast.get_docstring(ast.parse((PKG / sub / "__init__.py").read_text())) or ""
        assert "Owns" in doc or "owns" in doc or sub == "dataset", sub
        assert "not import" in doc, sub
