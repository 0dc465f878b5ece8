"""params.yaml -> typed Params: every key required, types, ranges, cross-field rules, one line."""

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from qsenn_core.errors import ParamsError
from qsenn_core.params import Params, load_params, params_from_dict
from qsenn_core.presets import merge_preset

REPO = Path(__file__).resolve().parents[1]
REPO_RAW: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())


def repo_with(changes: dict[str, Any]) -> Params:
    """The repo's params.yaml with ``changes`` merged in (``iterations`` replaced as a whole)."""
    return params_from_dict(merge_preset(REPO_RAW, changes))


def leaf_keys(raw: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the values in ``raw`` (lists count as values)."""
    keys = []
    for key, value in raw.items():
        path = f"{prefix}{key}"
        keys += leaf_keys(value, f"{path}.") if isinstance(value, dict) else [path]
    return keys


def dataclass_defaults(cls: Any, prefix: str = "") -> dict[str, Any]:
    """Every field of ``cls`` and its nested dataclasses that has a default, with that default."""
    found = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if f.default is not dataclasses.MISSING:
            found[path] = f.default
        if f.default_factory is not dataclasses.MISSING:
            found[path] = f.default_factory()
        nested = [t for t in (hints[f.name], *typing.get_args(hints[f.name]))
                  if dataclasses.is_dataclass(t)]
        for tp in nested:
            found.update(dataclass_defaults(tp, f"{path}."))
    return found


def test_repo_params_yaml_is_valid():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.data.name == "synth"
    assert params.n_classes == params.synth.n_classes
    assert params.select.n_features <= params.feature_width


def test_dataclasses_hold_no_defaults():
    # params.yaml is the one source of values; an iteration's lr schedule is the only optional
    # key, and its absence means "no schedule" (constant lr: x1.0, never stepped)
    assert dataclass_defaults(Params) == {"iterations.lr_step": 0, "iterations.lr_gamma": 1.0}
    assert params_from_dict(REPO_RAW) == load_params(REPO / "params.yaml")


@pytest.mark.parametrize("key", leaf_keys(REPO_RAW))
def test_every_key_of_params_yaml_is_required(key):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node[part]
    del node[last]
    with pytest.raises(ParamsError) as err:
        params_from_dict(raw)
    message = str(err.value)
    assert message.startswith(f"{key}: missing key"), message
    assert "\n" not in message


def test_a_missing_or_empty_section_names_its_first_key():
    raw = dict(REPO_RAW)
    del raw["train"]
    with pytest.raises(ParamsError, match=r"^train: missing key"):
        params_from_dict(raw)
    raw["train"] = None
    with pytest.raises(ParamsError, match=r"^train\.epochs: missing key"):
        params_from_dict(raw)
    with pytest.raises(ParamsError, match=r"^seed: missing key"):
        params_from_dict({})


def test_scientific_notation_strings_are_numbers():
    # YAML 1.1 reads "1e-3" (no dot) as a string
    params = repo_with({"sparse": {"lambda_min_ratio": "1e-3"}})
    assert params.sparse.lambda_min_ratio == 1e-3


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"train": {"lr_head": -0.1}}, "train.lr_head"),
        ({"train": {"lr_backbone": 0}}, "train.lr_backbone"),
        ({"train": {"epochs": "ten"}}, "train.epochs"),
        ({"train": {"epochs": 2.5}}, "train.epochs"),
        ({"train": {"batch_size": True}}, "train.batch_size"),
        ({"data": {"name": "mnist"}}, "data.name"),
        ({"model": {"arch": "vgg16"}}, "model.arch"),
        ({"model": {"arch": "resnet18"}, "select": {"n_features": 600}}, "select.n_features"),
        ({"model": {"width": 32}, "select": {"n_features": 40}}, "select.n_features"),
        ({"select": {"n_features": 4}, "quant": {"n_per_class": 5}}, "quant.n_per_class"),
        ({"quant": {"levels": 4}}, "quant.levels"),
        ({"sparse": {"solver": "lbfgs"}}, "sparse.solver"),
        ({"synth": {"spurious": 1.5}}, "synth.spurious"),
        ({"trian": {"epochs": 3}}, "trian"),
        ({"train": {"epochz": 3}}, "train.epochz"),
        ({"iterations": {"1": {"prev": "iter_7", "epochs": 1}}, "final": "iter_1"},
         "iterations.1.prev"),
        ({"iterations": {"1": {"prev": "dense"}}, "final": "iter_1"}, "iterations.1.epochs"),
        ({"iterations": {"1": {"prev": "dense", "epochs": 4, "lr_step": 2}}, "final": "iter_1"},
         "iterations.1.lr_gamma"),
        ({"final": "iter_7"}, "final"),
        ({"data": {"image_size": 64}, "model": {"arch": "inception_v3"}}, "data.image_size"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ParamsError) as err:
        repo_with(raw)
    message = str(err.value)
    assert message.startswith(f"{key}:"), message
    assert "\n" not in message


def test_iteration_chain_in_order_and_optional_schedule():
    p = repo_with({
        "iterations": {"1": {"prev": "dense", "epochs": 1},
                       "2": {"prev": "iter_1", "epochs": 3, "lr_step": 2, "lr_gamma": 0.5}},
        "final": "iter_2",
    })
    assert p.iteration_models() == ["iter_1", "iter_2"]
    assert (p.iterations["1"].lr_step, p.iterations["1"].lr_gamma) == (0, 1.0)
    assert (p.iterations["2"].epochs, p.iterations["2"].lr_step, p.iterations["2"].lr_gamma) == (
        3, 2, 0.5)


def test_load_params_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(merge_preset(REPO_RAW, {"train": {"lr_head": -1.0}})))
    with pytest.raises(ParamsError, match=r"params\.yaml: train\.lr_head: must be > 0"):
        load_params(path)
    path.write_text(yaml.safe_dump({"train": {"lr_head": 0.1}}))
    with pytest.raises(ParamsError, match=r"params\.yaml: seed: missing key"):
        load_params(path)
    path.write_text("train: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")
