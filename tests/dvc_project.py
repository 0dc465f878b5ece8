"""Shared helpers of the end-to-end tests: a tiny copy of the project in a temp git repo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("qsenn_core", "stages", "dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore",
                 ".gitignore")
GIT_ID = ["-c", "user.name=t", "-c", "user.email=t@t"]


def tiny_params(params: dict) -> dict:
    """The default params shrunk so that the whole pipeline runs in a few minutes on 2 cores."""
    params["synth"].update(n_classes=12, image_size=32, train_per_class=10, test_per_class=4)
    params["data"]["image_size"] = 32
    params["model"]["width"] = 32
    params["train"].update(epochs=2, batch_size=32, lr_backbone=0.01, lr_head=0.01, lr_step=1)
    params["select"]["n_features"] = 8
    params["sparse"]["n_lambdas"] = 6
    params["quant"]["n_per_class"] = 3
    params["finetune"]["batch_size"] = 32
    params["iterations"] = {"1": {"prev": "dense", "epochs": 1},
                            "2": {"prev": "iter_1", "epochs": 1}}
    params["final"] = "iter_2"
    return params


def tool_env(**extra: str) -> dict[str, str]:
    """The environment of the tools: the venv first on PATH (stages call `python`), 1 thread."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` in ``cwd``; fail the test with the output's tail when it exits non-zero."""
    proc = subprocess.run(cmd, cwd=cwd, env=env or tool_env(), capture_output=True, text=True,
                          check=False)
    tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{tail}"
    return proc.stdout + proc.stderr


def git(cwd: Path, *args: str) -> str:
    """Run git with a fixed identity."""
    return run(["git", *GIT_ID, *args], cwd)


def commit_all(cwd: Path, message: str) -> None:
    """Stage everything and commit (the temp repo holds nothing but the tiny project)."""
    git(cwd, "add", "-A")
    git(cwd, "commit", "-qm", message)


def ran_stages(output: str) -> list[str]:
    """The stages that `dvc repro` / `dvc exp run` ran (not those restored from the run-cache)."""
    return re.findall(r"Running stage '([^']+)'", output)


def make_tiny_project(root: Path) -> Path:
    """Copy the project's pipeline files into ``root`` with tiny params, as a fresh git repo."""
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    params = tiny_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], root)
    commit_all(root, "init")
    return root


def copy_project(src: Path, dst: Path) -> Path:
    """Copy a project with its git history and DVC cache (not DVC's temp state) to ``dst``."""
    shutil.copytree(src, dst, symlinks=True,
                    ignore=lambda d, names: ["tmp"] if Path(d).name == ".dvc" else [])
    return dst


@dataclass(frozen=True)
class Reproduced:
    """A tiny project after one `dvc repro` from scratch, committed (dvc.lock, metrics, logs)."""

    root: Path
    output: str  # what that first `dvc repro` printed
