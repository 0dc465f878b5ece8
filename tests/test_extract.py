"""Tests of feature extraction and the Parquet feature file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import Dataset

from qsenn_core.backbones import build_model
from qsenn_core.errors import DataError
from qsenn_core.extract import extract_features
from qsenn_core.feature_files import SplitFeatures, read_features, write_features

CPU = torch.device("cpu")


class Images(Dataset):
    """Random 32 px images; yields (image, label, position) with positions offset by ``start``."""

    def __init__(self, n: int, start: int = 0, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 3, 32, 32, generator=g)
        self.labels = torch.arange(n) % 3
        self.start = start

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i]), self.start + i


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_model("small_cnn", 3, width=8, dropout=0.5)
    net.train()  # extraction must switch to eval mode itself
    return net


def test_features_are_eval_mode_gap_in_dataset_order(model) -> None:
    data = Images(7, start=10)
    out = extract_features(model, data, batch_size=3, device=CPU)
    assert out.features.dtype == np.float32 and out.features.shape == (7, 8)
    assert out.positions.tolist() == list(range(10, 17))
    assert out.labels.tolist() == data.labels.tolist()
    model.eval()
    with torch.no_grad():
        expected = model(data.images).features.numpy()
    # eval mode: BatchNorm uses running statistics, so the batch size does not matter
    np.testing.assert_allclose(out.features, expected, rtol=1e-5, atol=1e-6)
    again = extract_features(model, data, batch_size=7, device=CPU)
    np.testing.assert_allclose(again.features, out.features, rtol=1e-5, atol=1e-6)


def test_selection_keeps_only_selected_columns(model) -> None:
    data = Images(5)
    full = extract_features(model, data, batch_size=5, device=CPU)
    sel = extract_features(model, data, batch_size=5, device=CPU, selection=torch.tensor([6, 2]))
    np.testing.assert_array_equal(sel.features, full.features[:, [6, 2]])


def test_empty_split_is_a_data_error(model) -> None:
    with pytest.raises(DataError, match="empty"):
        extract_features(model, Images(0), batch_size=4, device=CPU)


def split(n: int, start: int, d: int = 4, seed: int = 0) -> SplitFeatures:
    rng = np.random.default_rng(seed)
    return SplitFeatures(rng.standard_normal((n, d)).astype(np.float32),
                         np.arange(n, dtype=np.int64) % 3, np.arange(start, start + n))


def test_parquet_layout_round_trip_and_identical_bytes(tmp_path: Path) -> None:
    image_ids = np.arange(100, 109, dtype=np.int64)  # the dataset's own ids, by position
    train, test = split(5, 0), split(4, 5, seed=1)
    write_features(tmp_path / "a" / "features.parquet", image_ids, train=train, test=test)
    write_features(tmp_path / "b" / "features.parquet", image_ids, train=train, test=test)
    a, b = (tmp_path / d / "features.parquet" for d in "ab")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()

    table = pq.read_table(a)
    assert table.column_names == ["image_id", "label", "split", "f0", "f1", "f2", "f3"]
    assert str(table.schema.field("f0").type) == "float"
    assert str(table.schema.field("image_id").type) == "int64"
    assert table.column("split").to_pylist() == ["train"] * 5 + ["test"] * 4

    X, y, ids = read_features(a, "test")
    np.testing.assert_array_equal(X, test.features)
    assert X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, test.labels)
    np.testing.assert_array_equal(ids, [105, 106, 107, 108])
    X, _, ids = read_features(a, "train")
    np.testing.assert_array_equal(X, train.features)
    np.testing.assert_array_equal(ids, [100, 101, 102, 103, 104])


def test_many_columns_keep_numeric_order(tmp_path: Path) -> None:
    train, test = split(3, 0, d=12), split(2, 3, d=12)
    write_features(tmp_path / "f.parquet", np.arange(5), train=train, test=test)
    X, _, _ = read_features(tmp_path / "f.parquet", "train")
    np.testing.assert_array_equal(X, train.features)  # f10 after f9, not after f1


def test_bad_inputs_are_one_line_data_errors(tmp_path: Path) -> None:
    empty = SplitFeatures(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, int))
    with pytest.raises(DataError, match="test split is empty"):
        write_features(tmp_path / "f.parquet", np.arange(5), train=split(5, 0), test=empty)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="not found"):
        read_features(tmp_path / "f.parquet", "train")
    (tmp_path / "junk.parquet").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable Parquet") as err:
        read_features(tmp_path / "junk.parquet", "train")
    assert "\n" not in str(err.value)
    write_features(tmp_path / "f.parquet", np.arange(9), train=split(5, 0), test=split(4, 5))
    with pytest.raises(DataError, match="unknown split"):
        read_features(tmp_path / "f.parquet", "val")


def test_extract_stage_uses_test_transform_for_both_splits(tmp_path: Path) -> None:
    """The extract stage's step (what dvc runs): both splits through the test transform, eval
    mode, rows keyed by image id, a fine-tuned model's selection applied."""
    import yaml

    from qsenn_core.data import ImageDataset, build_transform, load_dataset
    from qsenn_core.model_file import save_model
    from qsenn_core.params import load_params
    from qsenn_core.sparse_layer import SparseLayer, attach_sparse_layer
    from qsenn_core.steps.common import new_model
    from qsenn_core.steps.extract import extract
    from qsenn_core.synth import generate_synth

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["synth"].update(n_classes=3, image_size=32, train_per_class=3, test_per_class=2)
    raw["data"].update(root=str(tmp_path / "data"), image_size=32)
    raw["model"].update(width=8)
    raw["select"]["n_features"] = 4
    raw["quant"]["n_per_class"] = 2
    raw["device"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    generate_synth(tmp_path / "data", params.synth)
    torch.manual_seed(0)
    model = new_model(params)
    save_model(model, tmp_path / "dense.pt")
    extract(params, tmp_path / "dense.pt", tmp_path / "dense.parquet")

    index = load_dataset("synth", tmp_path / "data")
    plain = ImageDataset(index, "train", build_transform("synth", 32, train=False))
    expected = extract_features(model, plain, batch_size=5, device=CPU).features
    X, y, ids = read_features(tmp_path / "dense.parquet", "train")
    np.testing.assert_allclose(X, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ids, index.image_ids[index.split("train")])
    np.testing.assert_array_equal(y, index.labels[index.split("train")])
    assert len(read_features(tmp_path / "dense.parquet", "test")[2]) == 3 * 2

    selection = torch.tensor([5, 1, 6, 2])
    layer = SparseLayer(selection, torch.ones(3, 4), torch.zeros(3), torch.zeros(4), torch.ones(4))
    attach_sparse_layer(model, layer, dropout=0.1)
    save_model(model, tmp_path / "iter_1.pt")
    extract(params, tmp_path / "iter_1.pt", tmp_path / "iter_1.parquet")
    X1, _, _ = read_features(tmp_path / "iter_1.parquet", "train")
    np.testing.assert_allclose(X1, expected[:, selection.numpy()], rtol=1e-5, atol=1e-6)
