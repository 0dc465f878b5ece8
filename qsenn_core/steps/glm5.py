"""Stage ``glm5``: the glm-saga_5 baseline (the path on all dense features, no fine-tuning).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from qsenn_core.errors import DataError
from qsenn_core.feature_files import read_features
from qsenn_core.params import Params
from qsenn_core.sparse import standardize
from qsenn_core.sparse_layer import SparseLayer, save_sparse_layer
from qsenn_core.steps.path import path_table, regularization_path
from qsenn_core.steps.sparse_files import write_csv

log = logging.getLogger(__name__)


def glm5(params: Params, features_path: Path, out_layer: Path, out_table: Path,
         max_per_class: float = 5.0) -> dict[str, float]:
    """The glm-saga_5 baseline: the path on all dense features (no selection, no fine-tuning),
    taking the densest solution with at most ``max_per_class`` nonzeros per class on average."""
    X, y, _ = read_features(features_path, "train")
    raw = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64))
    labels = torch.from_numpy(y.astype(np.int64))
    Xs, mean, std = standardize(raw)
    budget = int(max_per_class * params.n_classes)
    result = regularization_path(params, Xs, labels, max_nonzeros=budget)
    write_csv(out_table, path_table(result))
    allowed = [p for p in result.points if p.nonzeros <= budget]
    if not allowed:
        raise DataError(f"{features_path}: no path point has at most {max_per_class:g} "
                        "weights per class; lower sparse.lambda_min_ratio's start")
    point = max(allowed, key=lambda p: (p.nonzeros, -p.lam))
    weight = point.weight.float()
    layer = SparseLayer(torch.arange(X.shape[1]), weight, point.bias, mean, std,
                        alpha=float(weight.abs().max()))
    save_sparse_layer(out_layer, layer)
    log.info("glm5: lambda %.4g, %d nonzeros (%.2f per class)", point.lam, point.nonzeros,
             point.nonzeros / params.n_classes)
    return {"lam": point.lam, "nonzeros": point.nonzeros}
