"""Stages ``evaluate_*``: the paper's metrics for one model.

Fidelity is test accuracy; Diversity is diversity@5 (eq. 6) on the test images; Grounding is
dependence (eq. 7-8) on the raw training features with the model's predictions on them (extra
keys: ``dependence_test`` on raw and ``dependence_std_test`` on standardized test features) and
alignment r (eq. 9-10) on the training features; the
binary-feature fraction (Table 4, supplement Table 10) and correlation@5 (supplement) come from
the training features of the features the final layer uses.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from qsenn_core import metrics as M
from qsenn_core.device import prepare_model, resolve_device, to_device
from qsenn_core.errors import DataError
from qsenn_core.feature_files import read_features
from qsenn_core.io import write_json
from qsenn_core.params import Params
from qsenn_core.quantize import assignment_change
from qsenn_core.sparse_layer import SparseLayer, attach_sparse_layer, load_sparse_layer
from qsenn_core.steps.common import load_splits, trained_model

log = logging.getLogger(__name__)

K = 5  # diversity@5 and correlation@5 (paper, Table 1)


def _layer_view(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None,
                                                 torch.Tensor | None, torch.Tensor | None]:
    """(weight, selection, mean, std) of the final layer; the dense head has no selection."""
    head = model.head
    if isinstance(head, SparseLayer):
        return (head.weight.detach().cpu(), head.selection.cpu(), head.mean.detach().cpu(),
                head.std.detach().cpu())
    return model.head_weight().detach().cpu(), None, None, None


@torch.no_grad()
def _test_pass(model: torch.nn.Module, dataset, device: torch.device, batch_size: int,
               num_workers: int) -> dict[str, np.ndarray | float]:
    """Logits, labels and pooled features of the test split; diversity@5 accumulated per batch."""
    model = prepare_model(model, device).eval()
    weight, selection, _, _ = _layer_view(model)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    logits, labels, features, diversity = [], [], [], []
    for images, y, _ in tqdm(loader, desc="evaluate", unit="batch", leave=False):
        out = model(to_device(images, device))
        maps = out.feature_maps if selection is None else out.feature_maps[:, selection.to(device)]
        pred = out.logits.argmax(1)
        diversity.append(M.diversity_per_image(maps.float().cpu(), weight, pred.cpu(), k=K))
        logits.append(out.logits.float().cpu())
        labels.append(torch.as_tensor(y))
        features.append(out.features.float().cpu())
    return {"logits": torch.cat(logits).numpy(), "labels": torch.cat(labels).numpy(),
            "features": torch.cat(features).numpy(), "diversity": np.concatenate(diversity)}


def model_metrics(params: Params, model: torch.nn.Module, train_features: np.ndarray,
                  train_attributes: np.ndarray | None, dataset, *,
                  batch_size: int = 128) -> dict[str, float]:
    """All metrics of one model. ``train_features`` are aligned with the layer's weight columns.

    Percent where the paper reports percent (accuracy, diversity@5, dependence, binary features,
    correlation@5); alignment r as in the paper's tables (x100 is not applied: r is unbounded).
    """
    test = _test_pass(model, dataset, resolve_device(params.device), batch_size,
                      params.data.num_workers)
    weight, selection, mean, std = _layer_view(model)
    if train_features.shape[1] != weight.shape[1]:
        raise DataError(f"training features have {train_features.shape[1]} columns but the "
                        f"final layer has {weight.shape[1]}")
    predicted = test["logits"].argmax(1)
    raw = test["features"] if selection is None else test["features"][:, selection.numpy()]
    received = raw if mean is None else (raw - mean.numpy()) / std.numpy()
    bias = model.head.bias.detach().cpu().numpy()
    train_predicted = M.predicted_classes(train_features, weight, bias,
                                          None if mean is None else mean.numpy(),
                                          None if std is None else std.numpy())
    with_k = M.images_with_k_nonzero(weight, predicted, K)
    used = np.flatnonzero((weight != 0).any(0).numpy())
    f_used = train_features[:, used]
    n_train = len(train_features)
    result = {
        "accuracy": 100.0 * M.accuracy(predicted, test["labels"]),
        "n_features": M.n_used_features(weight),
        "features_per_class": M.features_per_class(weight),
        # eq. 6 as written: every test image; the authors' code keeps only the images whose
        # predicted class has >= 5 nonzero weights (diversity_at_5_k_nonzero)
        "diversity_at_5": 100.0 * float(test["diversity"].mean()),
        # eq. 7-8: raw pooled features f of the n_T training images with the model's
        # predictions on them; the test-set readings are extra keys
        "dependence": 100.0 * M.dependence(train_features, weight, train_predicted),
        "dependence_test": 100.0 * M.dependence(raw, weight, predicted),
        "dependence_std_test": 100.0 * M.dependence(received, weight, predicted),
        "correlation_at_5": 100.0 * M.correlation_at_k(train_features, weight, k=K),
    }
    if with_k.any():
        result["diversity_at_5_k_nonzero"] = 100.0 * float(test["diversity"][with_k].mean())
    if used.size == 0:  # a layer without weights (an over-regularized baseline) uses nothing
        log.warning("the final layer has no nonzero weight: feature metrics are 0")
        result.update(binary_features=0.0, binary_features_strict=0.0)
        return {key: float(round(value, 6)) for key, value in result.items()}
    result["binary_features"] = 100.0 * M.binary_feature_fraction(f_used)
    result["binary_features_strict"] = 100.0 * M.binary_feature_fraction(
        f_used, strict_min_cluster=n_train / params.n_classes)
    if train_attributes is not None:
        result["alignment_r"] = M.alignment_r(f_used, train_attributes)
    return {key: float(round(value, 6)) for key, value in result.items()}


def evaluate(params: Params, model_path: Path, features_path: Path, out: Path, *,
             layer_path: Path | None = None, prev_model_path: Path | None = None) -> dict:
    """Metrics of ``model_path`` (with ``layer_path`` as its final layer when given, as for the
    glm-saga_5 baseline) into ``out``; with ``prev_model_path`` also the fraction of changed
    assignments from the previous iteration (supplement, Convergence of W^Q)."""
    splits = load_splits(params, train_augment=False)
    model = trained_model(params, model_path)
    if layer_path is not None:
        attach_sparse_layer(model, load_sparse_layer(layer_path), params.model.dropout)
    X, _, _ = read_features(features_path, "train")
    index = splits.index
    attributes = None
    if index.attributes is not None:
        attributes = index.attributes[index.split("train")]
    result = model_metrics(params, model, X, attributes, splits.test)
    if prev_model_path is not None:
        prev = trained_model(params, prev_model_path)
        if isinstance(prev.head, SparseLayer) and isinstance(model.head, SparseLayer):
            result["assignments_changed"] = 100.0 * assignment_change(prev.head.weight,
                                                                      model.head.weight)
    undefined = sorted(key for key, value in result.items() if not np.isfinite(value))
    if undefined:  # e.g. dependence of a layer without weights; JSON has no NaN
        log.warning("%s: undefined, left out: %s", out, ", ".join(undefined))
        result = {k: v for k, v in result.items() if k not in undefined}
    write_json(out, result)
    log.info("%s: %s", out, ", ".join(f"{k} {v:.4g}" for k, v in sorted(result.items())))
    return result
