"""qsenn_core.claims: the claims sweep's commands and the report, on a fake `dvc exp show --json`.

The fake holds a baseline commit ``main`` and 3 seeds x 2 datasets x 5 variants of finished
``claims-*`` experiments, built the way ``tests/test_compare.py`` builds its records. Every
metric is ``mean + (seed - 1) * 1.0``, so over seeds 0 1 2 each reading has the chosen mean and a
sample std of exactly 1.0; 2 SE of a difference of two such readings is 2 sqrt(2/3) = 1.63.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from qsenn_core import claims, presets
from qsenn_core.compare import experiments
from qsenn_core.errors import ParamsError
from qsenn_core.metric_columns import HIGHER, LOWER

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "params.yaml"
SEEDS = (0, 1, 2)

#: (dataset, row label) -> {metric key: mean over the seeds}.
MEANS: dict[tuple[str, str], dict[str, float]] = {}
for _dataset, _acc in (("synth", {"dense": 88.0, "glm-saga_5": 82.0, "dense + L_div": 87.0,
                                  "SLDD-Model": 86.0,
                                  "Q-SENN": 86.5, "w/o quantization": 86.0,
                                  "w/o iteration": 86.5}),
                       ("synth_travelingbirds", {"dense": 40.0, "glm-saga_5": 38.0,
                                                 "dense + L_div": 45.0,
                                                 "SLDD-Model": 60.0, "Q-SENN": 62.0,
                                                 "w/o quantization": 63.0,
                                                 "w/o iteration": 58.0})):
    for _label, _div, _dep, _bin in (("dense", 60.0, 10.0, 30.0),
                                     ("glm-saga_5", 55.0, 50.0, 31.0),
                                     ("dense + L_div", 75.0, 12.0, 30.0),
                                     ("SLDD-Model", 70.0, 45.0, 32.0),
                                     ("Q-SENN", 78.0, 30.0, 40.0),
                                     ("w/o quantization", 65.0, 46.0, 35.0),
                                     ("w/o iteration", 72.0, 29.0, 42.0)):
        MEANS[_dataset, _label] = {"accuracy": _acc[_label], "diversity_at_5": _div,
                                   "dependence": _dep, "binary_features": _bin}
#: W^Q assignments changed (Figure 8): iteration 1 -> 2, then 2 -> 3.
CHANGED = {"metrics/iter_2.json": 40.0, "metrics/iter_3.json": 30.0}


def _at(means: dict[str, float], seed: int) -> dict[str, float]:
    return {k: v + (seed - 1) * 1.0 for k, v in means.items()}


def metrics_files(dataset: str, variant: str, seed: int,
                  means: dict[tuple[str, str], dict[str, float]]) -> dict[str, dict[str, float]]:
    """The metrics files one experiment of the sweep writes (each with the fake readings)."""
    if variant == "dense":  # the conventional model: only the dense stages ran
        return {"metrics/dense.json": _at(means[dataset, "dense"], seed),
                "metrics/glm5.json": _at(means[dataset, "glm-saga_5"], seed)}
    files = {"metrics/dense.json": _at(means[dataset, "dense + L_div"], seed),
             "metrics/glm5.json": _at(means[dataset, "glm-saga_5"], seed)}
    final = {"qsenn": "Q-SENN", "no-quant": "w/o quantization", "no-iter": "w/o iteration",
             "sldd": "SLDD-Model"}[variant]
    if variant in ("qsenn", "no-quant"):
        for i in (1, 2, 3):
            files[f"metrics/iter_{i}.json"] = _at(means[dataset, final], seed)
        for path, value in CHANGED.items():
            files[path]["assignments_changed"] = value + (seed - 1) * 1.0
        files["metrics/final.json"] = dict(files["metrics/iter_3.json"])
    else:
        files["metrics/iter_1.json"] = _at(means[dataset, final], seed)
        files["metrics/final.json"] = dict(files["metrics/iter_1.json"])
    return files


def record(name: str, params: dict[str, Any], metrics: dict[str, dict[str, float]]) -> dict:
    """One exp-show record, as tests/test_compare.py builds them."""
    return {"rev": (name * 40)[:40], "name": name, "error": None,
            "data": {"params": {"params.yaml": {"data": params}},
                     "metrics": {p: {"data": m} for p, m in metrics.items()}}}


def fake_shown(means: dict[tuple[str, str], dict[str, float]] | None = None,
               skip: tuple[str, ...] = ()) -> list[dict]:
    """Baseline ``main`` with the 24 claims experiments (less ``skip``) and one other one."""
    means = MEANS if means is None else means
    base = record("main", {"seed": 0, "data": {"name": "synth"}, "quant": {"enabled": True}},
                  metrics_files("synth", "qsenn", 0, means))
    groups = []
    for s in claims.sweep(SEEDS, claims.DATASETS):
        if s.name in skip:
            continue
        params = {"seed": s.seed, "data": {"name": s.dataset},
                  "quant": {"enabled": s.variant in ("qsenn", "no-iter", "dense")}}
        rev = record(s.name, params, metrics_files(s.dataset, s.variant, s.seed, means))
        groups.append({"executor": None, "name": s.name, "revs": [rev]})
    other = record("unrelated", {"seed": 5, "data": {"name": "synth"}},
                   {"metrics/final.json": {"accuracy": 1.0}})
    groups.append({"executor": None, "name": "unrelated", "revs": [other]})
    base["experiments"] = groups
    return [base]


def found_of(shown: list[dict]) -> claims.Found:
    return claims.claims_experiments(experiments(shown))


def by_statement(results: list[claims.ClaimResult]) -> dict[tuple[str, str, str], str]:
    return {(r.claim, r.dataset, r.statement.split(" (")[0]): r.verdict for r in results}


def variant_of(name: str) -> str:
    return claims._NAME.match(name)["variant"]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


# ----------------------------------------------------------------------------- the table


def test_found_are_the_claims_experiments_only() -> None:
    found = found_of(fake_shown())
    assert len(found) == 30
    assert found["synth_travelingbirds", "no-iter", 2].name == \
        "claims-synth_travelingbirds-no-iter-s2"


def test_table_has_mean_and_sample_std_per_row() -> None:
    table = claims.dataset_table(found_of(fake_shown()), "synth")
    assert [r["setting"] for r in table] == ["dense", "glm-saga_5", "dense + L_div",
                                           "SLDD-Model", "Q-SENN", "w/o quantization",
                                           "w/o iteration"]
    assert all(r["n_seeds"] == 3 and r["seeds"] == "0 1 2" for r in table)
    qsenn = table[4]
    assert qsenn["accuracy_mean"] == pytest.approx(86.5)
    assert qsenn["accuracy_std"] == pytest.approx(1.0)
    assert qsenn["assignments_changed_mean"] == pytest.approx(30.0)  # final = iteration 3
    assert table[0]["diversity_at_5_mean"] == pytest.approx(60.0)  # dense from dense.json
    assert table[1]["dependence_mean"] == pytest.approx(50.0)  # glm5 from glm5.json
    assert table[2]["diversity_at_5_mean"] == pytest.approx(75.0)  # qsenn's dense.json
    assert table[3]["diversity_at_5_mean"] == pytest.approx(70.0)  # the sldd experiments
    assert table[0]["alignment_r_mean"] is None


def test_markdown_cells_and_columns() -> None:
    found = found_of(fake_shown())
    markdown, csv_text = claims.report(found, claims.sweep())
    lines = markdown.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| Setting"))
    heads = cells(lines[header])
    assert heads[:6] == ["Setting", "Seeds", "Accuracy (%) ↑", "diversity@5 (%) ↑",
                         "Dependence γ (%) ↓", "Binary features (%)"]
    # columns no model file has are left out; assignments changed is in final.json of Q-SENN
    assert heads[6:] == ["Assignments changed (%)"]
    synth_rows = {cells(line)[0]: cells(line) for line in lines[header + 2:header + 8]}
    assert synth_rows["Q-SENN"][1:6] == ["3", "86.5 ± 1.0", "78.0 ± 1.0", "30.0 ± 1.0",
                                         "40.0 ± 1.0"]
    assert synth_rows["dense"][1:3] == ["3", "88.0 ± 1.0"]
    assert synth_rows["dense"][6] == "-"
    assert "## synth_travelingbirds" in markdown
    parsed = list(csv.DictReader(io.StringIO(csv_text)))
    assert len(parsed) == 14 and list(parsed[0])[:4] == ["dataset", "setting", "n_seeds", "seeds"]
    row = next(r for r in parsed if r["dataset"] == "synth_travelingbirds"
               and r["setting"] == "SLDD-Model")
    assert float(row["accuracy_mean"]) == pytest.approx(60.0)
    assert float(row["accuracy_std"]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- the claims


def test_clear_claims_pass() -> None:
    results = claims.judge_claims(found_of(fake_shown()))
    verdicts = by_statement(results)
    assert set(verdicts.values()) == {claims.PASS}
    assert len(results) == 1 + 2 * 2 + 2 + 2 * 2 + 4 + 2  # (a), (b) x2, (c), (d) x2, (e) x4, (f)
    assert ("d", "synth", "Binary features Q-SENN > w/o quantization") in verdicts
    assert ("a", "synth", "Q-SENN accuracy >= 97% of dense") in verdicts
    assert ("f", "synth_travelingbirds",
            "Assignments changed iteration 2->3 < iteration 1->2") in verdicts
    a = results[0]
    assert "ratio 0.983" in a.detail and "(n=3)" in a.detail


def _means_with(dataset: str, label: str, key: str, value: float) -> dict:
    means = copy.deepcopy(MEANS)
    means[dataset, label][key] = value
    return means


@pytest.mark.parametrize(("qsenn_diversity", "verdict"), [
    (78.0, claims.PASS),   # gap 8 > 1.63
    (71.0, claims.WEAK),   # gap 1 within 2 SE
    (70.0, claims.WEAK),   # a tie is within the noise
    (68.0, claims.FAIL),   # reversed
])
def test_changing_one_metric_changes_the_verdict(qsenn_diversity: float, verdict: str) -> None:
    means = _means_with("synth", "Q-SENN", "diversity_at_5", qsenn_diversity)
    verdicts = by_statement(claims.judge_claims(found_of(fake_shown(means))))
    assert verdicts["b", "synth", "diversity@5 Q-SENN > SLDD-Model"] == verdict
    # the other dataset and the other comparison of (b) are untouched
    assert verdicts["b", "synth_travelingbirds", "diversity@5 Q-SENN > SLDD-Model"] == claims.PASS
    assert verdicts["b", "synth", "diversity@5 SLDD-Model > dense"] == claims.PASS


def test_binary_claims_compare_with_dense_and_with_the_quantization_ablation() -> None:
    means = _means_with("synth", "w/o quantization", "binary_features", 45.0)  # above Q-SENN
    verdicts = by_statement(claims.judge_claims(found_of(fake_shown(means))))
    assert verdicts["d", "synth", "Binary features Q-SENN > w/o quantization"] == claims.FAIL
    assert verdicts["d", "synth", "Binary features Q-SENN > dense"] == claims.PASS
    assert verdicts["d", "synth_travelingbirds",
                    "Binary features Q-SENN > w/o quantization"] == claims.PASS


def test_lower_is_better_claims_and_the_accuracy_ratio() -> None:
    means = _means_with("synth", "Q-SENN", "dependence", 46.0)  # above SLDD's 45: reversed
    means[("synth", "Q-SENN")]["accuracy"] = 84.0  # 84 / 88 = 0.955 < 0.97
    verdicts = by_statement(claims.judge_claims(found_of(fake_shown(means))))
    assert verdicts["c", "synth", "Dependence γ Q-SENN < SLDD-Model"] == claims.FAIL
    assert verdicts["a", "synth", "Q-SENN accuracy >= 97% of dense"] == claims.FAIL
    means[("synth_travelingbirds", "SLDD-Model")]["accuracy"] = 41.0  # 1 above dense: noise
    verdicts = by_statement(claims.judge_claims(found_of(fake_shown(means))))
    assert verdicts["e", "synth_travelingbirds", "Accuracy SLDD-Model > dense"] == claims.WEAK
    assert verdicts["e", "synth_travelingbirds", "Accuracy Q-SENN > dense"] == claims.PASS


def test_travelingbirds_claim_q_senn_above_sldd() -> None:
    means = _means_with("synth_travelingbirds", "Q-SENN", "accuracy", 57.0)  # below SLDD's 60
    verdicts = by_statement(claims.judge_claims(found_of(fake_shown(means))))
    assert verdicts["e", "synth_travelingbirds", "Accuracy Q-SENN > SLDD-Model"] == claims.FAIL
    assert verdicts["e", "synth_travelingbirds", "Accuracy Q-SENN > dense"] == claims.PASS
    assert ("e", "synth", "Accuracy Q-SENN > SLDD-Model") not in verdicts  # TravelingBirds only


@pytest.mark.parametrize(("no_iter_accuracy", "verdict"), [
    (58.0, claims.PASS),   # Q-SENN 62: gap 4 > 1.63
    (61.5, claims.WEAK),   # gap 0.5 within 2 SE
    (63.0, claims.FAIL),   # reversed
])
def test_travelingbirds_claim_iteration_adds_robustness(no_iter_accuracy: float,
                                                        verdict: str) -> None:
    means = _means_with("synth_travelingbirds", "w/o iteration", "accuracy", no_iter_accuracy)
    verdicts = by_statement(claims.judge_claims(found_of(fake_shown(means))))
    assert verdicts["e", "synth_travelingbirds", "Accuracy Q-SENN > w/o iteration"] == verdict
    assert verdicts["e", "synth_travelingbirds", "Accuracy Q-SENN > SLDD-Model"] == claims.PASS


def test_judge_order_rule() -> None:
    a, b = claims.summarize([10.0, 11.0, 12.0]), claims.summarize([5.0, 6.0, 7.0])
    assert claims.judge_order(a, b, HIGHER)[0] == claims.PASS
    assert claims.judge_order(b, a, HIGHER)[0] == claims.FAIL
    assert claims.judge_order(b, a, LOWER)[0] == claims.PASS
    verdict, detail = claims.judge_order(a, b, HIGHER)
    assert "gap +5.00" in detail and "2·SE 1.63" in detail
    close = claims.summarize([10.0, 12.0, 14.0])  # std 2, mean 12
    assert claims.judge_order(close, claims.summarize([9.0, 11.0, 13.0]), HIGHER)[0] == \
        claims.WEAK
    one = claims.summarize([20.0])
    assert one.std is None and one.text() == "20.0 (n=1)"
    assert claims.judge_order(one, b, HIGHER) == (claims.WEAK,
                                                  "gap +14.00, 2·SE undefined (n=1)")
    assert claims.judge_order(claims.summarize([1.0]), b, HIGHER)[0] == claims.FAIL
    assert claims.judge_order(claims.summarize([]), b, HIGHER)[0] == claims.NA


def test_judge_at_least_rule() -> None:
    assert claims.judge_at_least(claims.summarize([0.98, 0.99, 0.97]))[0] == claims.PASS
    assert claims.judge_at_least(claims.summarize([0.95, 0.99, 0.96]))[0] == claims.WEAK
    assert claims.judge_at_least(claims.summarize([0.90, 0.91, 0.92]))[0] == claims.FAIL
    assert claims.judge_at_least(claims.summarize([0.99]))[0] == claims.WEAK
    assert claims.judge_at_least(claims.summarize([0.90]))[0] == claims.FAIL


def test_single_seed_is_weak_at_best() -> None:
    skip = tuple(s.name for s in claims.sweep(SEEDS) if s.seed != 0)
    results = claims.judge_claims(found_of(fake_shown(skip=skip)))
    assert {r.verdict for r in results} == {claims.WEAK}
    assert all("n=1" in r.detail for r in results)


# ----------------------------------------------------------------------------- the sweep


def test_queue_dry_run_lists_the_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    assert claims.main(["queue", "--dry-run"]) == 0
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert len(commands) == 30
    names = [c[c.index("-n") + 1] for c in commands]
    assert len(set(names)) == 30
    # the experiments that train dense models come first: Q-SENN's start, then conventional
    assert all("-qsenn-" in n for n in names[:6])
    assert all("-dense-" in n for n in names[6:12])
    assert not any("-qsenn-" in n or "-dense-" in n for n in names[12:])
    for command, name in zip(commands, names, strict=True):
        assert command[:4] == ["dvc", "exp", "run", "--queue"]
        if variant_of(name) == "dense":
            assert command[-3:] == ["train.beta=0", "evaluate_dense", "evaluate_glm5"]
        else:
            assert command[-4:] == ["evaluate_dense", "evaluate_glm5", "evaluate", "summarize"]
        sets = [command[i + 1] for i, arg in enumerate(command) if arg == "-S"]
        dataset, variant, seed = claims._NAME.match(name).group("dataset", "variant", "seed")
        assert sets[:2] == [f"seed={seed}", f"data.name={dataset}"]
        no_iter = ["~iterations.2", "~iterations.3", "iterations.1.epochs=9",
                   "+iterations.1.lr_step=3", "+iterations.1.lr_gamma=0.4", "final=iter_1"]
        assert sets[2:] == {"qsenn": [], "dense": ["train.beta=0"],
                            "no-quant": ["quant.enabled=false"],
                            "no-iter": no_iter,
                            "sldd": [*no_iter, "quant.enabled=false"]}[variant]
        assert not any(s.startswith("data.root") for s in sets)  # synth_tb lives in data/synth
    assert {(n.split("-s")[-1]) for n in names} == {"0", "1", "2"}


def test_set_adds_one_override_to_every_experiment(capsys: pytest.CaptureFixture[str]) -> None:
    assert claims.main(["queue", "--dry-run", "--datasets", "synth", "--set",
                        "finetune.lr_factor=10", "--set", "train.epochs=5"]) == 0
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    assert len(commands) == 15
    for command in commands:
        name = command[command.index("-n") + 1]
        sets = [command[i + 1] for i, arg in enumerate(command) if arg == "-S"]
        assert sets[2:4] == ["finetune.lr_factor=10", "train.epochs=5"]
        assert tuple(sets[4:]) == claims.variant_overrides(variant_of(name))
    assert claims.sweep((0,), ("synth",), ("finetune.lr_factor=10",))[0].name == \
        "claims-synth-qsenn-s0"  # the names stay, so report finds the experiments


def test_report_lists_the_params_that_differ_from_the_sweep() -> None:
    assert claims.params_off_sweep(found_of(fake_shown()), BASE) == []
    markdown, _ = claims.report(found_of(fake_shown()), claims.sweep(), BASE)
    assert "differ from the sweep" not in markdown
    shown = fake_shown()
    for group in shown[0]["experiments"]:
        if group["name"].startswith("claims-synth-") and "-dense-" not in group["name"]:
            params = group["revs"][0]["data"]["params"]["params.yaml"]["data"]
            params["finetune"] = {"lr_factor": 10}
    lines = claims.params_off_sweep(found_of(shown), BASE)
    base_factor = yaml.safe_load(BASE.read_text())["finetune"]["lr_factor"]
    assert lines == [f"synth: finetune.lr_factor = 10 (12 of 15 experiments; params.yaml: "
                     f"{base_factor!r})"]
    markdown, _ = claims.report(found_of(shown), claims.sweep(), BASE)
    assert f"- {lines[0]}" in markdown
    assert claims.params_off_sweep(found_of(shown), BASE.parent / "absent.yaml") == []


def test_every_setting_validates_through_dvcs_hydra_and_the_params_checker() -> None:
    settings = claims.sweep()
    claims.check_settings(settings, BASE)  # raises on any invalid setting
    sldd = claims.applied_params(claims.Setting("synth_travelingbirds", "sldd", 2).overrides,
                                 BASE)
    assert sldd["iterations"] == {"1": {"prev": "dense", "epochs": 9, "lr_step": 3,
                                        "lr_gamma": 0.4}}
    assert sldd["final"] == "iter_1" and sldd["quant"]["enabled"] is False
    assert sldd["seed"] == 2 and sldd["data"]["name"] == "synth_travelingbirds"
    assert sldd["data"]["root"] == "data/synth"
    qsenn = claims.applied_params(claims.Setting("synth", "qsenn", 1).overrides, BASE)
    assert list(qsenn["iterations"]) == ["1", "2", "3"] and qsenn["final"] == "iter_3"
    assert qsenn["quant"]["enabled"] is True


def test_a_bad_setting_is_one_line_naming_the_experiment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims, "NO_QUANT", ("quant.n_per_class=60",))
    with pytest.raises(ParamsError, match="claims-synth-no-quant-s0: .*n_per_class") as err:
        claims.check_settings(claims.sweep((0,), ("synth",)), BASE)
    assert "\n" not in str(err.value)


def test_queue_runs_dvc_of_this_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    class Done:
        returncode = 0

    monkeypatch.setattr(claims.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Done())
    assert claims.queue(claims.sweep((0,), ("synth",)), base=BASE) == 0
    assert len(calls) == 5
    assert calls[0][:6] == [sys.executable, "-m", "dvc", "exp", "run", "--queue"]
    assert calls[0][7] == "claims-synth-qsenn-s0"


STATUS = """\
Task     Name                       Created    Status
0f1e2d3  claims-synth-qsenn-s0      10:01 AM   Success
1a2b3c4  claims-synth-qsenn-s1      10:01 AM   Running
5d6e7f8  claims-synth-qsenn-s2      10:01 AM   Queued
9a8b7c6  claims-synth-sldd-s2       10:02 AM   Failed

Worker status: 1 active, 0 idle
"""


def test_queue_status_parsing() -> None:
    assert claims.pending_tasks(STATUS) == 2
    assert claims.worker_count(STATUS) == 1
    assert claims.pending_tasks("No experiment tasks in the queue.\n\n"
                                "Worker status: 0 active, 0 idle\n") == 0


def test_wait_polls_until_the_queue_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = [STATUS, STATUS.replace("Queued", "Running"), "Worker status: 0 active, 1 idle\n"]

    class Proc:
        def __init__(self, text: str) -> None:
            self.returncode, self.stdout, self.stderr = 0, text, ""

    monkeypatch.setattr(claims.subprocess, "run", lambda cmd, **kw: Proc(outputs.pop(0)))
    monkeypatch.setattr(claims.time, "sleep", lambda s: None)
    claims.wait_for_queue(poll_s=0)
    assert outputs == []


def test_wait_stops_when_no_worker_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    stalled = STATUS.replace("1 active", "0 active")

    class Proc:
        returncode, stdout, stderr = 0, stalled, ""

    monkeypatch.setattr(claims.subprocess, "run", lambda cmd, **kw: Proc())
    monkeypatch.setattr(claims.time, "sleep", lambda s: None)
    with pytest.raises(claims.ClaimsError, match="no queue worker"):
        claims.wait_for_queue(poll_s=0)


# ----------------------------------------------------------------------------- command line


def test_report_cli_writes_markdown_and_csv(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "shown.json"
    source.write_text(json.dumps(fake_shown()))
    md, table_csv = tmp_path / "out" / "claims.md", tmp_path / "claims.csv"
    assert claims.main(["report", "--input", str(source), "--md", str(md),
                        "--csv", str(table_csv)]) == 0
    printed = capsys.readouterr().out
    assert printed == md.read_text()
    assert "Found 30 claims experiments (30 expected); none missing." in printed
    assert claims.RULE in printed
    assert "17 PASS / 0 WEAK / 0 FAIL / 0 N/A" in printed
    assert table_csv.read_text().startswith("dataset,setting,n_seeds,seeds,accuracy_mean,")


def test_missing_experiments_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          caplog: pytest.LogCaptureFixture) -> None:
    gone = ("claims-synth-sldd-s1", "claims-synth_travelingbirds-qsenn-s2")
    source = tmp_path / "shown.json"
    source.write_text(json.dumps(fake_shown(skip=gone)))
    assert claims.main(["report", "--input", str(source)]) == 0
    out = capsys.readouterr().out
    assert ("Found 28 claims experiments (30 expected); missing: claims-synth_travelingbirds-"
            "qsenn-s2, claims-synth-sldd-s1.") in out
    assert "| SLDD-Model | 2 |" in out
    assert any("claims-synth-sldd-s1" in r.getMessage() for r in caplog.records)


def test_no_claims_experiments_is_exit_2_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shown = fake_shown()
    shown[0]["experiments"] = shown[0]["experiments"][-1:]  # only the unrelated experiment
    source = tmp_path / "shown.json"
    source.write_text(json.dumps(shown))
    assert claims.main(["report", "--input", str(source)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no claims-* experiment")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert claims.main(["report", "--input", str(bad)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_parallel_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(claims.os, "cpu_count", lambda: 16)
    assert claims.worker_env(4, {})["OMP_NUM_THREADS"] == "4"
    assert claims.worker_env(32, {})["OMP_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in claims.worker_env(1, {})
    assert claims.worker_env(4, {"OMP_NUM_THREADS": "2"})["OMP_NUM_THREADS"] == "2"


def test_workers_find_this_environments_dvc() -> None:
    env = claims.worker_env(2, {"PATH": "/usr/bin:/bin"})
    found = shutil.which("dvc", path=env["PATH"])
    assert found is not None and Path(found).parent == Path(sys.executable).parent
    assert env["PATH"].endswith("/usr/bin:/bin")
    assert claims.worker_env(1, dict(env))["PATH"] == env["PATH"]  # not prepended twice


def test_paper_budget_names_and_schedules(capsys: pytest.CaptureFixture[str]) -> None:
    assert claims.main(["queue", "--dry-run", "--datasets", "synth", "--budget", "paper",
                        "--variants", "sldd", "qsenn"]) == 0
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    names = [c[c.index("-n") + 1] for c in commands]
    # qsenn first (the longest runs), then the others; every name ends in the budget
    assert names == [f"claims-synth-qsenn-s{s}-paper" for s in SEEDS] + \
        [f"claims-synth-sldd-s{s}-paper" for s in SEEDS]
    settings = claims.sweep(SEEDS, ("synth",), budget="paper", variants=("qsenn", "sldd"))
    claims.check_settings(settings, BASE)
    qsenn = claims.applied_params(settings[0].overrides, BASE)
    assert [it["epochs"] for it in qsenn["iterations"].values()] == [10, 10, 10, 40]
    assert qsenn["iterations"]["4"] == {"prev": "iter_3", "epochs": 40, "lr_step": 10,
                                        "lr_gamma": 0.4}
    assert qsenn["final"] == "iter_4" and qsenn["quant"]["enabled"] is True
    sldd = claims.applied_params(settings[-1].overrides, BASE)
    assert sldd["iterations"] == {"1": {"prev": "dense", "epochs": 40, "lr_step": 10,
                                        "lr_gamma": 0.4}}
    assert sldd["quant"]["enabled"] is False
    # no fine-tuning, so the conventional dense model is the same experiment under any budget
    assert claims.variant_overrides("dense", "paper") == claims.variant_overrides("dense")


@pytest.mark.parametrize("budget", [b for b in claims.BUDGETS if claims.BUDGETS[b].presets])
def test_budget_schedules_equal_their_preset_files(budget: str) -> None:
    schedule = claims.BUDGETS[budget]
    for preset, overrides in zip(schedule.presets, (schedule.chain, schedule.single_round),
                                 strict=True):
        base, merged = presets.load_raw(BASE, REPO / preset)
        assert presets.dvc_overrides(base, merged) == list(overrides), preset


def test_report_reads_the_experiments_of_its_budget_only() -> None:
    shown = fake_shown()
    cpu = {g["name"] for g in shown[0]["experiments"]}
    for group in list(shown[0]["experiments"]):  # the same sweep again under budget paper
        if group["name"].startswith("claims-synth-"):
            paper = json.loads(json.dumps(group).replace(group["name"], group["name"] + "-paper"))
            rev = paper["revs"][0]
            for metrics in rev["data"]["metrics"].values():
                metrics["data"]["accuracy"] = 12.345
            shown[0]["experiments"].append(paper)
    rows = experiments(shown)
    cpu_found = claims.claims_experiments(rows)
    paper_found = claims.claims_experiments(rows, "paper")
    assert {e.name for e in cpu_found.values()} <= cpu
    assert len(paper_found) == 15 and set(paper_found) <= set(cpu_found)
    assert all(e.name.endswith("-paper") for e in paper_found.values())
    expected = claims.sweep(SEEDS, ("synth",), budget="paper")
    markdown, _ = claims.report(paper_found, expected, BASE, budget="paper")
    assert "Fine-tuning budget paper: 10 + 10 + 10 + 40 fine-tuning epochs, 40 in one round" \
        in markdown
    assert "none missing" in markdown and "synth_travelingbirds" not in markdown
    assert "12.3 ± 0.0" in markdown  # the paper rows' accuracy, not the cpu rows'


def test_unknown_variant_or_budget_is_one_line() -> None:
    with pytest.raises(claims.ClaimsError, match="unknown variant.*slld"):
        claims.sweep(variants=("slld",))
    with pytest.raises(claims.ClaimsError, match="unknown budget long"):
        claims.sweep(budget="long")


def test_paired_reading_uses_the_shared_seeds_and_keeps_the_verdict() -> None:
    a = {0: 71.0, 1: 72.5, 2: 69.0, 3: 80.0}  # seed 3 only on one side: left out
    b = {0: 70.0, 1: 71.5, 2: 68.5}
    assert claims.paired_text(a, b, HIGHER) == "paired over 3 seeds: +0.83 ± 0.29, 2·SE 0.33"
    assert claims.paired_text(b, a, LOWER) == "paired over 3 seeds: +0.83 ± 0.29, 2·SE 0.33"
    assert claims.paired_text(a, b, LOWER).startswith("paired over 3 seeds: -0.83")
    assert claims.paired_text({0: 1.0}, {0: 2.0}, HIGHER) == ""
    # a line of the report carries both readings
    verdicts = claims.judge_claims(found_of(fake_shown()))
    line = next(r for r in verdicts if r.dataset == "synth"
                and r.statement.startswith("diversity@5 Q-SENN > SLDD-Model"))
    assert line.verdict == claims.PASS
    assert "; paired over 3 seeds: +8.00 ± 0.00, 2·SE 0.00" in line.detail
