"""params.yaml -> typed Params: types, ranges and cross-field rules, one line naming the key."""

from pathlib import Path

import pytest
import yaml

from qsenn_core.errors import ParamsError
from qsenn_core.params import Params, load_params, params_from_dict

REPO = Path(__file__).resolve().parents[1]


def test_repo_params_yaml_is_valid():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert params.data.name == "synth"
    assert params.n_classes == params.synth.n_classes
    assert params.select.n_features <= params.feature_width


def test_defaults_follow_the_paper():
    p = params_from_dict({})
    assert (p.train.batch_size, p.train.epochs, p.train.lr_backbone, p.train.lr_head) == (
        16, 150, 5e-3, 0.01)
    assert (p.train.lr_step, p.train.lr_gamma, p.train.momentum) == (30, 0.4, 0.9)
    assert (p.select.alpha, p.sparse.alpha, p.sparse.n_lambdas) == (0.8, 0.99, 100)
    assert (p.quant.n_per_class, p.quant.levels) == (5, 3)
    assert (p.finetune.dropout, p.finetune.momentum, p.finetune.lr_factor) == (0.1, 0.95, 100.0)


def test_scientific_notation_strings_are_numbers():
    # YAML 1.1 reads "1e-3" (no dot) as a string
    params = params_from_dict({"sparse": {"lambda_min_ratio": "1e-3"}})
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
        ({"iterations": {"1": {"prev": "iter_7"}}}, "iterations.1.prev"),
        ({"iterations": {"1": {"prev": "dense"}}, "final": "iter_2"}, "final"),
        ({"data": {"image_size": 64}, "model": {"arch": "inception_v3"}}, "data.image_size"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ParamsError) as err:
        params_from_dict(raw)
    message = str(err.value)
    assert message.startswith(f"{key}:"), message
    assert "\n" not in message


def test_iteration_chain_in_order():
    raw = {
        "iterations": {"1": {"prev": "dense"}, "2": {"prev": "iter_1", "epochs": 3}},
        "final": "iter_2",
    }
    p = params_from_dict(raw)
    assert p.iteration_models() == ["iter_1", "iter_2"]
    assert p.iterations["2"].epochs == 3


def test_load_params_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {"lr_head": -1.0}}))
    with pytest.raises(ParamsError, match=r"params\.yaml: train\.lr_head: must be > 0"):
        load_params(path)
    path.write_text("train: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml")
