"""End-to-end: the real dvc.yaml under `dvc repro` / `dvc exp run` on a tiny copy of the project."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("qsenn_core", "stages", "dvc.yaml", "params.yaml", ".dvc/config", ".dvcignore",
                 ".gitignore")

pytestmark = pytest.mark.slow


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


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{tail}"
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / name)
    params = tiny_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], root)
    return root


def test_repro_from_scratch_writes_every_output(project: Path) -> None:
    out = run(["dvc", "repro"], project)
    stages = ran_stages(out)
    for stage in ("prepare_data", "train_dense", "extract_dense", "select_features", "glm5",
                  "solve@1", "quantize@1", "finetune@1", "extract@1", "solve@2", "finetune@2",
                  "evaluate_dense", "evaluate_glm5", "evaluate@1", "evaluate@2", "summarize",
                  "explain"):
        assert stage in stages
    # the chain follows params: iteration 2 starts from iteration 1's features and model
    assert stages.index("extract@1") < stages.index("solve@2")
    for path in ("models/dense.pt", "models/iter_2.pt", "features/iter_2.parquet",
                 "sparse/iter_2/layer.pt", "sparse/selection.json", "logs/dense.tsv",
                 "reports/index.html", "reports/assignment.png"):
        assert (project / path).is_file(), path
    final = json.loads((project / "metrics/final.json").read_text())
    assert final == json.loads((project / "metrics/iter_2.json").read_text())
    for key in ("accuracy", "n_features", "features_per_class", "diversity_at_5", "dependence",
                "alignment_r", "binary_features", "binary_features_strict", "correlation_at_5",
                "assignments_changed"):
        assert key in final, key
    assert final["features_per_class"] == pytest.approx(3.0)  # n_per_class of the tiny params
    selection = json.loads((project / "sparse/selection.json").read_text())["order"]
    assert len(selection) == len(set(selection)) == 8


def test_second_repro_runs_nothing(project: Path) -> None:
    out = run(["dvc", "repro"], project)
    assert ran_stages(out) == []
    assert "up to date" in run(["dvc", "status"], project)


def test_exp_run_adding_an_iteration_runs_only_new_stages(project: Path) -> None:
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "repro"], project)
    out = run(["dvc", "exp", "run", "-S", "+iterations.3={prev: iter_2, epochs: 1}",
               "-S", "final=iter_3"], project)
    # the new iteration's stages, and what depends on the final model
    assert sorted(ran_stages(out)) == sorted(["solve@3", "quantize@3", "finetune@3", "extract@3",
                                              "evaluate@3", "summarize", "explain"])
    final = json.loads((project / "metrics/final.json").read_text())
    assert final == json.loads((project / "metrics/iter_3.json").read_text())
    shown = run(["dvc", "exp", "show", "--no-pager", "--csv"], project)
    assert "iterations.3.prev" in shown or "iter_3" in shown
