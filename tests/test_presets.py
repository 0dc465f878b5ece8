"""Paper presets under params/: valid, the supplement's values, minimal, and the dvc command."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dvc.utils.cli_parse import to_path_overrides
from dvc.utils.hydra import apply_overrides

from qsenn_core import presets
from qsenn_core.errors import ParamsError
from qsenn_core.params import Params, params_from_dict

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "params.yaml"
PRESETS = sorted((REPO / "params").glob("*.yaml"))
SHIPPED = {
    "paper-cub-resnet50", "paper-cub-densenet121", "paper-cub-inception_v3",
    "paper-travelingbirds", "paper-cars", "paper-aircraft", "paper-imagenet-fast",
    "paper-prototype-224", "paper-cub-resnet50-no-quant", "paper-cub-resnet50-no-iter",
    "synth-paper-finetune", "synth-paper-finetune-no-iter",
}


def get(raw: dict[str, Any], key: str) -> Any:
    """The value at dotted ``key``."""
    for part in key.split("."):
        raw = raw[part]
    return raw


def leaves(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value of every non-mapping value in ``raw``."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{prefix}{key}"
        out.update(leaves(value, f"{path}.") if isinstance(value, dict) else {path: value})
    return out


def dvc_applied(tmp_path: Path, command: list[str]) -> dict[str, Any]:
    """params.yaml after DVC's own code applies the ``-S`` values of ``command`` to a copy."""
    sets = [command[i + 1] for i, arg in enumerate(command) if arg == "-S"]
    by_file = to_path_overrides(sets)
    assert list(by_file) == ["params.yaml"]  # no value was mistaken for a `file:` prefix
    target = tmp_path / "params.yaml"
    shutil.copy(BASE, target)
    apply_overrides(target, by_file["params.yaml"])
    return yaml.safe_load(target.read_text())


def test_every_named_preset_is_shipped():
    assert {p.stem for p in PRESETS} >= SHIPPED


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_passes_the_validator(preset):
    params = presets.load_preset(preset, BASE)
    assert isinstance(params, Params)
    # paper-* presets move to a real dataset; synth-* ones change the schedule on synth
    assert (params.data.name != "synth") == preset.stem.startswith("paper-")
    assert params.final in params.iteration_models()


# The supplement, "Implementation Details", for ResNet50 on CUB-2011 (Table 13 for "fast").
PAPER = {
    "data.name": "cub", "data.image_size": 448, "data.crop_to_bbox": False,
    "model.arch": "resnet50", "model.weights": "IMAGENET1K_V1", "model.dropout": 0.2,
    "model.reduced_strides": False,
    "train.epochs": 150, "train.batch_size": 16, "train.lr_backbone": 5e-3, "train.lr_head": 0.01,
    "train.lr_step": 30, "train.lr_gamma": 0.4, "train.momentum": 0.9,
    "train.weight_decay": 5e-4, "train.beta": 0.196,
    "select.n_features": 50, "select.alpha": 0.8, "sparse.alpha": 0.99, "sparse.n_lambdas": 100,
    "sparse.lookbehind": 5, "quant.enabled": True, "quant.n_per_class": 5, "quant.levels": 3,
    "finetune.lr_factor": 100.0, "finetune.lr_decay_per_iter": 0.9, "finetune.dropout": 0.1,
    "finetune.momentum": 0.95, "finetune.batch_size": 16,
    "clip.model": "ViT-B-32", "clip.pretrained": "openai",
}
DIFFERENCES = {
    "paper-cub-resnet50": {},
    "paper-cub-densenet121": {"model.arch": "densenet121", "train.beta": 0.098},
    "paper-cub-inception_v3": {"model.arch": "inception_v3", "train.beta": 0.049,
                               "data.image_size": 299},
    "paper-travelingbirds": {"data.name": "travelingbirds"},
    "paper-cars": {"data.name": "cars"},
    "paper-aircraft": {"data.name": "aircraft"},
    "paper-imagenet-fast": {"data.name": "imagenet", "sparse.tol": 0.1, "sparse.n_lambdas": 5},
    "paper-prototype-224": {"data.image_size": 224, "data.crop_to_bbox": True,
                            "model.reduced_strides": True},
    "paper-cub-resnet50-no-quant": {"quant.enabled": False},
    "paper-cub-resnet50-no-iter": {},
}
FOUR_ITERATIONS = [(10, 0), (10, 0), (10, 0), (40, 10)]  # (epochs, lr_step): N = 4


@pytest.mark.parametrize("name", sorted(DIFFERENCES))
def test_presets_hold_the_papers_values(name):
    _, merged = presets.load_raw(BASE, REPO / "params" / f"{name}.yaml")
    expected = {**PAPER, **DIFFERENCES[name]}
    assert {key: get(merged, key) for key in expected} == expected
    params = presets.load_preset(REPO / "params" / f"{name}.yaml", BASE)
    schedule = [(it.epochs, it.lr_step) for it in params.iterations.values()]
    if name.endswith("no-iter"):  # Table 4: a single 40-epoch round
        assert schedule == [(40, 10)] and params.final == "iter_1"
    else:
        assert schedule == FOUR_ITERATIONS and params.final == "iter_4"
    assert params.iterations[params.final.removeprefix("iter_")].lr_gamma == 0.4


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_a_preset_sets_only_what_differs_from_below_it(preset):
    own = yaml.safe_load(preset.read_text())
    parent = own.pop(presets.EXTENDS, None)
    below = (yaml.safe_load(BASE.read_text()) if parent is None
             else presets.load_raw(BASE, preset.parent / parent)[1])
    own.pop("iterations", None)  # replaced as a whole: it restates the chain
    same = {key: value for key, value in leaves(own).items() if get(below, key) == value}
    assert not same, f"{preset.name} repeats values it inherits: {same}"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_dvc_applies_the_command_to_exactly_the_merged_params(preset, tmp_path):
    _, merged = presets.load_raw(BASE, preset)
    command = presets.exp_run_command(preset, BASE)
    assert command[:3] == ["dvc", "exp", "run"]
    assert dvc_applied(tmp_path, command) == merged


def test_dry_run_prints_the_command_with_added_and_dropped_keys(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(REPO)
    code = presets.main(["params/paper-cub-resnet50-no-iter.yaml", "--queue", "-n", "no-iter",
                         "-S", "seed=7", "-S", "data.root=/data/my cub", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("\n") == 1
    command = shlex.split(out)
    assert command[:6] == ["dvc", "exp", "run", "-n", "no-iter", "--queue"]
    sets = [command[i + 1] for i, arg in enumerate(command) if arg == "-S"]
    for expected in ("seed=7", "data.root='/data/my cub'", "iterations.1.epochs=40",
                     "+iterations.1.lr_step=10", "+iterations.1.lr_gamma=0.4",
                     "~iterations.2", "~iterations.3", "final=iter_1", "train.epochs=150",
                     "model.weights=IMAGENET1K_V1"):
        assert expected in sets, (expected, sets)
    applied = dvc_applied(tmp_path, command)
    assert (applied["seed"], applied["data"]["root"]) == (7, "/data/my cub")
    assert applied["iterations"] == {"1": {"prev": "dense", "epochs": 40, "lr_step": 10,
                                           "lr_gamma": 0.4}}


def test_dvc_options_with_a_value_may_come_before_the_preset(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert presets.main(["-n", "cars-1", "-C", "a.txt", "params/paper-cars.yaml", "-C", "b.txt",
                         "--dry-run"]) == 0
    command = shlex.split(capsys.readouterr().out)
    assert command[:9] == ["dvc", "exp", "run", "-n", "cars-1", "-C", "a.txt", "-C", "b.txt"]
    assert "data.name=cars" in command


def test_new_iteration_is_added_whole():
    command = presets.exp_run_command(REPO / "params" / "paper-cub-resnet50.yaml", BASE)
    assert "+iterations.4={prev: iter_3, epochs: 40, lr_step: 10, lr_gamma: 0.4}" in command
    assert not [arg for arg in command if arg.startswith("~")]


def test_run_calls_dvc_of_this_environment(monkeypatch):
    calls = []

    def fake_run(argv, check):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 3)

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(presets.subprocess, "run", fake_run)
    assert presets.main(["params/paper-cars.yaml", "--temp"]) == 3  # dvc's exit code
    (argv,) = calls
    assert argv[:6] == [sys.executable, "-m", "dvc", "exp", "run", "--temp"]
    assert "data.name=cars" in argv


@pytest.mark.parametrize(
    ("body", "extra", "key"),
    [
        ("quant: {n_per_class: 60}", [], "quant.n_per_class"),
        ("select: {n_features: 4096}", [], "select.n_features"),
        ("", ["-S", "quant.n_per_class=60"], "quant.n_per_class"),
        ("", ["-S", "train.epohcs=3"], "train.epohcs"),
        ("iterations: {'1': {prev: dense, epochs: 5, lr_step: 2}}\nfinal: iter_1", [],
         "iterations.1.lr_gamma"),
    ],
)
def test_bad_values_stop_before_dvc_with_one_line(tmp_path, monkeypatch, capsys, body, extra,
                                                  key):
    preset = tmp_path / "bad.yaml"
    preset.write_text(f"extends: {REPO / 'params' / 'paper-cub-resnet50.yaml'}\n{body}\n")
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(presets.subprocess, "run", lambda *a, **k: pytest.fail("dvc ran"))
    assert presets.main([str(preset), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {preset}: {key}:") and err.count("\n") == 1, err


def test_extends_loops_and_bad_assignments_are_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nseed: 1\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nseed: 2\n")
    with pytest.raises(ParamsError, match=r"extends: presets extend each other in a loop"):
        presets.read_preset(tmp_path / "a.yaml")
    with pytest.raises(ParamsError, match="preset file not found"):
        presets.read_preset(tmp_path / "missing.yaml")
    with pytest.raises(ParamsError, match=r"missing\.yaml: params file not found"):
        presets.load_raw(tmp_path / "missing.yaml", REPO / "params" / "paper-cars.yaml")
    with pytest.raises(ParamsError, match=r"^-S seed: expected KEY=VALUE"):
        presets.set_key({}, "seed")


def test_values_are_quoted_for_hydra_when_needed(tmp_path):
    base = yaml.safe_load(BASE.read_text())
    target = presets.merge_preset(base, {
        "data": {"root": "/data/set 1", "name": "cub"},
        "clip": {"non_adjectives": ["hooked seabird", "true", "1e-3", "needle"],
                 "pretrained": "/w/open_clip_model.safetensors"},
        "sparse": {"tol": 1e-05},
    })
    command = ["dvc", "exp", "run"]
    for override in presets.dvc_overrides(base, target):
        command += ["-S", override]
    assert "data.name=cub" in command
    assert "clip.pretrained=/w/open_clip_model.safetensors" in command
    applied = dvc_applied(tmp_path, command)
    # DVC writes 1e-05, which YAML 1.1 reads back as a string; the validator takes it as a number
    assert applied["sparse"]["tol"] == "1e-05"
    assert params_from_dict(applied) == params_from_dict(target)
    assert applied["clip"]["non_adjectives"] == target["clip"]["non_adjectives"]
    with pytest.raises(ParamsError, match=r"^data\.root: .* holds a quote"):
        presets.dvc_overrides(base, presets.merge_preset(base, {"data": {"root": "/it's"}}))
