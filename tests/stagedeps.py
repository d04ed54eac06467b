"""The code each DVC stage runs, derived from its imports, and the ``deps`` that ``dvc.yaml`` should
list for it.

A stage's code is its script (``stages/<name>.py`` or ``python -m <module>``) and every
``attendome`` module it imports, directly or through other modules, at module level or inside
functions (an import inside a function still runs when the stage calls it), plus the package
``__init__`` files those imports execute. ``dvc.yaml`` lists that code as files, or as a whole
subpackage folder where the stage runs every module of it.

``python -m tests.stagedeps`` prints each stage's expected code deps (use them when a stage's
imports change); ``tests/unit/test_stage_deps.py`` fails when ``dvc.yaml`` disagrees.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "attendome"


def modules(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the package."""
    out = {}
    for p in (root / "attendome").rglob("*.py"):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(path: Path, mods: dict[str, Path]) -> set[str]:
    """The package modules that ``path`` imports (and the packages whose ``__init__`` that runs)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for n in names:
            if n.split(".")[0] != "attendome":
                continue
            parts = n.split(".")
            for i in range(len(parts), 0, -1):
                cand = ".".join(parts[:i])
                if cand in mods:
                    found.update(".".join(parts[:j]) for j in range(1, i + 1))
                    break
    return found


def closure(script: Path, root: Path = ROOT) -> set[str]:
    """Repository-relative paths of every package file that ``script`` runs (itself excluded)."""
    mods = modules(root)
    seen: set[str] = set()
    todo = list(imports(script, mods))
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += imports(mods[m], mods)
    return {mods[m].relative_to(root).as_posix() for m in seen}


def stage_scripts(root: Path = ROOT) -> dict[str, Path]:
    """``{stage name: the file its command runs}`` for every stage of ``dvc.yaml``."""
    out = {}
    for name, st in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items():
        cmd = st.get("do", st)["cmd"]
        m = re.search(r"python (stages/\S+\.py)", cmd)
        if m:
            out[name] = root / m.group(1)
        else:
            mod = re.search(r"python -m (\S+)", cmd).group(1)
            out[name] = modules(root)[mod]
    return out


def declared_code(name: str, root: Path = ROOT) -> set[str]:
    """The code files a stage's ``deps`` name (folders expanded to their ``.py`` files)."""
    st = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][name]
    out = set()
    for d in st.get("do", st)["deps"]:
        if not (d.startswith("attendome") or d.startswith("stages/")):
            continue
        p = root / d
        out |= {f.relative_to(root).as_posix() for f in p.rglob("*.py")} if p.is_dir() else {d}
    return out


def expected_code(name: str, root: Path = ROOT) -> set[str]:
    """The code files a stage runs: its script and :func:`closure`."""
    script = stage_scripts(root)[name]
    return closure(script, root) | {script.relative_to(root).as_posix()}


def compact(files: set[str], root: Path = ROOT) -> list[str]:
    """``files`` as ``deps`` entries: a subpackage folder where every one of its modules is in ``files``."""
    out, used = [], set()
    for pkg in sorted({Path(f).parent for f in files if f.startswith("attendome/")}):
        if pkg.as_posix() == "attendome":
            continue
        every = {f.relative_to(root).as_posix() for f in (root / pkg).glob("*.py")}
        if every <= files:
            out.append(pkg.as_posix())
            used |= every
    return sorted(out + sorted(files - used), key=lambda s: (not s.startswith("stages/"), s))


if __name__ == "__main__":
    for stage in stage_scripts():
        print(f"{stage}:")
        for d in compact(expected_code(stage)):
            print(f"  - {d}")
