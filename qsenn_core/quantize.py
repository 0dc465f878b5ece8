"""Quantization of the sparse layer W^sp into W^Q (paper eq. 3-5) and the layer's bias.

- :func:`quantize`: keep the n_w largest magnitudes (eq. 3), replace them by sign * alpha with
  alpha their mean magnitude (eq. 4-5); ``levels`` = n_Q > 3 follows the supplement's "Number of
  Quantization Levels".
- :func:`weights_to_keep`: n_w, or fewer when the solution has fewer nonzeros.
- :func:`sparsify_top`: the "w/o quantization" ablation (the n_w largest float weights, as is).
- :func:`refit_bias`: the bias b for a fixed W^Q (convex, Newton's method).
- :func:`assignment_change`: the convergence measure of Suppl. Figure 8.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from qsenn_core.errors import QsennError

logger = logging.getLogger(__name__)


def _check_weight(weight: Tensor) -> None:
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise QsennError("weight: expected a floating point tensor")
    if weight.numel() == 0:
        raise QsennError("weight: the matrix is empty")
    if not bool(torch.isfinite(weight).all()):
        raise QsennError("weight: contains NaN/Inf entries")


def top_indices(weight: Tensor, n_weights: int) -> Tensor:
    """Flat indices of the ``n_weights`` largest |weight| entries, deterministic under ties.

    Equal magnitudes are ordered by flat (row-major) index, so exactly ``n_weights`` entries are
    chosen even when several share the threshold magnitude epsilon of eq. 3 (eq. 5 read with
    ">= epsilon" would keep all of them). Only nonzero entries can be chosen.
    """
    _check_weight(weight)
    if isinstance(n_weights, bool) or not isinstance(n_weights, int) or n_weights <= 0:
        raise QsennError(f"n_weights: must be a positive integer, got {n_weights!r}")
    flat = weight.detach().flatten()
    available = int((flat != 0).sum())
    if n_weights > available:
        raise QsennError(f"n_weights: {n_weights} weights requested but the matrix has only "
                         f"{available} nonzero entries")
    order = torch.sort(flat.abs(), descending=True, stable=True).indices
    return order[:n_weights]


def weights_to_keep(weight: Tensor, n_weights: int) -> int:
    """n_w, or the number of nonzeros of W^sp when the path's densest solution has fewer.

    Eq. 3 assumes W^sp has at least n_w = n_wc * n_c nonzeros. When the features already
    separate the training set (synth_travelingbirds after one fine-tuning round: 100% training
    accuracy), the elastic-net path can end below that (e.g. 220 of 250 at lambda_min); then every
    nonzero is kept, n_wc drops below its target, and the metrics' ``features_per_class`` and the
    quantize metrics' ``nonzeros`` say so.
    """
    available = int((weight.detach() != 0).sum())
    if available < n_weights:
        logger.warning("the solution has %d nonzero weights, fewer than n_w = %d: keeping all "
                       "of them (%.2f per class)", available, n_weights,
                       available / max(1, weight.shape[0]))
        return available
    return n_weights


def quantize(weight: Tensor, n_weights: int, levels: int = 3) -> Tensor:
    """W^Q from W^sp (eq. 3-5): exactly ``n_weights`` nonzeros, signs preserved.

    ``levels`` = n_Q is the number of unique values of W^Q, zero included.

    - n_Q = 3 (the paper's ternary layer): epsilon = the n_w-th largest |W| (eq. 3), alpha = mean
      of the kept magnitudes (eq. 4), W^Q = sign(W) * alpha on the kept entries (eq. 5).
    - n_Q = 2m + 1 > 3: the supplement "splits the range of values above epsilon into n_Q - 1
      evenly sized bins and sets each value in each bin to the respective average". We read it
      sign-symmetrically, so that n_Q = 3 is exactly eq. 4-5: the kept magnitudes [epsilon, max]
      are split into m = (n_Q - 1) / 2 bins of equal width, every kept entry becomes
      sign * (mean magnitude of its bin); with zero this gives at most n_Q unique values
      (fewer when a bin is empty). Even n_Q has no symmetric reading and is rejected.

    Ties at epsilon are broken by flat index (:func:`top_indices`). Unlike the authors' code,
    which maps the most negative weight to +alpha when it is the largest magnitude, the sign of
    every kept entry is kept. Means are computed in float64; the result has weight's dtype.
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 3 or levels % 2 == 0:
        raise QsennError(f"levels: must be an odd integer >= 3, got {levels!r}")
    keep = top_indices(weight, n_weights)
    flat = weight.detach().flatten()
    kept = flat[keep].to(torch.float64)
    mags = kept.abs()
    n_bins = (levels - 1) // 2
    lo, hi = float(mags.min()), float(mags.max())
    if n_bins == 1 or hi == lo:
        bins = torch.zeros_like(mags, dtype=torch.int64)
    else:
        bins = ((mags - lo) / (hi - lo) * n_bins).floor().to(torch.int64).clamp(0, n_bins - 1)
    sums = torch.zeros(n_bins, dtype=torch.float64, device=mags.device).index_add_(0, bins, mags)
    counts = torch.bincount(bins, minlength=n_bins).to(torch.float64)
    means = sums / counts.clamp_min(1.0)
    out = torch.zeros_like(flat)
    out[keep] = (torch.sign(kept) * means[bins]).to(flat.dtype)
    return out.reshape(weight.shape)


def sparsify_top(weight: Tensor, n_weights: int) -> Tensor:
    """The "w/o quantization" ablation: the ``n_weights`` largest-magnitude weights, unchanged."""
    keep = top_indices(weight, n_weights)
    flat = weight.detach().flatten()
    out = torch.zeros_like(flat)
    out[keep] = flat[keep]
    return out.reshape(weight.shape)


def refit_bias(features: Tensor, weight: Tensor, labels: Tensor, init: Tensor | None = None,
               *, max_iter: int = 50, tol: float = 1e-10) -> Tensor:
    """The bias b minimizing the mean training cross-entropy of ``features @ weight.T + b``.

    ``features`` are what the layer sees (standardized selected features, (n, n_f*)), ``weight``
    is the fixed W^Q (n_c, n_f*). The problem is convex in b (and strictly convex up to the
    shift b + c * 1, which is fixed by returning a zero-mean b). Newton's method with the
    Hessian 1/n sum_i (diag(p_i) - p_i p_i^T) (made invertible by adding 11^T / n_c, which does
    not change steps orthogonal to 1) and Armijo backtracking; stops at max |gradient| <= tol.

    The authors' code instead sets b by a heuristic (max |b| of the float solution shifted by
    the per-class count of positive minus negative assignments); the paper does not specify b,
    so we refit it, which is optimal for the fixed W^Q.
    """
    _check_weight(weight)
    if features.ndim != 2 or features.shape[1] != weight.shape[1]:
        raise QsennError(f"features: expected shape (n, {weight.shape[1]}), "
                         f"got {tuple(features.shape)}")
    if not bool(torch.isfinite(features).all()):
        raise QsennError("features: contains NaN/Inf entries")
    n_classes = weight.shape[0]
    y = labels.to(device=features.device, dtype=torch.int64).flatten()
    if y.numel() != features.shape[0]:
        raise QsennError(f"labels: expected {features.shape[0]} labels, got {y.numel()}")
    if y.numel() == 0 or int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise QsennError(f"labels: values must lie in [0, {n_classes})")
    counts = torch.bincount(y, minlength=n_classes).to(torch.float64)
    if bool((counts == 0).any()):
        missing = int((counts == 0).nonzero()[0])
        raise QsennError(f"labels: class {missing} has no samples, its bias is unbounded")

    z0 = features.to(torch.float64) @ weight.to(device=features.device, dtype=torch.float64).T
    n = z0.shape[0]
    onehot_mean = counts / n
    if init is None:
        b = torch.log(onehot_mean)
    else:
        b = init.to(device=features.device, dtype=torch.float64).clone()

    def loss(bias: Tensor) -> float:
        z = z0 + bias
        return float((torch.logsumexp(z, 1) - z.gather(1, y[:, None]).squeeze(1)).mean())

    ones = torch.full((n_classes, n_classes), 1.0 / n_classes, dtype=torch.float64,
                      device=z0.device)
    current = loss(b)
    for it in range(max_iter):
        p = torch.softmax(z0 + b, 1)
        grad = p.mean(0) - onehot_mean
        if float(grad.abs().max()) <= tol:
            break
        hess = torch.diag(p.mean(0)) - p.T @ p / n + ones
        step = -torch.linalg.solve(hess, grad)
        decrease = float(grad @ step)
        t = 1.0
        while t > 1e-10:
            trial = loss(b + t * step)
            if trial <= current + 1e-4 * t * decrease:
                break
            t *= 0.5
        b = b + t * step
        current = loss(b)
        logger.debug("refit_bias: Newton step %d, loss %.8f, max|grad| %.2e", it, current,
                     float(grad.abs().max()))
    b = b - b.mean()
    return b.to(weight.dtype)


def assignment_change(prev: Tensor, new: Tensor) -> float:
    """Fraction of new assignments in W^Q, the convergence measure of Suppl. Figure 8.

    An assignment is a feature-class pair with a nonzero weight, together with its sign (+ or -).
    The supplement plots "the number of new assignments between features and classes as fraction
    of total assignments"; we read it literally: the assignments of ``new`` that ``prev`` does not
    have (a pair that was 0 or had the other sign), divided by the number of assignments of
    ``new``. With the same n_w in both layers this equals the fraction of ``prev``'s assignments
    that were removed or flipped. Returns 0.0 when ``new`` has no assignment.
    """
    if prev.shape != new.shape:
        raise QsennError(f"assignment_change: shapes differ, {tuple(prev.shape)} vs "
                         f"{tuple(new.shape)}")
    s_prev, s_new = torch.sign(prev.detach()), torch.sign(new.detach().to(prev.device))
    total = int((s_new != 0).sum())
    if total == 0:
        return 0.0
    fresh = int(((s_new != 0) & (s_new != s_prev)).sum())
    return fresh / total
