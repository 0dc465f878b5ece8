"""The sparse, quantized final layer C(f) = W^Q f* + b of a Q-SENN (paper eq. 1, Method).

After the sparse solve and the quantization (eq. 3-5) the dense head of the model is replaced by
a :class:`SparseLayer`: it picks the n_f* selected features f* out of the n_f features f,
standardizes them with the mean and standard deviation of the training features (as the
authors' code does; the paper writes the layer without it) and applies the ternary matrix
W^Q in {-alpha, 0, alpha}^(n_c x n_f*) and the bias b. W^Q, b and the selection stay frozen during
fine-tuning; the standardization is trainable when ``finetune.train_standardization`` is set.

The layer is stored as a flat dict of tensors ``{selection, weight, bias, mean, std, alpha}``
(loadable with ``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from qsenn_core.errors import DataError, QsennError
from qsenn_core.io import atomic_path

#: Keys of a saved sparse layer file.
#: Smallest |std| the layer divides by.
STD_FLOOR = 1e-6

SPARSE_LAYER_KEYS: tuple[str, ...] = ("selection", "weight", "bias", "mean", "std", "alpha")


class SparseLayer(nn.Module):
    """C(f) = W^Q ((f[selection] - mean) / std) + b with W^Q, b and the selection frozen.

    ``weight``, ``bias`` and ``selection`` are buffers (part of the state dict, never optimized);
    ``mean`` and ``std`` are parameters whose ``requires_grad`` is ``train_standardization``.
    ``weight`` is W^Q, the matrix the Feature Diversity Loss (eq. 2) uses during fine-tuning.
    """

    selection: Tensor
    weight: Tensor
    bias: Tensor

    def __init__(
        self,
        selection: Tensor,
        weight: Tensor,
        bias: Tensor,
        mean: Tensor,
        std: Tensor,
        *,
        alpha: float = 1.0,
        train_standardization: bool = False,
    ) -> None:
        super().__init__()
        selection = torch.as_tensor(selection).detach().to(torch.int64).clone()
        weight = torch.as_tensor(weight).detach().to(torch.float32).clone()
        bias = torch.as_tensor(bias).detach().to(torch.float32).clone()
        mean = torch.as_tensor(mean).detach().to(torch.float32).clone()
        std = torch.as_tensor(std).detach().to(torch.float32).clone()
        _check_shapes(selection, weight, bias, mean, std)
        self.register_buffer("selection", selection)
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.mean = nn.Parameter(mean, requires_grad=train_standardization)
        self.std = nn.Parameter(std, requires_grad=train_standardization)
        self.alpha = float(alpha)

    @property
    def n_classes(self) -> int:
        """n_c, the number of outputs."""
        return int(self.weight.shape[0])

    @property
    def n_selected(self) -> int:
        """n_f*, the number of selected features."""
        return int(self.selection.numel())

    def standardize(self, features: Tensor) -> Tensor:
        """The selected, standardized features (f[selection] - mean) / |std|, shape (B, n_f*).

        With ``train_standardization`` SGD may push a std through zero; dividing by |std|
        (floored at ``STD_FLOOR``) keeps the layer finite and the signs of W^Q meaningful.
        """
        return (features[:, self.selection] - self.mean) / self.std.abs().clamp_min(STD_FLOOR)

    def forward(self, features: Tensor) -> Tensor:
        """Logits y = W^Q f* + b for features of shape (B, n_f) (paper, Method: y = C(f))."""
        return self.standardize(features) @ self.weight.t().to(features.dtype) + self.bias

    def extra_repr(self) -> str:
        return (f"n_selected={self.n_selected}, n_classes={self.n_classes}, alpha={self.alpha:g}, "
                f"train_standardization={self.mean.requires_grad}")


def _check_shapes(selection: Tensor, weight: Tensor, bias: Tensor, mean: Tensor,
                  std: Tensor) -> None:
    """Raise a one-line :class:`QsennError` when the tensors do not form one layer."""
    if selection.ndim != 1 or selection.numel() == 0:
        raise QsennError(f"sparse layer: selection must be a non-empty vector, "
                         f"got shape {tuple(selection.shape)}")
    n_sel = selection.numel()
    if selection.unique().numel() != n_sel or int(selection.min()) < 0:
        raise QsennError("sparse layer: selection must hold distinct non-negative indices")
    if weight.ndim != 2 or weight.shape[1] != n_sel:
        raise QsennError(f"sparse layer: weight must be (n_classes, {n_sel}), "
                         f"got {tuple(weight.shape)}")
    if bias.shape != (weight.shape[0],):
        raise QsennError(f"sparse layer: bias must be ({weight.shape[0]},), "
                         f"got {tuple(bias.shape)}")
    for name, value in (("mean", mean), ("std", std)):
        if value.shape != (n_sel,):
            raise QsennError(f"sparse layer: {name} must be ({n_sel},), got {tuple(value.shape)}")
    if not bool(torch.all(torch.isfinite(std) & (std != 0))):
        raise QsennError("sparse layer: std must be finite and nonzero for every selected feature")


def sparse_layer_state(layer: SparseLayer) -> dict[str, Tensor]:
    """The flat, CPU, contiguous dict of tensors that :func:`save_sparse_layer` writes."""
    return {
        "selection": layer.selection.detach().cpu().contiguous().clone(),
        "weight": layer.weight.detach().float().cpu().contiguous().clone(),
        "bias": layer.bias.detach().float().cpu().contiguous().clone(),
        "mean": layer.mean.detach().float().cpu().contiguous().clone(),
        "std": layer.std.detach().float().cpu().contiguous().clone(),
        "alpha": torch.tensor(layer.alpha, dtype=torch.float64),
    }


def save_sparse_layer(path: str | os.PathLike[str], layer: SparseLayer) -> None:
    """Write ``layer`` atomically as a flat dict of tensors (same layer -> same bytes)."""
    with atomic_path(path) as tmp:
        torch.save(sparse_layer_state(layer), tmp)


def load_sparse_layer(path: str | os.PathLike[str], *,
                      train_standardization: bool = False) -> SparseLayer:
    """Read a file written by :func:`save_sparse_layer`; one-line :class:`DataError` if bad."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: sparse layer file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is one user-facing line
        raise DataError(f"{path}: not a readable sparse layer file "
                        f"({type(err).__name__})") from None
    if not isinstance(raw, Mapping):
        raise DataError(f"{path}: expected a dict of tensors")
    missing = [key for key in SPARSE_LAYER_KEYS if key not in raw]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}")
    if not all(isinstance(raw[key], Tensor) for key in SPARSE_LAYER_KEYS):
        raise DataError(f"{path}: every entry must be a tensor")
    try:
        return SparseLayer(raw["selection"], raw["weight"], raw["bias"], raw["mean"], raw["std"],
                           alpha=float(raw["alpha"]), train_standardization=train_standardization)
    except QsennError as err:
        raise DataError(f"{path}: {err}") from None


def sparse_layer_from_state(state: Mapping[str, Tensor], prefix: str = "head.",
                            train_standardization: bool = False) -> SparseLayer | None:
    """Rebuild the sparse layer stored under ``prefix`` in a model state dict (None if dense).

    A model state dict holds the layer's tensors but not alpha; as W^Q lies in
    {-alpha, 0, alpha} (eq. 5), alpha is recovered as max |W^Q|.
    """
    if f"{prefix}selection" not in state:
        return None
    try:
        weight = state[f"{prefix}weight"]
        return SparseLayer(state[f"{prefix}selection"], weight, state[f"{prefix}bias"],
                           state[f"{prefix}mean"], state[f"{prefix}std"],
                           alpha=float(weight.abs().max()) if weight.numel() else 0.0,
                           train_standardization=train_standardization)
    except KeyError as err:
        raise DataError(f"model state: sparse layer entry {err.args[0]} is missing") from None


class _HasHead(Protocol):
    head: nn.Module
    dropout: nn.Module
    n_features: int


def attach_sparse_layer(model: _HasHead, layer: SparseLayer, dropout: float) -> _HasHead:
    """Replace the model's final layer by ``layer`` and set the feature dropout to ``dropout``.

    The layer is moved to the device of the model's current head. Returns ``model`` (changed in
    place), e.g. ``attach_sparse_layer(model, load_sparse_layer(path), params.finetune.dropout)``.
    """
    if not 0.0 <= dropout < 1.0:
        raise QsennError(f"finetune.dropout: must be in [0, 1), got {dropout}")
    n_features = int(model.n_features)
    if int(layer.selection.max()) >= n_features:
        raise QsennError(f"sparse layer selects feature {int(layer.selection.max())} but the "
                         f"model has only {n_features} features")
    old_out = getattr(model.head, "out_features", None) or getattr(model.head, "n_classes", None)
    if old_out is not None and int(old_out) != layer.n_classes:
        raise QsennError(f"sparse layer has {layer.n_classes} classes but the model has {old_out}")
    reference = next(iter(model.head.state_dict().values()), None)
    if reference is not None:
        layer = layer.to(reference.device)
    model.head = layer
    model.dropout = nn.Dropout(dropout)
    return model
