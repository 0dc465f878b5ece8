"""Stage-level tests of clip_pretrain, clip_embed and align (and the explain stage's concepts).

The stage scripts run in-process (``runpy``) on a tiny generated synth dataset and a tiny
Q-SENN model with a hand-made sparse layer; the CLIP model is the shipped QSENN-Tiny config,
trained for one epoch. Nothing is downloaded.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from qsenn_core import clip_model as cm
from qsenn_core.alignment import attribute_prompts
from qsenn_core.concepts import read_concept_names
from qsenn_core.data import load_dataset
from qsenn_core.embedding_files import read_embeddings, write_embeddings
from qsenn_core.errors import DataError
from qsenn_core.feature_files import SplitFeatures, write_features
from qsenn_core.model_file import save_model
from qsenn_core.params import load_params
from qsenn_core.sparse_layer import SparseLayer, attach_sparse_layer
from qsenn_core.steps import align as align_step
from qsenn_core.steps.clip_weights import load_clip
from qsenn_core.steps.common import new_model
from qsenn_core.steps.extract import extract
from qsenn_core.synth import generate_synth

REPO = Path(__file__).resolve().parents[1]
N_CLASSES, N_FEATURES, WIDTH = 4, 6, 16


pytestmark = pytest.mark.usefixtures("one_thread")


def _params_yaml(root: Path, **clip: object) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["synth"].update(n_classes=N_CLASSES, image_size=32, train_per_class=6, test_per_class=2)
    raw["data"].update(root=str(root / "data"), image_size=32)
    raw["model"].update(width=WIDTH)
    raw["select"]["n_features"] = N_FEATURES
    raw["quant"]["n_per_class"] = 2
    raw["device"] = "cpu"
    raw["clip"]["pretrain"].update(epochs=1, batch_size=8, n_captions=2, threads=1)
    raw["clip"].update(clip)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny synth data, a final model with a sparse layer and its features."""
    root = tmp_path_factory.mktemp("clip_project")
    params = load_params(_params_yaml(root))
    generate_synth(root / "data", params.synth)
    torch.manual_seed(0)
    model = new_model(params)
    rng = np.random.default_rng(0)
    weight = rng.choice([-1.0, 0.0, 1.0], size=(N_CLASSES, N_FEATURES), p=[0.2, 0.4, 0.4])
    weight[:, 0] = 1.0  # feature 0 is assigned to every class
    layer = SparseLayer(torch.tensor([3, 0, 7, 1, 12, 5]), torch.tensor(weight),
                        torch.zeros(N_CLASSES), torch.zeros(N_FEATURES), torch.ones(N_FEATURES))
    attach_sparse_layer(model, layer, dropout=0.1)
    save_model(model, root / "models" / "final.pt")
    extract(params, root / "models" / "final.pt", root / "features" / "final.parquet")
    return root


def run_stage(script: str, *argv: str | Path) -> int:
    """Run ``stages/<script>`` as DVC would (``__main__``), in-process; return the exit code."""
    old = sys.argv
    sys.argv = [str(REPO / "stages" / script), *map(str, argv)]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as done:
        return int(done.code or 0)
    finally:
        sys.argv = old
    return 0


def _align_args(root: Path, out: str) -> list[str | Path]:
    return [root / "features/final.parquet", root / "models/final.pt",
            root / "features/clip.parquet", root / "models/clip.pt",
            "--table", root / out / "alignment.csv", "--metrics", root / out / "alignment.json",
            "--figure", root / out / "figure_6a.png",
            "--params", root / "params.yaml"]


def test_stages_pretrain_embed_align_and_explain_concepts(project: Path) -> None:
    root, params_file = project, project / "params.yaml"
    weights = root / "models/clip.pt"
    assert run_stage("clip_pretrain.py", weights, "--params", params_file) == 0
    state = torch.load(weights, weights_only=True)
    assert "logit_scale" in state and "visual.conv1.weight" in state
    # deterministic for the seed: a rerun writes the same tensors
    again = root / "models/clip_again.pt"
    assert run_stage("clip_pretrain.py", again, "--params", params_file) == 0
    for key, value in torch.load(again, weights_only=True).items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)

    assert run_stage("clip_embed.py", weights, root / "features/clip.parquet",
                     "--params", params_file) == 0
    ids, emb = read_embeddings(root / "features/clip.parquet")
    index = load_dataset("synth", root / "data")
    np.testing.assert_array_equal(ids, index.image_ids[index.split("train")])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb.shape == (N_CLASSES * 6, 64)  # QSENN-Tiny's embed_dim

    assert run_stage("align.py", *_align_args(root, "reports")) == 0
    table = pd.read_csv(root / "reports/alignment.csv", keep_default_na=False)
    assert table["feature"].tolist() == [3, 0, 7, 1, 12, 5]  # the selection, in its order
    assert [c for c in table.columns if c.startswith("concept_")] == [
        "concept_1", "concept_2", "concept_3"]
    assert (table["alignment_1"] >= table["alignment_2"]).all()
    assert table.loc[0, "n_classes"] == N_CLASSES  # feature 0 is used by every class
    metrics = json.loads((root / "reports/alignment.json").read_text())
    for prefix in ("", "random_", "static_"):
        for name in ("pos_full", "pos_pred", "pos_rel_pred"):
            assert np.isfinite(metrics[f"{prefix}{name}"])
    assert metrics["random_pos_full"] == 20.0  # (39 + 1) / 2 for the 39 synth attributes
    assert metrics["random_pos_rel_pred"] == 50.0
    assert 0.0 <= metrics["pos_rel_pred"] <= 100.0
    assert metrics["n_features"] == N_FEATURES and metrics["n_concepts"] == 39
    assert (root / "reports/figure_6a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the explain report takes its concept names from the table
    names = read_concept_names(root / "reports/alignment.csv")
    assert names == dict(zip(table["feature"], table["concept_1"], strict=True))


def test_align_finds_planted_concepts(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Wiring of align: with D = the attribute annotations and P = one-hot prompts, S is the
    annotation matrix, A^clip of an attribute indicator feature peaks at that attribute, and all
    three positions are perfect (pos_full 1, pos_rel_pred 100%)."""
    root = project
    index = load_dataset("synth", root / "data")
    train = index.split("train")
    present = index.attributes[train].astype(np.float64)
    # features = indicators of 6 attributes that vary over the training images
    varying = [j for j in range(present.shape[1]) if 0 < present[:, j].sum() < len(train)]
    planted = varying[:N_FEATURES]
    feats = root / "features/planted.parquet"
    test = index.split("test")
    write_features(feats, index.image_ids, train=SplitFeatures(
        present[:, planted].astype(np.float32), index.labels[train], train), test=SplitFeatures(
        np.zeros((len(test), N_FEATURES), np.float32), index.labels[test], test))
    d = present + 1e-3  # L2 rows of the annotations: "CLIP" sees exactly the attributes
    write_embeddings(root / "features/planted_clip.parquet", index.image_ids[train],
                     index.labels[train], d / np.linalg.norm(d, axis=1, keepdims=True))
    monkeypatch.setattr(align_step, "load_clip", lambda params, weights: (None, None, None))
    monkeypatch.setattr(align_step.cm, "embed_texts",
                        lambda model, tok, texts, device: np.eye(len(texts), dtype=np.float32))
    params = load_params(root / "params.yaml")
    out = root / "planted"
    metrics = align_step.align(params, feats, root / "models/final.pt",
                               root / "features/planted_clip.parquet", root / "models/clip.pt",
                               out / "alignment.csv", out / "alignment.json", out / "fig.png")
    assert metrics["pos_full"] == 1.0 and metrics["pos_pred"] == 1.0
    assert metrics["pos_rel_pred"] == 100.0
    table = pd.read_csv(out / "alignment.csv")
    phrases = [p.phrase for p in attribute_prompts(index.attribute_names, "bird")]
    assert table["concept_1"].tolist() == [phrases[j] for j in planted]


def test_bad_inputs_are_one_line_and_write_nothing(project: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = project
    index = load_dataset("synth", root / "data")
    ids = index.image_ids[index.split("train")]
    short = tmp_path / "short.parquet"  # embeddings that miss the first training image
    emb = np.eye(len(ids), 8, dtype=np.float32)[1:]
    write_embeddings(short, ids[1:], np.zeros(len(ids) - 1, np.int64), emb)
    args = _align_args(root, "bad")
    args[2] = short
    capsys.readouterr()
    assert run_stage("align.py", *args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "short.parquet has no row for image id" in err
    assert not (root / "bad").exists() or not any((root / "bad").iterdir())
    # a missing CLIP weights file: one line naming it, no output
    assert run_stage("clip_embed.py", tmp_path / "nope.pt", tmp_path / "e.parquet",
                     "--params", root / "params.yaml") == 1
    assert "nope.pt" in capsys.readouterr().err
    assert not (tmp_path / "e.parquet").exists()
    # a bad clip param stops before any work, naming the key
    bad = tmp_path / "bad.yaml"
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["clip"]["pretrain"]["batch_size"] = 1
    bad.write_text(yaml.safe_dump(raw))
    assert run_stage("clip_pretrain.py", tmp_path / "c.pt", "--params", bad) == 1
    assert "clip.pretrain.batch_size" in capsys.readouterr().err
    assert not (tmp_path / "c.pt").exists()


def test_pretrain_stage_stores_a_given_checkpoint_unchanged(project: Path, tmp_path: Path) -> None:
    """clip.pretrained = a checkpoint path: no training, models/clip.pt holds those weights."""
    torch.manual_seed(5)
    model, _, _ = cm.create_clip(cm.TINY_MODEL, "")
    source = tmp_path / "given.pt"
    torch.save(model.state_dict(), source)
    params_file = tmp_path / "params.yaml"
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["clip"]["pretrained"] = str(source)
    params_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "clip.pt"
    assert run_stage("clip_pretrain.py", out, "--params", params_file) == 0
    stored = torch.load(out, weights_only=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(stored[key], value, rtol=0, atol=0, msg=key)
    params = load_params(params_file)
    loaded, _, _ = load_clip(params, out)
    torch.testing.assert_close(loaded.logit_scale.detach(), model.logit_scale.detach())


def test_read_concept_names_rejects_other_tables(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("feature,concept_1\n17,red crown color\n3,dagger-like bill shape\n")
    assert read_concept_names(path) == {17: "red crown color", 3: "dagger-like bill shape"}
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not an alignment table"):
        read_concept_names(path)
    with pytest.raises(DataError, match="not found"):
        read_concept_names(tmp_path / "missing.csv")

