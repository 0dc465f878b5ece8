"""Which files of ``qsenn_core`` each stage script imports, as DVC must list them in ``deps``.

The closure follows every ``import qsenn_core...`` / ``from qsenn_core... import`` statement of a
file (module level or inside a function: a lazy import is still code the stage runs), adds the
``__init__.py`` of every package on the way, and the data files a module reads
(:data:`DATA_FILES`). ``python tests/stage_imports.py --write`` puts these lists into
``dvc.yaml``; ``tests/test_stage_deps.py`` fails while they differ.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "qsenn_core"

#: Files that a module reads at run time besides Python code (paths relative to the repo).
DATA_FILES: dict[str, tuple[str, ...]] = {
    "qsenn_core/clip_model.py": ("qsenn_core/clip_configs",),
}


def _module_file(name: str, root: Path) -> Path | None:
    """The file of module ``name`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), if it exists."""
    base = root.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path) -> set[str]:
    """Names of the ``qsenn_core`` modules ``path`` imports (``from a import b`` gives ``a`` and,
    when ``b`` is a submodule, ``a.b``); imports under ``if TYPE_CHECKING:`` do not run."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


def import_closure(script: Path, root: Path = REPO) -> set[str]:
    """Repo-relative paths of every ``qsenn_core`` file (and data folder) ``script`` needs."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        for name in imported_modules(path):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # each parent package's __init__ runs first
                found = _module_file(".".join(parts[:depth]), root)
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append(found)
    files = {p.relative_to(root).as_posix() for p in seen}
    for module, extra in DATA_FILES.items():
        if module in files:
            files.update(extra)
    return files


def stage_code_deps(script: str, root: Path = REPO) -> list[str]:
    """The code deps of the stage whose command runs ``script`` (``stages/x.py``), sorted."""
    return [script, *sorted(import_closure(root / script, root))]


def stage_scripts(dvc_yaml: dict) -> dict[str, str]:
    """Stage name (``foreach`` stages once) -> the ``stages/*.py`` script its command runs."""
    scripts = {}
    for name, stage in dvc_yaml["stages"].items():
        cmd = stage.get("do", stage)["cmd"]
        found = re.search(r"\b(stages/\w+\.py)\b", cmd)
        if found:
            scripts[name] = found.group(1)
    return scripts


def _is_code(dep: str) -> bool:
    return dep == PACKAGE or dep.startswith((PACKAGE + "/", "stages/"))


def sync_dvc_yaml(text: str, root: Path = REPO) -> str:
    """``dvc.yaml`` with every stage's code deps replaced by its import closure.

    Only the ``- qsenn_core...`` / ``- stages/...`` lines of each ``deps:`` list change (they
    come first in the list); comments, order and every other line stay as they are.
    """
    scripts = stage_scripts(yaml.safe_load(text))
    out: list[str] = []
    stage = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        top = re.match(r"^  (\w+):\s*$", line)
        if top:
            stage = top.group(1)
        out.append(line)
        i += 1
        deps = re.match(r"^(\s+)deps:\s*$", line)
        if deps and stage in scripts:
            indent = deps.group(1) + "  "
            while i < len(lines) and re.match(rf"^{indent}- (\S+)\s*$", lines[i]) and _is_code(
                    lines[i].split("- ", 1)[1].strip()):
                i += 1
            out.extend(f"{indent}- {dep}" for dep in stage_code_deps(scripts[stage], root))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    # python tests/stage_imports.py           print each stage's code deps
    # python tests/stage_imports.py --write   rewrite them in dvc.yaml (then check `git diff`)
    dvc_file = REPO / "dvc.yaml"
    if "--write" in sys.argv[1:]:
        dvc_file.write_text(sync_dvc_yaml(dvc_file.read_text()))
        sys.exit(0)
    for stage_name, script in stage_scripts(yaml.safe_load(dvc_file.read_text())).items():
        print(f"# {stage_name}")
        for dep in stage_code_deps(script):
            print(f"      - {dep}")
