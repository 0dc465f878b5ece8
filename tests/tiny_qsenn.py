"""A tiny trained-looking Q-SENN for the tests of ``qsenn`` (CLI, export, atlas): seconds on CPU.

Synthetic data (3 classes, 32 px), a random ``small_cnn`` of width 8 with a ternary sparse layer
on 4 selected features (standardized with the features' real training mean and std), its model
file with and without metadata, its features file and a small alignment table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from qsenn_core.backbones import QSENN, build_model
from qsenn_core.data import DatasetIndex, ImageDataset, build_transform, load_dataset
from qsenn_core.data.base import load_rgb
from qsenn_core.extract import extract_features
from qsenn_core.feature_files import write_features
from qsenn_core.model_file import load_model, metadata_from_params, save_model
from qsenn_core.params import Params, load_params
from qsenn_core.sparse_layer import SparseLayer, attach_sparse_layer
from qsenn_core.synth import generate_synth

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
N_CLASSES, WIDTH, IMAGE_SIZE = 3, 8, 32
SELECTION = (5, 1, 6, 3)
#: W^Q: every class has 2 or 3 features, signs mixed; feature 6 (position 2) serves all classes.
WEIGHT = 0.7 * torch.tensor([[1.0, 0.0, 1.0, -1.0],
                             [0.0, 1.0, -1.0, 0.0],
                             [-1.0, 0.0, 1.0, 1.0]])


@dataclass(frozen=True)
class Tiny:
    """Paths and objects of the tiny project."""

    root: Path
    params_path: Path
    params: Params
    index: DatasetIndex
    model_path: Path  #: with metadata
    bare_model_path: Path  #: the same weights without metadata (files written before it)
    features_path: Path
    concepts_path: Path


def write_params(root: Path) -> Path:
    """The repo's params.yaml shrunk to the tiny data and model, written to ``root``."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["synth"].update(n_classes=N_CLASSES, image_size=IMAGE_SIZE, train_per_class=5,
                        test_per_class=2)
    raw["data"].update(root=str(root / "data"), image_size=IMAGE_SIZE)
    raw["model"].update(arch="small_cnn", width=WIDTH)
    raw["select"]["n_features"] = len(SELECTION)
    raw["quant"]["n_per_class"] = 2
    raw["explain"].update(n_classes=2, n_images=3)
    raw["device"] = "cpu"
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def pipeline_model(params: Params, path: Path) -> QSENN:
    """The model as the pipeline's stages load it (build_model + load_model), in eval mode."""
    m = params.model
    model = build_model(m.arch, params.n_classes, width=m.width, dropout=m.dropout,
                        reduced_strides=m.reduced_strides)
    return load_model(model, path).eval()


def make_tiny(root: Path) -> Tiny:
    """Write the tiny project under ``root``."""
    params = load_params(write_params(root))
    generate_synth(root / "data", params.synth)
    index = load_dataset(params.data.name, params.data.root)
    torch.manual_seed(0)
    model = build_model("small_cnn", N_CLASSES, width=WIDTH)
    test_tf = build_transform(params.data.name, IMAGE_SIZE, train=False)
    splits = {s: ImageDataset(index, s, test_tf) for s in ("train", "test")}
    selection = torch.tensor(SELECTION)
    train = extract_features(model, splits["train"], batch_size=8, device=CPU, selection=selection)
    mean = torch.from_numpy(train.features.mean(axis=0))
    std = torch.from_numpy(train.features.std(axis=0)).clamp_min(1e-3)
    layer = SparseLayer(selection, WEIGHT, torch.tensor([0.1, -0.2, 0.05]), mean, std,
                        alpha=0.7)
    attach_sparse_layer(model, layer, dropout=0.1)
    model_path, bare_path = root / "models" / "iter_3.pt", root / "models" / "bare.pt"
    save_model(model, model_path, metadata=metadata_from_params(params, index))
    save_model(model, bare_path)
    features = {s: extract_features(model, d, batch_size=8, device=CPU, selection=selection)
                for s, d in splits.items()}
    features_path = root / "features" / "iter_3.parquet"
    write_features(features_path, index.image_ids, train=features["train"],
                   test=features["test"])
    concepts_path = root / "reports" / "alignment.csv"
    concepts_path.parent.mkdir(parents=True)
    rows = ["feature,concept_1,alignment_1,concept_2,alignment_2,n_classes,classes_pos,"
            "classes_neg"]
    rows += [f"{f},has_wing_color::c{f},0.{f}1,has_bill_shape::s{f},0.0{f},1,,"
             for f in SELECTION]
    concepts_path.write_text("\n".join(rows) + "\n")
    return Tiny(root, root / "params.yaml", params, index, model_path, bare_path, features_path,
                concepts_path)


def split_images(tiny: Tiny) -> list[Path]:
    """The paths of the test split's images."""
    return [tiny.index.image_paths[p] for p in tiny.index.split("test")]


def pipeline_logits(tiny: Tiny, images: list[Path]) -> torch.Tensor:
    """Logits of the pipeline's model for image files, with the pipeline's test transform, one
    image per forward pass as ``qsenn`` runs them (on CPU the batch size changes the last bits)."""
    tf = build_transform(tiny.params.data.name, IMAGE_SIZE, train=False)
    model = pipeline_model(tiny.params, tiny.model_path)
    with torch.no_grad():
        return torch.cat([model(tf(load_rgb(p, "test"))[None]).logits for p in images])

