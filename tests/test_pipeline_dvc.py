"""End-to-end: the real dvc.yaml under `dvc repro` / `dvc exp run` on a tiny copy of the project."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dvc_project import Reproduced, copy_project, git, ran_stages, run, tool_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(reproduced: Reproduced, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's copy of the session's reproduced tiny project (its tests run in order)."""
    return copy_project(reproduced.root, tmp_path_factory.mktemp("pipeline") / "project")


@pytest.fixture
def fresh(reproduced: Reproduced, tmp_path: Path) -> Path:
    """A copy of the reproduced tiny project of one's own."""
    return copy_project(reproduced.root, tmp_path / "project")


def test_repro_from_scratch_writes_every_output(reproduced: Reproduced, project: Path) -> None:
    stages = ran_stages(reproduced.output)
    for stage in ("prepare_data", "index_data", "train_dense", "extract_dense", "select_features",
                  "glm5",
                  "solve@1", "quantize@1", "finetune@1", "extract@1", "solve@2", "finetune@2",
                  "evaluate_dense", "evaluate_glm5", "evaluate@1", "evaluate@2", "summarize",
                  "explain"):
        assert stage in stages
    # the chain follows params: iteration 2 starts from iteration 1's features and model
    assert stages.index("extract@1") < stages.index("solve@2")
    for path in ("models/dense.pt", "models/iter_2.pt", "features/iter_2.parquet",
                 "sparse/iter_2/layer.pt", "sparse/selection.json", "logs/dense/metrics.json",
                 "reports/explain/index.html", "reports/explain/assignment.png",
                 "reports/alignment.csv", "models/clip.pt", "features/clip.parquet",
                 "reports/figure_6a.png", "metrics/alignment.json"):
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


def test_plots_show_renders_training_curves_and_regularization_path(project: Path) -> None:
    shown = json.loads(run(["dvc", "plots", "show", "--json"], project))
    assert not shown.get("errors"), shown["errors"]
    plots = shown["data"]
    # DVCLive's curves: the dense model's train and test accuracy in one plot, every epoch ...
    values = plots["Dense training accuracy"][0]["content"]["data"]["values"]
    fields = [v["filename::field"].split("::")[1] for v in values]
    assert fields.count("train_accuracy") == fields.count("test_accuracy") == 2
    assert [int(v["step"]) for v in values if "test_accuracy" in v] == [1, 2]
    # ... and one plot per reading of every training stage, x = step = epoch
    for name, epochs in (("dense", 2), ("iter_1", 1), ("iter_2", 1)):
        for reading in ("train_loss", "train_fdl", "train_accuracy", "test_accuracy", "lr"):
            plot_id = f"logs/{name}/plots/metrics/{reading}.tsv"
            values = plots[plot_id][0]["content"]["data"]["values"]
            assert [int(v["step"]) for v in values] == list(range(1, epochs + 1)), plot_id
    # the regularization path: accuracy against nonzeros of the final iteration and of glm5
    values = plots["Regularization path"][0]["content"]["data"]["values"]
    assert {v["filename"] for v in values} == {"iter_2/path.csv", "glm5/path.csv"}
    nonzeros = [int(v["nonzeros"]) for v in values if v["filename"] == "iter_2/path.csv"]
    assert nonzeros[0] == 0 and max(nonzeros) > 0  # the path starts at lambda_max: all zero
    assert all("val_accuracy" in v for v in values)


def test_exp_run_adding_an_iteration_runs_only_new_stages(project: Path) -> None:
    out = run(["dvc", "exp", "run", "-S", "+iterations.3={prev: iter_2, epochs: 1}",
               "-S", "final=iter_3"], project)
    # the new iteration's stages, what depends on the final model (align reads its features),
    # and check_params, which validates every params change first
    assert sorted(ran_stages(out)) == sorted(["check_params", "solve@3", "quantize@3",
                                              "finetune@3", "extract@3", "evaluate@3",
                                              "summarize", "align", "explain", "atlas"])
    assert ran_stages(out)[0] == "check_params"
    final = json.loads((project / "metrics/final.json").read_text())
    assert final == json.loads((project / "metrics/iter_3.json").read_text())
    shown = run(["dvc", "exp", "show", "--no-pager", "--csv"], project)
    assert "iterations.3.prev" in shown or "iter_3" in shown


def exp_show(root: Path) -> list[dict]:
    """`dvc exp show --json`, parsed."""
    return json.loads(run(["dvc", "exp", "show", "--json", "--no-pager"], root))


def exp_records(shown: list[dict]) -> dict[str, dict]:
    """name (or short rev) -> data of the workspace, the baseline commit and every experiment."""
    records: dict[str, dict] = {}
    for row in shown:
        records[row.get("name") or row["rev"][:7]] = row["data"]
        for exp in row.get("experiments") or []:
            for rev in exp["revs"]:
                records[rev.get("name") or rev["rev"][:7]] = rev["data"]
    return records


def final_metrics(data: dict) -> dict:
    return data["metrics"]["metrics/final.json"]["data"]


def test_exp_run_without_quantization_reruns_only_affected_stages(fresh: Path) -> None:
    out = run(["dvc", "exp", "run", "-n", "no-quant", "-S", "quant.enabled=false"], fresh)
    ran = set(ran_stages(out))
    # quantize reads `quant`; everything downstream of a sparse layer reruns ...
    assert {"quantize@1", "finetune@1", "extract@1", "evaluate@1", "solve@2", "quantize@2",
            "finetune@2", "extract@2", "evaluate@2", "summarize", "explain"} <= ran
    # ... and nothing upstream of it: data, dense model, selection, solve@1 (dense features),
    # the glm5 baseline and what depends only on those
    assert not ran & {"prepare_data", "index_data", "train_dense", "extract_dense",
                      "select_features", "glm5",
                      "solve@1", "evaluate_dense", "evaluate_glm5", "clip_pretrain",
                      "clip_embed"}, ran
    records = exp_records(exp_show(fresh))
    assert {"main", "no-quant"} <= records.keys()
    base, ablation = records["main"], records["no-quant"]
    assert base["params"]["params.yaml"]["data"]["quant"]["enabled"] is True
    assert ablation["params"]["params.yaml"]["data"]["quant"]["enabled"] is False
    assert final_metrics(ablation) == json.loads((fresh / "metrics/final.json").read_text())
    assert final_metrics(base) == json.loads(git(fresh, "show", "HEAD:metrics/final.json"))
    # the ablation's quantize metrics say it kept float weights: they differ from W^Q's
    assert (ablation["metrics"]["metrics/quantize_iter_1.json"]["data"]
            != base["metrics"]["metrics/quantize_iter_1.json"]["data"])
    # the comparison command runs `dvc exp show --json` itself
    run(["python", "-m", "qsenn_core.compare", "--csv", "table.csv"], fresh)
    rows = {r["experiment"]: r for r in csv.DictReader((fresh / "table.csv").open())}
    assert rows.keys() == {"main", "no-quant"}
    assert rows["no-quant"]["changes"] == "quant.enabled=False"
    assert float(rows["no-quant"]["accuracy"]) == final_metrics(ablation)["accuracy"]
    # the top-level plots render both experiments side by side
    plots = json.loads(run(["dvc", "plots", "diff", "main", "no-quant", "--json"], fresh))["data"]
    for plot_id in ("Regularization path", "logs/iter_2/plots/metrics/test_accuracy.tsv"):
        assert sorted(plots[plot_id][0]["revisions"]) == ["main", "no-quant"], plot_id


def wait_for_queue(root: Path, timeout: float) -> str:
    """Poll `dvc queue status` until no task is queued or running; return the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = run(["dvc", "queue", "status"], root)
        if not any(word in status for word in ("Queued", "Running")):
            return status
        assert time.monotonic() < deadline, f"queue still busy after {timeout:.0f} s:\n{status}"
        time.sleep(3)


def test_queued_sweep_runs_in_parallel_and_finishes(fresh: Path) -> None:
    # a cheap sweep (only `explain` reruns) so that the queue, not the stages, is under test
    for n in (2, 3):
        out = run(["dvc", "exp", "run", "--queue", "-n", f"explain-{n}",
                   "-S", f"explain.n_images={n}"], fresh)
        assert "Queued experiment" in out
    assert run(["dvc", "queue", "status"], fresh).count("Queued") == 2
    run(["dvc", "queue", "start", "-j", "2"], fresh)
    status = wait_for_queue(fresh, timeout=600)
    assert status.count("Success") == 2, status
    records = exp_records(exp_show(fresh))
    baseline = final_metrics(records["main"])
    for n in (2, 3):
        data = records[f"explain-{n}"]
        assert data["params"]["params.yaml"]["data"]["explain"]["n_images"] == n
        assert final_metrics(data) == baseline  # explain changes no metric


def test_killed_stage_leaves_no_stale_output_and_reruns_cleanly(fresh: Path) -> None:
    # enough epochs that the run is still going when the kill arrives, even on an idle machine
    # where a tiny epoch takes a fraction of a second
    epochs = 60
    params = yaml.safe_load((fresh / "params.yaml").read_text())
    params["train"]["epochs"] = epochs
    (fresh / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    outs = ("models/dense.pt",)
    # a terminal's foreground job gets Ctrl-C with the default disposition; a test run started in
    # the background of a non-interactive shell inherits SIGINT ignored, so reset it before exec
    with_default_sigint = [sys.executable, "-c", "import os, signal, sys; "
                           "signal.signal(signal.SIGINT, signal.SIG_DFL); "
                           "os.execvp(sys.argv[1], sys.argv[1:])"]
    proc = subprocess.Popen([*with_default_sigint, "dvc", "repro", "train_dense"], cwd=fresh,
                            env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        # kill it once the stage has finished an epoch (its resume checkpoint exists)
        deadline = time.monotonic() + 300
        while not list((fresh / ".qsenn_scratch").glob("train_dense/*/resume.pt")):
            assert proc.poll() is None, "dvc repro ended before it was killed"
            assert time.monotonic() < deadline, "train_dense wrote no resume checkpoint"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, output
    assert "Running stage 'train_dense'" in output
    for path in outs:  # the outputs are gone: DVC removed them and the stage never renamed one in
        assert not (fresh / path).exists(), f"{path} left behind by the killed stage"
    # the DVCLive log is written live (dvc exp show reads it during a run): finished epochs only
    live = json.loads((fresh / "logs/dense/metrics.json").read_text())
    assert 1 <= live["step"] < epochs and "epochs" not in live
    leftovers = [p.name for d in ("models", "logs", "metrics") for p in (fresh / d).iterdir()
                 if p.name.endswith(".tmp")]  # atomic writes' temporaries
    assert leftovers == [], leftovers
    assert "train_dense" in run(["dvc", "status", "train_dense"], fresh)

    out = run(["dvc", "repro", "train_dense"], fresh)
    assert ran_stages(out) == ["train_dense"]
    assert "resuming from epoch" in out
    assert "up to date" in run(["dvc", "status", "train_dense"], fresh)
    curve = (fresh / "logs/dense/plots/metrics/test_accuracy.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in curve[1:]] == [str(e) for e in range(1, epochs + 1)]
    summary = json.loads((fresh / "logs/dense/metrics.json").read_text())
    assert summary["epochs"] == summary["step"] == epochs
    assert not list((fresh / ".qsenn_scratch").glob("train_dense/*/resume.pt"))


def test_bad_param_stops_in_check_params_before_any_training(fresh: Path) -> None:
    """A wrong value stops `dvc exp run` in the first stage, even when the same run changes a
    training param too (train_dense would otherwise run first)."""
    dense = (fresh / "models/dense.pt").read_bytes()
    proc = subprocess.run(["dvc", "exp", "run", "-S", "train.epochs=3",
                           "-S", "quant.n_per_class=60"], cwd=fresh, env=tool_env(),
                          capture_output=True, text=True, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert ran_stages(out) == ["check_params"], out[-2000:]
    assert "quant.n_per_class: n_per_class * n_classes" in out
    assert (fresh / "models/dense.pt").read_bytes() == dense  # no training started


def test_rerun_stages_leave_git_clean(fresh: Path) -> None:
    """Tracked outputs hold no wall-clock time: forced reruns of the path stages (their
    `cache: false` path tables live in git) rewrite the same bytes and the same dvc.lock."""
    run(["dvc", "repro", "--force", "--single-item", "select_features", "glm5", "solve@1",
         "solve@2", "evaluate_glm5"], fresh)
    assert git(fresh, "status", "--porcelain") == ""
