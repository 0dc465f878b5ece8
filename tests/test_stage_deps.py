"""Each DVC stage depends on its own script and exactly the ``qsenn_core`` files it imports.

Editing one module must mark stale only the stages that run it: a docstring edit in
``qsenn_core/report.py`` may rerun ``explain``, never ``train_dense``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from stage_imports import REPO, import_closure, stage_code_deps, stage_scripts, sync_dvc_yaml

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _code_deps(stage: dict) -> list[str]:
    deps = stage.get("do", stage).get("deps", [])
    return [d for d in deps if d == "qsenn_core" or d.startswith(("qsenn_core/", "stages/"))]


def test_every_stage_lists_exactly_its_import_closure() -> None:
    scripts = stage_scripts(DVC_YAML)
    assert set(scripts) == set(DVC_YAML["stages"]), "every stage runs a stages/*.py script"
    for name, script in scripts.items():
        listed = _code_deps(DVC_YAML["stages"][name])
        assert "qsenn_core" not in listed, f"{name} lists the whole package"
        expected = stage_code_deps(script)
        missing = sorted(set(expected) - set(listed))
        extra = sorted(set(listed) - set(expected))
        assert not missing and not extra, (
            f"dvc.yaml stage {name}: missing {missing}, not imported {extra}; "
            "run `python tests/stage_imports.py --write`")
    assert sync_dvc_yaml((REPO / "dvc.yaml").read_text()) == (REPO / "dvc.yaml").read_text()


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_closure_follows_lazy_and_package_imports_but_not_type_checking(tmp_path: Path) -> None:
    _write(tmp_path, {
        "stages/s.py": "from qsenn_core.steps import a\n",
        "qsenn_core/__init__.py": "",
        "qsenn_core/steps/__init__.py": "",
        "qsenn_core/steps/a.py": (
            "from typing import TYPE_CHECKING\n"
            "from qsenn_core import b\n"
            "if TYPE_CHECKING:\n    from qsenn_core import typing_only\n"
            "def f():\n    import qsenn_core.c.d\n"),
        "qsenn_core/b.py": "import numpy\n",
        "qsenn_core/c/__init__.py": "",
        "qsenn_core/c/d.py": "from qsenn_core.clip_model import x\n",
        "qsenn_core/clip_model.py": "",
        "qsenn_core/typing_only.py": "",
        "qsenn_core/unused.py": "",
    })
    assert import_closure(tmp_path / "stages/s.py", tmp_path) == {
        "qsenn_core/__init__.py", "qsenn_core/steps/__init__.py", "qsenn_core/steps/a.py",
        "qsenn_core/b.py", "qsenn_core/c/__init__.py", "qsenn_core/c/d.py",
        "qsenn_core/clip_model.py", "qsenn_core/clip_configs",
    }


def _stage_instances() -> dict[str, str]:
    """``dvc status`` stage names (``solve@1`` for foreach stages) -> the script they run."""
    out = {}
    for name, script in stage_scripts(DVC_YAML).items():
        if "foreach" in DVC_YAML["stages"][name]:
            out.update({f"{name}@{key}": script for key in PARAMS["iterations"]})
        else:
            out[name] = script
    return out


def _changed_code(root: Path) -> dict[str, set[str]]:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        status = repo.status()
    changed: dict[str, set[str]] = {}
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, dict):
                for dep in entry.get("changed deps", {}):
                    if dep.startswith(("qsenn_core/", "stages/")):
                        changed.setdefault(stage.split(":")[-1], set()).add(dep)
    return changed


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DVC project's code, params and lock in a fresh git repo (no data, no cache)."""
    root = tmp_path_factory.mktemp("stage_deps")
    for name in ("dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    (root / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("stages", "qsenn_core"):
        shutil.copytree(REPO / folder, root / folder, ignore=ignore)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


@pytest.mark.slow
def test_lock_matches_the_code(project_copy: Path) -> None:
    """dvc.lock records the code every stage last ran with (after a code change: rerun the
    stages, or `dvc commit` them when the change cannot alter outputs)."""
    assert _changed_code(project_copy) == {}


@pytest.mark.slow
def test_editing_a_module_marks_only_the_stages_that_import_it(project_copy: Path) -> None:
    if _changed_code(project_copy):
        pytest.fail("dvc.lock is out of date with the code (see test_lock_matches_the_code)")
    instances = _stage_instances()
    closures = {script: set(stage_code_deps(script)) for script in set(instances.values())}
    files = sorted(p.relative_to(project_copy).as_posix()
                   for folder in ("qsenn_core", "stages")
                   for p in (project_copy / folder).rglob("*.py"))
    imported_somewhere = set().union(*closures.values())
    for rel in files:
        path = project_copy / rel
        original = path.read_bytes()
        path.write_bytes(original + b"\n# an edit that changes no behaviour\n")
        try:
            stale = {stage for stage, deps in _changed_code(project_copy).items() if rel in deps}
        finally:
            path.write_bytes(original)
        expected = {stage for stage, script in instances.items() if rel in closures[script]}
        assert stale == expected, rel
        if rel not in imported_somewhere:
            assert stale == set(), f"{rel} is imported by no stage, yet marks {stale} stale"
