"""The clip section of params.yaml: types, ranges, the list of non-adjectives, one-line errors."""

from pathlib import Path

import pytest
import yaml

from qsenn_core.alignment import DEFAULT_NON_ADJECTIVES
from qsenn_core.errors import ParamsError
from qsenn_core.params import CLIP_SCRATCH, load_params, params_from_dict

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_papers_and_the_repo_trains_the_tiny_model():
    p = params_from_dict({})
    assert (p.clip.model, p.clip.pretrained) == ("ViT-B-32", "openai")
    assert p.clip.non_adjectives == DEFAULT_NON_ADJECTIVES
    repo = load_params(REPO / "params.yaml")
    assert (repo.clip.model, repo.clip.pretrained) == ("QSENN-Tiny", CLIP_SCRATCH)
    assert "needle" in repo.clip.non_adjectives


def test_non_adjectives_is_a_list_of_strings():
    p = params_from_dict({"clip": {"non_adjectives": ["needle", "hooked seabird"]}})
    assert p.clip.non_adjectives == ("needle", "hooked seabird")
    assert params_from_dict({"clip": {"non_adjectives": []}}).clip.non_adjectives == ()
    with pytest.raises(ParamsError, match=r"^clip\.non_adjectives: expected a list"):
        params_from_dict({"clip": {"non_adjectives": "needle"}})
    with pytest.raises(ParamsError, match=r"^clip\.non_adjectives\[1\]: expected a string"):
        params_from_dict({"clip": {"non_adjectives": ["needle", 3]}})
    with pytest.raises(ParamsError, match=r"^clip\.non_adjectives\[0\]: must not be empty"):
        params_from_dict({"clip": {"non_adjectives": [" "]}})


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"model": ""}, "clip.model"),
        ({"pretrained": " "}, "clip.pretrained"),
        ({"batch_size": 0}, "clip.batch_size"),
        ({"top_k": 0}, "clip.top_k"),
        ({"top_k": "three"}, "clip.top_k"),
        ({"pretrain": {"epochs": 0}}, "clip.pretrain.epochs"),
        ({"pretrain": {"batch_size": 1}}, "clip.pretrain.batch_size"),
        ({"pretrain": {"lr": 0}}, "clip.pretrain.lr"),
        ({"pretrain": {"weight_decay": -0.1}}, "clip.pretrain.weight_decay"),
        ({"pretrain": {"n_captions": 0}}, "clip.pretrain.n_captions"),
        ({"pretrain": {"max_attributes": 0}}, "clip.pretrain.max_attributes"),
        ({"pretrain": {"threads": -1}}, "clip.pretrain.threads"),
        ({"pretrain": {"epoch": 3}}, "clip.pretrain.epoch"),
        ({"pretrian": {}}, "clip.pretrian"),
    ],
)
def test_bad_clip_values_name_the_key(raw, key):
    with pytest.raises(ParamsError) as info:
        params_from_dict({"clip": raw})
    msg = str(info.value)
    assert msg.startswith(f"{key}:") and "\n" not in msg


def test_scientific_lr_string(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["clip"]["pretrain"]["lr"] = "5e-3"  # YAML 1.1 reads this as a string
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path).clip.pretrain.lr == 5e-3
