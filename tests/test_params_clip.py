"""The clip section of params.yaml: types, ranges, the list of non-adjectives, one-line errors."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from qsenn_core.alignment import DEFAULT_NON_ADJECTIVES
from qsenn_core.errors import ParamsError
from qsenn_core.params import CLIP_SCRATCH, Params, load_params, params_from_dict
from qsenn_core.presets import load_preset, merge_preset

REPO = Path(__file__).resolve().parents[1]
REPO_RAW: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())


def with_clip(clip: dict[str, Any]) -> Params:
    """The repo's params.yaml with ``clip`` merged into its clip section."""
    return params_from_dict(merge_preset(REPO_RAW, {"clip": clip}))


def test_repo_trains_the_tiny_model_and_the_paper_preset_uses_vit_b_32():
    repo = load_params(REPO / "params.yaml")
    assert (repo.clip.model, repo.clip.pretrained) == ("QSENN-Tiny", CLIP_SCRATCH)
    # the supplement's nouns ("Prompts"), also the prompt builders' default argument
    assert repo.clip.non_adjectives == DEFAULT_NON_ADJECTIVES
    assert "needle" in repo.clip.non_adjectives
    paper = load_preset(REPO / "params" / "paper-cub-resnet50.yaml", REPO / "params.yaml")
    assert (paper.clip.model, paper.clip.pretrained) == ("ViT-B-32", "openai")
    assert paper.clip.non_adjectives == repo.clip.non_adjectives


def test_non_adjectives_is_a_list_of_strings():
    p = with_clip({"non_adjectives": ["needle", "hooked seabird"]})
    assert p.clip.non_adjectives == ("needle", "hooked seabird")
    assert with_clip({"non_adjectives": []}).clip.non_adjectives == ()
    with pytest.raises(ParamsError, match=r"^clip\.non_adjectives: expected a list"):
        with_clip({"non_adjectives": "needle"})
    with pytest.raises(ParamsError, match=r"^clip\.non_adjectives\[1\]: expected a string"):
        with_clip({"non_adjectives": ["needle", 3]})
    with pytest.raises(ParamsError, match=r"^clip\.non_adjectives\[0\]: must not be empty"):
        with_clip({"non_adjectives": [" "]})


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
        with_clip(raw)
    msg = str(info.value)
    assert msg.startswith(f"{key}:") and "\n" not in msg


def test_scientific_lr_string(tmp_path):
    raw = merge_preset(REPO_RAW, {})
    raw["clip"]["pretrain"]["lr"] = "5e-3"  # YAML 1.1 reads this as a string
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path).clip.pretrain.lr == 5e-3
