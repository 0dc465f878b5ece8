"""The authors' solver: the *glm-saga* package (Wong, Santurkar & Madry 2021), used correctly.

:func:`solve_path_glm_saga` runs ``glm_saga.elasticnet.glm_saga`` on the same training split,
lambda grid and objective as the exact solver of :mod:`qsenn_core.sparse` and returns the same
:class:`~qsenn_core.sparse.PathResult`, with each point's objective and certified duality gap
recomputed in float64 by :func:`qsenn_core.sparse.objective_and_gap`.

How the package is driven (the paper's settings: lr 0.1, up to 2000 epochs, tol 1e-4,
lookbehind 5; batches of 256 and a held-out 10% validation split, all in
:class:`~qsenn_core.params.SparseParams`):

- ``n_ex`` and ``n_classes`` are passed, so it does not count them with extra passes (and does
  not infer the class count from the largest label seen).
- ``metadata={"max_reg": ...}`` hands it this package's float64 lambda_max (times
  ``max(0.001, alpha)``, which it divides by), so both solvers use the same grid; ``do_zero=False``
  drops the unregularized extra point it appends by default (the authors drop it afterwards).
- All-zero feature columns (e.g. constant features after standardization) are removed before the
  call and get zero weights: its group threshold divides by the column norm, so such a column
  turns into NaN.
- Its ``print`` output goes to :mod:`logging`; a tqdm bar ticks once per path point.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings

import numpy as np
import torch
from glm_saga.elasticnet import IndexedTensorDataset, glm_saga
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from qsenn_core.errors import QsennError
from qsenn_core.sparse import (
    ArrayLike,
    PathPoint,
    PathResult,
    accuracy,
    lambda_grid,
    lambda_max,
    objective_and_gap,
    prepare,
    require_all_classes,
    resolve_device,
    split_train_val,
)

logger = logging.getLogger(__name__)


class _LogStream(io.TextIOBase):
    """A text sink for glm-saga's prints: each line goes to logging; path lines tick a bar."""

    def __init__(self, bar: tqdm) -> None:
        self._bar = bar
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if line.strip():
                logger.debug("glm-saga: %s", line)
            if line.startswith("(") and " lambda " in line:
                self._bar.update(1)
        return len(text)


def solve_path_glm_saga(X: ArrayLike, y: ArrayLike, n_classes: int, *, alpha: float = 0.99,
                        n_lambdas: int = 100, lambda_min_ratio: float = 1e-3, tol: float = 1e-4,
                        max_epochs: int = 2000, lr: float = 0.1, lookbehind: int = 5,
                        batch_size: int = 256, val_frac: float = 0.1, seed: int = 0,
                        device: str | torch.device | None = None, group: bool = False,
                        start_ratio: float = 1.0) -> PathResult:
    """glm-saga's regularization path on *standardized* features X (n, d).

    Same split (:func:`~qsenn_core.sparse.split_train_val`), lambda_max and grid as
    :func:`qsenn_core.sparse.solve_path`. ``tol`` is glm-saga's own stopping rule (objective
    improvement over ``lookbehind`` epochs), not a gap. Deterministic on the CPU for a fixed seed
    (the seed drives the split and the batch order).
    """
    if not 0.0 < alpha <= 1.0:
        raise QsennError(f"alpha: must be in (0, 1], got {alpha}")
    Xt, yt = prepare(X, y, n_classes)
    train_idx, val_idx = split_train_val(yt.numpy(), val_frac, seed)
    dev = resolve_device(device)
    X64 = Xt.to(torch.float64)
    X_tr, y_tr = X64[train_idx], yt[train_idx]
    X_val, y_val = X64[val_idx], yt[val_idx]
    require_all_classes(y_tr, n_classes)
    Y_tr = torch.nn.functional.one_hot(y_tr, n_classes).to(torch.float64)
    lmax = lambda_max(X_tr, Y_tr, alpha, group)
    lam_start = start_ratio * lmax
    expected = lambda_grid(lam_start, n_lambdas, lambda_min_ratio)

    keep = (X_tr != 0).any(0)  # all-zero columns make glm-saga's group threshold return NaN
    cols = keep.nonzero().flatten()
    if cols.numel() == 0:
        raise QsennError("features: every column is zero on the training split")
    X_fit = X_tr[:, cols].to(device=dev, dtype=torch.float32)
    loader = DataLoader(IndexedTensorDataset(X_fit, y_tr.to(dev)), batch_size=batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(seed))
    val_loader = None
    if val_idx.size:
        val_loader = DataLoader(TensorDataset(X_val[:, cols].to(device=dev, dtype=torch.float32),
                                              y_val.to(dev)), batch_size=batch_size)
    linear = nn.Linear(cols.numel(), n_classes).to(dev)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.zero_()
    max_reg = lam_start * max(0.001, alpha)
    logger.info("glm-saga: %d lambdas from %.4g, %d train / %d val samples, %d features%s",
                n_lambdas, lam_start, len(train_idx), len(val_idx), cols.numel(),
                " (group)" if group else "")
    with tqdm(total=n_lambdas, desc="glm-saga path", disable=None) as bar, \
            contextlib.redirect_stdout(_LogStream(bar)), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Implicit dimension choice for softmax")
        out = glm_saga(linear, loader, lr, max_epochs, alpha, group=group, n_ex=len(train_idx),
                       n_classes=n_classes, tol=tol, epsilon=lambda_min_ratio, k=n_lambdas,
                       do_zero=False, lr_decay_factor=1, val_loader=val_loader,
                       lookbehind=lookbehind, metadata={"max_reg": {"group": max_reg,
                                                                    "nongrouped": max_reg}})

    d = X_tr.shape[1]
    points: list[PathPoint] = []
    for i, entry in enumerate(out["path"]):
        lam = float(entry["lam"])
        if not math.isclose(lam, expected[i], rel_tol=1e-5):
            raise QsennError(f"glm-saga used lambda {lam:.6g} at point {i}, expected "
                             f"{expected[i]:.6g}")
        W = torch.zeros(n_classes, d, dtype=torch.float64)
        W[:, cols] = entry["weight"].to(torch.float64)
        b = entry["bias"].to(torch.float64)
        if not (torch.isfinite(W).all() and torch.isfinite(b).all()):
            raise QsennError(f"glm-saga returned NaN/Inf weights at lambda {lam:.4g}")
        res = objective_and_gap(X_tr, y_tr, W, b, lam, alpha, group, n_classes)
        points.append(PathPoint(
            lam=lam, weight=W, bias=b, objective=res.primal, duality_gap=max(res.gap, 0.0),
            nonzeros=int((W != 0).sum()), train_acc=accuracy(X_tr, y_tr, W, b),
            val_acc=accuracy(X_val, y_val, W, b), seconds=float(entry["time"])))
    return PathResult(points=points, lambda_max=lmax, alpha=alpha, group=group,
                      solver="glm-saga", train_index=train_idx,
                      val_index=np.asarray(val_idx, dtype=np.int64))
