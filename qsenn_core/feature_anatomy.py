"""Why a feature is or is not binary: its mean-shift clusters against how many classes it serves.

A diagnostic for the binary-feature metric of Table 4 (supplement, "Clustering"), not a metric
of the paper. The paper explains Q-SENN's binary features by generality: with n_f* < n_c and a
ternary layer a feature has to recognize a concept shared by many classes, and is then either
present or absent. This module measures that link on a model's training features:

- the number of mean-shift clusters of each feature (:func:`qsenn_core.metrics.mean_shift_1d`,
  exactly the metric's clustering: 2 clusters = binary);
- the *effective number of classes* of each feature, the participation ratio of its per-class
  mean activations m_c >= 0: (sum_c m_c)^2 / sum_c m_c^2. It is k when the feature is equally
  active in k classes and silent in the rest, and n_c for a feature equal in every class, so it
  needs no threshold for "active".

:func:`anatomy_summary` condenses both into the shares of unimodal, binary and multimodal
features, the mean effective number of classes of each kind and their rank correlation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from qsenn_core.errors import DataError
from qsenn_core.metrics import mean_shift_1d


def effective_classes(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Participation ratio (sum_c m_c)^2 / sum_c m_c^2 of each feature's class means m_c.

    Args:
        features: (n, d) non-negative features (after the ReLU and pooling), one row per image.
        labels: (n,) class of each row; classes without rows are left out.

    Returns:
        (d,) float64 in [1, number of classes]; NaN for a feature that is 0 everywhere.

    Raises:
        DataError: shapes disagree, or a feature is negative (the ratio needs m_c >= 0).
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or y.shape != (f.shape[0],):
        raise DataError(f"effective classes: features {f.shape} and labels {y.shape} disagree")
    if f.size and f.min() < 0:
        raise DataError("effective classes: features must be non-negative "
                        f"(min {f.min():.3g}); pass the pooled ReLU features")
    classes, index = np.unique(y, return_inverse=True)
    sums = np.zeros((len(classes), f.shape[1]))
    np.add.at(sums, index, f)
    means = sums / np.bincount(index)[:, None]
    total = means.sum(axis=0)
    squares = (means ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(squares > 0, total ** 2 / squares, np.nan)


@dataclass(frozen=True)
class FeatureAnatomy:
    """Per feature: mean-shift clusters on the training set and effective number of classes."""

    n_clusters: np.ndarray  # (d,) int64
    effective_classes: np.ndarray  # (d,) float64

    @property
    def n_features(self) -> int:
        return len(self.n_clusters)


def feature_anatomy(features: np.ndarray, labels: np.ndarray) -> FeatureAnatomy:
    """:class:`FeatureAnatomy` of the (n, d) training features of one model."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] == 0:
        raise DataError(f"feature anatomy: expected (n, d) features with d >= 1, got {f.shape}")
    clusters = np.array([mean_shift_1d(f[:, j]).n_clusters for j in range(f.shape[1])],
                        dtype=np.int64)
    return FeatureAnatomy(clusters, effective_classes(f, labels))


def _mean_or_nan(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else float("nan")


def anatomy_summary(anatomy: FeatureAnatomy) -> dict[str, float]:
    """Shares (percent) of unimodal, binary and multimodal (3+ clusters) features, the mean
    effective number of classes overall and of each kind (NaN when a kind is empty), and the
    Spearman rank correlation of clusters with effective classes (NaN when either is constant).
    """
    k, e = anatomy.n_clusters, anatomy.effective_classes
    kinds = {"unimodal": k == 1, "binary": k == 2, "multimodal": k >= 3}
    out = {f"{name}_pct": 100.0 * float(mask.mean()) for name, mask in kinds.items()}
    out["effective_classes"] = float(np.nanmean(e)) if np.isfinite(e).any() else float("nan")
    for name, mask in kinds.items():
        out[f"effective_classes_{name}"] = _mean_or_nan(e[mask & np.isfinite(e)])
    ranks = pd.DataFrame({"clusters": k, "classes": e}).dropna()
    out["spearman_clusters_classes"] = (
        float(ranks["clusters"].corr(ranks["classes"], method="spearman"))
        if len(ranks) > 1 and ranks.nunique().min() > 1 else float("nan"))
    return out
