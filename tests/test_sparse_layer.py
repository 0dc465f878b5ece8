"""Tests of the sparse quantized final layer: formula, frozen parts, file round trip, attaching."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from qsenn_core.errors import DataError, QsennError
from qsenn_core.sparse_layer import (
    SparseLayer,
    attach_sparse_layer,
    load_sparse_layer,
    save_sparse_layer,
)


def make_layer(train_standardization: bool = False, seed: int = 0) -> SparseLayer:
    g = torch.Generator().manual_seed(seed)
    selection = torch.tensor([5, 1, 7])
    weight = torch.randint(-1, 2, (4, 3), generator=g).float() * 0.7  # ternary W^Q, alpha 0.7
    return SparseLayer(selection, weight, torch.randn(4, generator=g),
                       torch.randn(3, generator=g), torch.rand(3, generator=g) + 0.5,
                       alpha=0.7, train_standardization=train_standardization)


class Dense(nn.Module):
    """Minimal stand-in with the QSENN attributes that attach_sparse_layer touches."""

    def __init__(self, n_features: int = 8, n_classes: int = 4) -> None:
        super().__init__()
        self.n_features = n_features
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(n_features, n_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))


def test_forward_is_standardized_selection_times_wq_plus_bias() -> None:
    layer = make_layer()
    f = torch.randn(6, 8)
    expected = ((f[:, [5, 1, 7]] - layer.mean) / layer.std) @ layer.weight.T + layer.bias
    torch.testing.assert_close(layer(f), expected)
    assert layer.n_classes == 4 and layer.n_selected == 3


@pytest.mark.parametrize("train_std", [True, False])
def test_only_standardization_can_be_trained(train_std: bool) -> None:
    layer = make_layer(train_standardization=train_std)
    trainable = {name for name, p in layer.named_parameters() if p.requires_grad}
    assert trainable == ({"mean", "std"} if train_std else set())
    assert {"selection", "weight", "bias"} <= set(dict(layer.named_buffers()))
    if train_std:
        layer(torch.randn(5, 8)).sum().backward()
        assert layer.mean.grad is not None and layer.std.grad is not None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"selection": torch.tensor([1, 1, 2])}, "distinct"),
        ({"weight": torch.zeros(4, 2)}, "weight"),
        ({"bias": torch.zeros(3)}, "bias"),
        ({"std": torch.tensor([1.0, 0.0, 1.0])}, "std must be finite and nonzero"),
        ({"mean": torch.zeros(2)}, "mean"),
    ],
)
def test_inconsistent_tensors_are_one_line_errors(kwargs: dict, match: str) -> None:
    args = {"selection": torch.tensor([0, 1, 2]), "weight": torch.zeros(4, 3),
            "bias": torch.zeros(4), "mean": torch.zeros(3), "std": torch.ones(3)}
    args.update(kwargs)
    with pytest.raises(QsennError, match=match) as err:
        SparseLayer(**args)
    assert "\n" not in str(err.value)


def test_save_load_round_trip_and_identical_bytes(tmp_path) -> None:
    layer = make_layer()
    save_sparse_layer(tmp_path / "a" / "sparse.pt", layer)
    save_sparse_layer(tmp_path / "b" / "sparse.pt", make_layer())
    digest = [hashlib.sha256((tmp_path / d / "sparse.pt").read_bytes()).hexdigest() for d in "ab"]
    assert digest[0] == digest[1]
    raw = torch.load(tmp_path / "a" / "sparse.pt", weights_only=True)
    assert set(raw) == {"selection", "weight", "bias", "mean", "std", "alpha"}
    loaded = load_sparse_layer(tmp_path / "a" / "sparse.pt", train_standardization=True)
    assert loaded.alpha == pytest.approx(0.7)
    assert loaded.mean.requires_grad
    f = torch.randn(3, 8)
    torch.testing.assert_close(loaded(f), layer(f))


def test_load_bad_files_are_data_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_sparse_layer(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="not a readable"):
        load_sparse_layer(tmp_path / "junk.pt")
    torch.save({"selection": torch.tensor([0])}, tmp_path / "partial.pt")
    with pytest.raises(DataError, match="missing weight"):
        load_sparse_layer(tmp_path / "partial.pt")


def test_attach_replaces_head_and_dropout() -> None:
    model = Dense()
    layer = make_layer()
    assert attach_sparse_layer(model, layer, dropout=0.1) is model
    assert model.head is layer
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.1
    model.eval()
    f = torch.randn(2, 8)
    torch.testing.assert_close(model(f), layer(f))
    # the attached layer travels in the model's state dict and loads into a fresh copy
    other = attach_sparse_layer(Dense(), make_layer(seed=1), dropout=0.1)
    other.load_state_dict(model.state_dict())
    other.eval()
    torch.testing.assert_close(other(f), model(f))


def test_attach_rejects_mismatched_layers() -> None:
    with pytest.raises(QsennError, match="only 6 features"):
        attach_sparse_layer(Dense(n_features=6), make_layer(), dropout=0.1)
    with pytest.raises(QsennError, match="classes"):
        attach_sparse_layer(Dense(n_classes=5), make_layer(), dropout=0.1)
