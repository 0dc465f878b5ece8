"""Evaluation metrics of a Q-SENN: Fidelity, Diversity and Grounding (paper, Experiments).

Pure functions: arrays or tensors in, one number (or one array) out. Units: every metric is
returned as a *fraction* (accuracy, diversity@k, dependence, binary features and Correlation@k in
[0, 1]); alignment r (eq. 10) is a ratio that is unbounded above. The evaluate stage converts the
fractions to percent where the paper reports percent.

================================  ===============================================================
function                          paper
================================  ===============================================================
:func:`accuracy`                  Fidelity, measured as top-1 accuracy
:func:`diversity_at_k`            diversity@5, eq. 6. Default: every image (the paper's text);
                                  ``require_k_nonzero``: leave out images whose predicted class
                                  has fewer than k nonzero weights (the authors' code)
:func:`diversity_per_image`       eq. 6 per image, for batched evaluation of both readings
:func:`images_with_k_nonzero`     the images the authors' reading keeps
:func:`dependence`                dependence gamma, eq. 7-8, on the raw pooled features f of the
                                  training set and the model's predictions on it (the paper)
:func:`dependence_standardized`   eq. 7-8 on the standardized input of the sparse layer (extra)
:func:`predicted_classes`         the final layer's class (eq. 1) from stored features
:func:`alignment_matrix`          A^gt, eq. 9
:func:`alignment_r`               alignment r, eq. 10
:func:`correlation_at_k`          Correlation@5 (supplement, "Correlation and diversity@5")
:func:`binary_feature_*`          binary features: mean shift on the training distribution
                                  returns exactly 2 clusters (supplement "Clustering", Table 10)
================================  ===============================================================

The binary-feature metric uses :func:`mean_shift_1d`, an exact re-implementation of
``sklearn.cluster.MeanShift()`` with its default settings (flat kernel, bandwidth from
``estimate_bandwidth(quantile=0.3)``, every point a seed, ``max_iter=300``, ``cluster_all``) for
one-dimensional data. It gives the same clusters while being orders of magnitude faster: in 1-D the
points within the bandwidth of a centre are a contiguous range of the sorted values, so every
mean-shift step of *all* seeds is two ``searchsorted`` calls and a difference of prefix sums.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from qsenn_core.errors import DataError, ParamsError
from qsenn_core.sparse_layer import STD_FLOOR

log = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor

#: scikit-learn's defaults that define the binary-feature metric (supplement, "Clustering").
BANDWIDTH_QUANTILE = 0.3
MEAN_SHIFT_MAX_ITER = 300
#: scikit-learn's mean shift stops a seed once it moves by at most this fraction of the bandwidth.
MEAN_SHIFT_STOP_FRACTION = 1e-3
#: ``estimate_bandwidth`` sums the k-th neighbour distances in batches of this size.
_BANDWIDTH_BATCH = 500


# ----------------------------------------------------------------------------------------------
# input helpers
# ----------------------------------------------------------------------------------------------


def _as_numpy(x: ArrayLike, name: str, ndim: int | None = None) -> np.ndarray:
    """``x`` as a NumPy array (no copy for CPU tensors), with its number of dimensions checked."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if ndim is not None and arr.ndim != ndim:
        raise DataError(f"{name} must have {ndim} dimensions, got shape {tuple(arr.shape)}")
    return arr


def _as_float(x: ArrayLike, name: str, ndim: int) -> np.ndarray:
    """``x`` as a finite float64 array of ``ndim`` dimensions."""
    arr = _as_numpy(x, name, ndim).astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} contains NaN or infinite values")
    return arr


def _as_classes(pred: ArrayLike, name: str, n: int | None = None) -> np.ndarray:
    """Class indices from a vector of indices or from a matrix of logits (argmax per row)."""
    arr = _as_numpy(pred, name)
    if arr.ndim == 2:
        arr = arr.argmax(axis=1)
    if arr.ndim != 1:
        raise DataError(f"{name} must be class indices (n,) or logits (n, n_classes), "
                        f"got shape {tuple(arr.shape)}")
    if n is not None and len(arr) != n:
        raise DataError(f"{name} has {len(arr)} entries, expected {n}")
    return arr.astype(np.int64, copy=False)


def _check_k(k: int, n_features: int) -> None:
    if not 1 <= k <= n_features:
        raise ParamsError(f"k must be in [1, {n_features}] (the number of features), got {k}")


def top_k_features(weight: ArrayLike, k: int) -> np.ndarray:
    """Indices (n_c, k) of the k largest *signed* weights of every class, largest first.

    Ties (frequent with the ternary W^Q) are broken deterministically by the lower feature index.
    """
    w = _as_float(weight, "weight", 2)
    _check_k(k, w.shape[1])
    return np.argsort(-w, axis=1, kind="stable")[:, :k]


def _rows_with_k_nonzero(weight: np.ndarray, k: int) -> np.ndarray:
    """Mask of the classes that have at least k nonzero weights."""
    return np.count_nonzero(weight, axis=1) >= k


# ----------------------------------------------------------------------------------------------
# Fidelity and sparsity
# ----------------------------------------------------------------------------------------------


def accuracy(logits_or_pred: ArrayLike, labels: ArrayLike) -> float:
    """Top-1 accuracy as a fraction in [0, 1] (Fidelity).

    ``logits_or_pred`` is either predicted class indices (n,) or logits (n, n_classes).
    """
    y = _as_numpy(labels, "labels", 1).astype(np.int64, copy=False)
    pred = _as_classes(logits_or_pred, "logits_or_pred", len(y))
    if len(y) == 0:
        raise DataError("accuracy needs at least one sample")
    return float(np.mean(pred == y))


def features_per_class(weight: ArrayLike) -> float:
    """Mean number of nonzero weights per class (row) of the final layer, n_wc."""
    w = _as_numpy(weight, "weight", 2)
    return float(np.count_nonzero(w, axis=1).mean())


def n_used_features(weight: ArrayLike) -> int:
    """Number of features (columns) with at least one nonzero weight, n_f*."""
    w = _as_numpy(weight, "weight", 2)
    return int(np.count_nonzero(np.any(w != 0, axis=0)))


# ----------------------------------------------------------------------------------------------
# Diversity (eq. 6)
# ----------------------------------------------------------------------------------------------


def _spatial_softmax(maps: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (the flattened spatial positions) of each map, in float64."""
    z = maps.astype(np.float64) - maps.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def images_with_k_nonzero(weight: ArrayLike, predicted: ArrayLike, k: int = 5) -> np.ndarray:
    """Mask (n,) of the images whose predicted class has at least k nonzero weights.

    The authors' evaluation code computes diversity@k only on these images; the paper's eq. 6
    text does not leave any out (:func:`diversity_at_k`).
    """
    w = _as_float(weight, "weight", 2)
    pred = _as_classes(predicted, "predicted")
    if pred.size and (pred.min() < 0 or pred.max() >= w.shape[0]):
        raise DataError(f"predicted holds class indices outside [0, {w.shape[0]})")
    return _rows_with_k_nonzero(w, k)[pred]


def diversity_per_image(
    feature_maps: ArrayLike,
    weight: ArrayLike,
    predicted: ArrayLike,
    k: int = 5,
    *,
    batch_size: int = 256,
) -> np.ndarray:
    """The eq. 6 value of every image (n,), each in [1/k, 1]; see :func:`diversity_at_k`.

    For an evaluation in batches: concatenate the batches' values, then the mean is
    diversity@k as the paper's text defines it, and the mean over
    :func:`images_with_k_nonzero` is the authors' reading.
    """
    maps = _as_numpy(feature_maps, "feature_maps", 4)
    w = _as_float(weight, "weight", 2)
    n, n_f = maps.shape[:2]
    if w.shape[1] != n_f:
        raise DataError(f"feature_maps has {n_f} channels but weight has {w.shape[1]} columns")
    pred = _as_classes(predicted, "predicted", n)
    if pred.size and (pred.min() < 0 or pred.max() >= w.shape[0]):
        raise DataError(f"predicted holds class indices outside [0, {w.shape[0]})")
    top = top_k_features(w, k)[pred]  # (n, k)
    values = np.empty(n, dtype=np.float64)
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        chosen = maps[rows[:, None], top[rows]]  # (b, k, h, w)
        s = _spatial_softmax(chosen.reshape(len(rows), k, -1))
        values[rows] = s.max(axis=1).sum(axis=1) / k
    return values


def diversity_at_k(
    feature_maps: ArrayLike,
    weight: ArrayLike,
    predicted: ArrayLike,
    k: int = 5,
    *,
    require_k_nonzero: bool = False,
    batch_size: int = 256,
) -> float:
    """diversity@k (eq. 6): how little the k highest weighted feature maps overlap, in [1/k, 1].

    For every image the k features with the largest signed weights of its predicted class are
    taken (ties: lower feature index first), each of their maps M (h x w) is turned into S by a
    softmax over its h * w positions, and ``sum_ij max(S^1_ij, ..., S^k_ij) / k`` is averaged over
    the images. k identical maps give 1/k, k maps peaked on disjoint positions approach 1.

    Two readings. The default follows the paper's text of eq. 6 ("the 5 highest weighted
    feature maps for the predicted class", no image left out): an image whose class has fewer
    than k nonzero weights also counts, with zero-weighted features filling its top k.
    ``require_k_nonzero`` leaves those images out, as the authors' evaluation code does.

    Args:
        feature_maps: (n, n_f, h, w) maps of the features that ``weight`` weighs.
        weight: (n_c, n_f) final-layer weight.
        predicted: predicted class per image (n,) or logits (n, n_c).
        k: number of features per image.
        require_k_nonzero: the authors' reading (see above).
        batch_size: images processed at once (bounds the float64 working memory).
    """
    values = diversity_per_image(feature_maps, weight, predicted, k, batch_size=batch_size)
    if require_k_nonzero:
        values = values[images_with_k_nonzero(weight, predicted, k)]
    if len(values) == 0:
        raise DataError("diversity@k: no image left to evaluate")
    return float(values.mean())


# ----------------------------------------------------------------------------------------------
# Grounding: dependence (eq. 7-8) and alignment (eq. 9-10)
# ----------------------------------------------------------------------------------------------


def dependence(features: ArrayLike, weight: ArrayLike, predicted: ArrayLike) -> float:
    """Dependence gamma (eq. 7-8): mean share of the largest feature effect, in [0, 1].

    e_i = |W_(c_i, j) * f_ij| over the features j for the predicted class c_i (eq. 7), and
    gamma = 1/n_T sum_i max_j e_ij / sum_j e_ij over the n_T training samples (eq. 8).

    The paper's gamma (and the authors' code) takes ``features`` = the raw pooled features f of
    the *training* images, the columns ``weight`` weighs (for a sparse layer: the selected
    features, not standardized), and ``predicted`` = the model's classes for those images
    (:func:`predicted_classes`). The same call on test images gives a test-set reading; see
    :func:`dependence_standardized` for the effects on the layer's standardized input.
    Images whose effects are all zero (0/0) are left out, as in the authors' code; when no image
    is left the result is NaN (with a warning).
    """
    f = _as_float(features, "features", 2)
    w = _as_float(weight, "weight", 2)
    if f.shape[1] != w.shape[1]:
        raise DataError(f"features have {f.shape[1]} columns but weight has {w.shape[1]}")
    pred = _as_classes(predicted, "predicted", len(f))
    if pred.size and (pred.min() < 0 or pred.max() >= w.shape[0]):
        raise DataError(f"predicted holds class indices outside [0, {w.shape[0]})")
    effects = np.abs(w[pred] * f)  # eq. 7
    totals = effects.sum(axis=1)
    valid = totals > 0
    if not valid.any():
        log.warning("dependence: every image has zero total effect; returning NaN")
        return float("nan")
    return float(np.mean(effects[valid].max(axis=1) / totals[valid]))  # eq. 8


def standardized(features: ArrayLike, mean: ArrayLike, std: ArrayLike) -> np.ndarray:
    """(f - mean) / max(|std|, STD_FLOOR) per column: the input of the sparse layer's W^Q.

    The same standardization as :meth:`qsenn_core.sparse_layer.SparseLayer.standardize`, on
    features already reduced to the selected columns.
    """
    f = _as_float(features, "features", 2)
    mu = _as_float(mean, "mean", 1)
    sd = _as_float(std, "std", 1)
    if not f.shape[1] == len(mu) == len(sd):
        raise DataError(f"features have {f.shape[1]} columns, mean {len(mu)} and std {len(sd)}")
    return (f - mu) / np.maximum(np.abs(sd), STD_FLOOR)


def dependence_standardized(features: ArrayLike, weight: ArrayLike, predicted: ArrayLike,
                            mean: ArrayLike, std: ArrayLike) -> float:
    """Eq. 7-8 on the standardized features (f - mean) / std that the sparse layer multiplies W
    with (:func:`standardized`): |W_cj (f_j - mean_j) / std_j| are the terms of the logit.

    Not the paper's gamma (eq. 7 uses f); an extra reading, e.g. ``dependence_std_test`` on the
    test images. For a dense head (no standardization) it is :func:`dependence` itself.
    """
    return dependence(standardized(features, mean, std), weight, predicted)


def predicted_classes(features: ArrayLike, weight: ArrayLike, bias: ArrayLike,
                      mean: ArrayLike | None = None, std: ArrayLike | None = None) -> np.ndarray:
    """arg-max of y = W f + b (eq. 1) for features aligned with the columns of ``weight``.

    With ``mean`` and ``std`` the features are first standardized as the sparse layer does
    (:func:`standardized`). Lets a stage get the model's training-set predictions for
    :func:`dependence` from the stored training features, without a second pass over images.
    """
    f = _as_float(features, "features", 2)
    if (mean is None) != (std is None):
        raise DataError("predicted_classes: give both mean and std, or neither")
    if mean is not None and std is not None:
        f = standardized(f, mean, std)
    w = _as_float(weight, "weight", 2)
    b = _as_float(bias, "bias", 1)
    if f.shape[1] != w.shape[1] or len(b) != w.shape[0]:
        raise DataError(f"features ({f.shape[1]} columns), weight {tuple(w.shape)} and bias "
                        f"({len(b)}) do not form one layer")
    return (f @ w.T + b).argmax(axis=1)


def _present_mask(attributes_present: ArrayLike, n: int) -> np.ndarray:
    p = _as_numpy(attributes_present, "attributes_present", 2)
    if p.shape[0] != n:
        raise DataError(f"attributes_present has {p.shape[0]} rows, features have {n}")
    if not np.all((p == 0) | (p == 1)):
        raise DataError("attributes_present must be a 0/1 (or boolean) matrix")
    return p.astype(bool)


def _contrast_attributes(present: np.ndarray) -> np.ndarray:
    """Attributes that are present for some but not all images (eq. 9 is defined for them)."""
    n_plus = present.sum(axis=0)
    return (n_plus > 0) & (n_plus < present.shape[0])


def alignment_matrix(features: ArrayLike, attributes_present: ArrayLike) -> np.ndarray:
    """A^gt (eq. 9): mean feature value where an attribute is present minus where it is absent.

    Args:
        features: (n_T, n_f) training features F^train.
        attributes_present: (n_T, n_a) 0/1 matrix (present: annotated present with certainty
            "probably" or higher; the caller builds it).

    Returns:
        (n_a, n_f) float64 array. Attributes that are never or always present have no contrast:
        their rows are 0 (instead of NaN) and :func:`alignment_r` leaves them out of its max.
    """
    f = _as_float(features, "features", 2)
    present = _present_mask(attributes_present, len(f))
    p = present.astype(np.float64)
    n_plus = p.sum(axis=0)
    n_minus = len(f) - n_plus
    valid = _contrast_attributes(present)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_plus = (p.T @ f) / n_plus[:, None]
        mean_minus = ((1.0 - p).T @ f) / n_minus[:, None]
    out = mean_plus - mean_minus
    out[~valid] = 0.0
    return out


def alignment_r(features: ArrayLike, attributes_present: ArrayLike) -> float:
    """Alignment r (eq. 10): mean over features of the best attribute contrast, normalized.

    r = 1/n_f* sum_j max_a A^gt_(a,j) / mean_l (F_lj - min_l F_lj), on the training features of
    the n_f* features the final layer uses. Only attributes with contrast (present for some but
    not all images) enter the max. A constant feature has no activation to normalize by; its
    term is 0 (its A^gt column is 0 up to rounding). r is a ratio, unbounded above (an indicator
    feature of an attribute present in a share p of the images scores 1/p); it is not a percent.
    """
    f = _as_float(features, "features", 2)
    present = _present_mask(attributes_present, len(f))
    valid = _contrast_attributes(present)
    if not valid.any():
        raise DataError("alignment r: no attribute is present for some but not all images")
    best = alignment_matrix(f, present)[valid].max(axis=0)  # (n_f,)
    scale = (f - f.min(axis=0)).mean(axis=0)  # n_T^-1 sum_l (F_lj - min_l F_lj)
    terms = np.zeros_like(best)
    varying = scale > 0
    terms[varying] = best[varying] / scale[varying]
    if not varying.all():
        log.info("alignment r: %d constant feature(s) count as 0", int((~varying).sum()))
    return float(terms.mean())


# ----------------------------------------------------------------------------------------------
# Correlation@k (supplement, "Correlation and diversity@5")
# ----------------------------------------------------------------------------------------------


def _pearson_matrix(f: np.ndarray) -> np.ndarray:
    """Pearson correlation between the columns of ``f``; pairs with a constant column are 0."""
    centred = f - f.mean(axis=0)
    norms = np.sqrt((centred**2).sum(axis=0))
    varying = norms > 0
    unit = np.zeros_like(centred)
    unit[:, varying] = centred[:, varying] / norms[varying]
    corr = unit.T @ unit
    return np.clip(corr, -1.0, 1.0)


def correlation_at_k(
    features: ArrayLike, weight: ArrayLike, k: int = 5, *, require_k_nonzero: bool = False
) -> float:
    """Correlation@k: mean |Pearson r| between the k highest weighted features of a class.

    For every class the k features with the largest signed weights (ties: lower index) are
    taken, the mean absolute correlation over their k(k-1)/2 pairs is computed on ``features``
    (n, n_f), and the result is averaged over the classes; in [0, 1]. A pair with a constant
    feature counts as uncorrelated (0). ``require_k_nonzero`` skips classes with fewer than k
    nonzero weights.
    """
    f = _as_float(features, "features", 2)
    w = _as_float(weight, "weight", 2)
    if f.shape[1] != w.shape[1]:
        raise DataError(f"features have {f.shape[1]} columns but weight has {w.shape[1]}")
    if k < 2:
        raise ParamsError(f"Correlation@k needs k >= 2 features per class, got {k}")
    top = top_k_features(w, k)
    if require_k_nonzero:
        top = top[_rows_with_k_nonzero(w, k)]
    if len(top) == 0:
        raise DataError("Correlation@k: no class left to evaluate")
    corr = np.abs(_pearson_matrix(f))
    sub = corr[top[:, :, None], top[:, None, :]]  # (n_classes, k, k)
    upper = np.triu_indices(k, 1)
    return float(sub[:, upper[0], upper[1]].mean())


# ----------------------------------------------------------------------------------------------
# Binary features: exact 1-D mean shift (supplement, "Clustering")
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanShift1D:
    """Result of :func:`mean_shift_1d`.

    Attributes:
        centers: cluster centres in scikit-learn's order (most points within the bandwidth first).
        sizes: number of points assigned to each centre (nearest centre, ``cluster_all=True``).
        bandwidth: the flat-kernel radius used.
    """

    centers: np.ndarray
    sizes: np.ndarray
    bandwidth: float

    @property
    def n_clusters(self) -> int:
        return len(self.centers)


def _kth_neighbor_distances(xs: np.ndarray, k: int) -> np.ndarray:
    """For sorted ``xs``: the k-th smallest |xs_i - xs_j| over all j (the point itself included).

    In 1-D the k nearest points of x_i form a window of k consecutive sorted values that holds i,
    so the k-th distance is min over those windows of max(x_i - x_s, x_(s+k-1) - x_i). The
    left term falls and the right term rises with the window start s; a vectorized bisection
    finds their crossing for every point at once.
    """
    n = len(xs)
    i = np.arange(n)
    lo = np.maximum(0, i - k + 1)  # first possible window start
    hi = np.minimum(i, n - k)  # last possible window start
    a, b = lo.copy(), hi + 1  # first start with right >= left lies in [a, b] (b: none)
    while True:
        active = a < b
        if not active.any():
            break
        mid = np.where(active, (a + b) // 2, a)
        mid_c = np.minimum(mid, n - k)
        right_ge_left = (xs[mid_c + k - 1] - xs) >= (xs - xs[mid_c])
        b = np.where(active & right_ge_left, mid, b)
        a = np.where(active & ~right_ge_left, mid + 1, a)
    best = np.full(n, np.inf)
    for s in (a, a - 1):
        ok = (s >= lo) & (s <= hi)
        sc = np.clip(s, 0, n - k)
        width = np.maximum(xs - xs[sc], xs[sc + k - 1] - xs)
        best = np.where(ok, np.minimum(best, width), best)
    return best


def estimate_bandwidth_1d(
    x: ArrayLike,
    quantile: float = BANDWIDTH_QUANTILE,
    n_samples: int | None = None,
    random_state: int = 0,
) -> float:
    """``sklearn.cluster.estimate_bandwidth`` for one feature, with identical floating point.

    scikit-learn (and the paper) call it the 30th percentile of pairwise distances; what it
    computes is the mean over the points of the distance to their k-th nearest neighbour, the
    point itself counted, with k = max(1, int(n * quantile)). With ``n_samples`` it first keeps
    ``RandomState(random_state).permutation(n)[:n_samples]``; ``MeanShift`` uses all points. The
    distances are summed in batches of 500 exactly as scikit-learn does, so the float is equal.
    """
    v = _as_float(x, "x", 1)
    if len(v) == 0:
        raise DataError("bandwidth: the feature has no values")
    if n_samples is not None:
        v = v[np.random.RandomState(random_state).permutation(len(v))[:n_samples]]
    n = len(v)
    k = max(1, int(n * quantile))
    order = np.argsort(v, kind="stable")
    kth_sorted = _kth_neighbor_distances(v[order], k)
    kth = np.empty(n)
    kth[order] = kth_sorted
    total = 0.0
    for start in range(0, n, _BANDWIDTH_BATCH):
        total += kth[start:start + _BANDWIDTH_BATCH].sum()
    return float(total / n)


class _WindowSums:
    """Count and (nearly exact) sum of the sorted distinct values u[a:b], weighted by multiplicity.

    Every value is split into a high part on a coarse power-of-two grid and the remainder; the
    prefix sums of the high parts are exact in float64, so a window mean does not suffer from the
    cancellation of plain prefix sums (its error is that of a correctly rounded sum).
    """

    def __init__(self, u: np.ndarray, mult: np.ndarray) -> None:
        n_total = float(mult.sum())
        peak = float(np.max(np.abs(u))) if len(u) else 0.0
        spare_bits = 52 - math.ceil(math.log2(n_total + 1))
        top_exp = math.frexp(peak)[1] if peak > 0 else 0  # peak < 2**top_exp
        grid = math.ldexp(1.0, top_exp - spare_bits)
        high = np.round(u / grid) * grid
        low = u - high
        self.count = np.concatenate(([0], np.cumsum(mult)))
        self.high = np.concatenate(([0.0], np.cumsum(high * mult)))
        self.low = np.concatenate(([0.0], np.cumsum(low * mult)))

    def mean(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cnt = self.count[b] - self.count[a]
        total = (self.high[b] - self.high[a]) + (self.low[b] - self.low[a])
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / cnt, cnt


def _within(values: np.ndarray, centers: np.ndarray, r2: float) -> np.ndarray:
    """scikit-learn's KD-tree radius test: (center - value)**2 <= radius**2 in float64."""
    d = centers - values
    return d * d <= r2


def _windows(u: np.ndarray, m: np.ndarray, bw: float, r2: float) -> tuple[np.ndarray, np.ndarray]:
    """[a, b): the distinct values u within the bandwidth of every centre m (sklearn's test)."""
    slack = 16 * np.finfo(np.float64).eps * (np.abs(m) + bw) + np.finfo(np.float64).tiny
    a = np.searchsorted(u, m - bw - slack, side="left")
    b = np.searchsorted(u, m + bw + slack, side="right")
    # [a, b) is a superset; shrink both ends until their values pass the exact test.
    while True:
        idx = np.flatnonzero(a < b)
        out = idx[~_within(u[a[idx]], m[idx], r2)]
        if len(out) == 0:
            break
        a[out] += 1
    while True:
        idx = np.flatnonzero(a < b)
        out = idx[~_within(u[b[idx] - 1], m[idx], r2)]
        if len(out) == 0:
            break
        b[out] -= 1
    return a, b


def _climb(
    u: np.ndarray, sums: _WindowSums, bw: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Run every seed u_s to convergence; return its final centre and intensity (0: no centre).

    Mirrors ``sklearn.cluster._mean_shift._mean_shift_single_seed``: the centre moves to the
    mean of the points within the bandwidth until it moves by <= 1e-3 * bandwidth or after
    ``max_iter`` + 1 means; the intensity is the number of points in that last window.
    """
    r2 = bw * bw
    stop = MEAN_SHIFT_STOP_FRACTION * bw
    center = u.copy()
    intensity = np.zeros(len(u), dtype=np.int64)
    active = np.arange(len(u))
    for it in range(max_iter + 1):
        m = center[active]
        a, b = _windows(u, m, bw, r2)
        new, cnt = sums.mean(a, b)
        empty = cnt == 0  # scikit-learn drops such a seed (no centre)
        done = empty | (np.abs(new - m) <= stop) | (it == max_iter)
        moved = ~empty
        center[active[moved]] = new[moved]
        intensity[active[moved]] = cnt[moved]
        intensity[active[empty]] = 0
        active = active[~done]
        if len(active) == 0:
            break
    return center, intensity


def _merge_centers(
    centers: np.ndarray, intensity: np.ndarray, last_seen: np.ndarray, bw: float
) -> np.ndarray:
    """scikit-learn's post-processing: unique centres, sorted, near-duplicates removed.

    Equal centres share one dict entry whose intensity is that of the last seed (in data order)
    reaching it; entries are sorted by (intensity, centre) descending, and going down that list
    each kept centre removes all later centres within the bandwidth.
    """
    keep = intensity > 0
    centers, intensity, last_seen = centers[keep], intensity[keep], last_seen[keep]
    if len(centers) == 0:
        raise DataError("mean shift: no point was within the bandwidth of any seed")
    by_value = np.lexsort((last_seen, centers))
    c_sorted = centers[by_value]
    last_of_group = np.append(c_sorted[1:] != c_sorted[:-1], True)
    uc = c_sorted[last_of_group]
    ui = intensity[by_value][last_of_group]
    order = np.lexsort((uc, ui))[::-1]
    ranked = uc[order]
    alive = np.ones(len(ranked), dtype=bool)
    kept = []
    r2 = bw * bw
    i = 0
    while i < len(ranked):
        kept.append(i)
        alive &= ~_within(ranked, ranked[i], r2)
        nxt = np.flatnonzero(alive[i + 1:])
        if len(nxt) == 0:
            break
        i = i + 1 + int(nxt[0])
    return ranked[np.array(kept, dtype=np.int64)]


def _cluster_sizes(x_sorted: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Points per centre when each point joins its nearest centre (ties: earlier centre)."""
    order = np.argsort(centers, kind="stable")
    cs = centers[order]
    pos = np.searchsorted(cs, x_sorted)
    left = np.clip(pos - 1, 0, len(cs) - 1)
    right = np.clip(pos, 0, len(cs) - 1)
    dl = np.abs(x_sorted - cs[left])
    dr = np.abs(cs[right] - x_sorted)
    pick_right = (dr < dl) | ((dr == dl) & (order[right] < order[left]))
    nearest = order[np.where(pick_right, right, left)]
    return np.bincount(nearest, minlength=len(centers))


def mean_shift_1d(
    x: ArrayLike, bandwidth: float | None = None, max_iter: int = MEAN_SHIFT_MAX_ITER
) -> MeanShift1D:
    """Mean shift of one feature, equal to ``sklearn.cluster.MeanShift(bandwidth).fit(x[:, None])``.

    Same flat kernel, seeds (every point; identical points share one trajectory), stopping rule,
    centre de-duplication and nearest-centre assignment as scikit-learn, with the bandwidth from
    :func:`estimate_bandwidth_1d` when none is given. Each step costs O(n log n) for all seeds
    together. Values are compared in float64 (``x`` is cast). Cluster counts agree with
    scikit-learn except where a value lies within rounding error (~1e-16 relative) of a window
    edge, because the window means are summed in a different order.

    A zero bandwidth (every value shared by >= 30% of the points, e.g. a constant feature) makes
    every distinct value its own cluster.
    """
    v = _as_float(x, "x", 1)
    if len(v) == 0:
        raise DataError("mean shift: the feature has no values")
    bw = estimate_bandwidth_1d(v) if bandwidth is None else float(bandwidth)
    if bw < 0:
        raise ParamsError(f"mean shift bandwidth must be >= 0, got {bw}")
    order = np.argsort(v, kind="stable")
    xs = v[order]
    u, first, mult = np.unique(xs, return_index=True, return_counts=True)
    if bw == 0:
        centers = u[np.lexsort((u, mult))[::-1]]
        return MeanShift1D(centers, _cluster_sizes(xs, centers), bw)
    # the last occurrence (in data order) of each distinct value: it writes the dict last
    last_seen = np.maximum.reduceat(order, first)
    center, intensity = _climb(u, _WindowSums(u, mult), bw, max_iter)
    centers = _merge_centers(center, intensity, last_seen, bw)
    return MeanShift1D(centers, _cluster_sizes(xs, centers), bw)


def binary_feature_counts(features: ArrayLike, *, progress: bool = False) -> np.ndarray:
    """Number of mean-shift clusters of every feature's distribution (column of ``features``).

    Equal to ``len(sklearn.cluster.MeanShift().fit(features[:, [j]]).cluster_centers_)`` for
    every column j (float64), see :func:`mean_shift_1d`.
    """
    f = _as_float(features, "features", 2)
    cols = tqdm(range(f.shape[1]), desc="mean shift", unit="feature", disable=not progress)
    return np.array([mean_shift_1d(f[:, j]).n_clusters for j in cols], dtype=np.int64)


def binary_feature_fraction(
    features: ArrayLike, strict_min_cluster: float | None = None, *, progress: bool = False
) -> float:
    """Fraction of binary features (Table 4, Suppl. Table 9 and 10), in [0, 1].

    A feature (column of the training features) is binary when mean shift with scikit-learn's
    default bandwidth returns exactly 2 clusters. With ``strict_min_cluster`` (Suppl. Table 10:
    the average number of training images per class) both clusters must also hold at least that
    many points (the caption says "more points than"; we use >=, the issue's wording).
    """
    f = _as_float(features, "features", 2)
    if f.shape[1] == 0:
        raise DataError("binary features: there are no features")
    binary = 0
    for j in tqdm(range(f.shape[1]), desc="mean shift", unit="feature", disable=not progress):
        res = mean_shift_1d(f[:, j])
        if res.n_clusters != 2:
            continue
        if strict_min_cluster is not None and res.sizes.min() < strict_min_cluster:
            continue
        binary += 1
    return binary / f.shape[1]
