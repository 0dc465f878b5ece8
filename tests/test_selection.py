"""SLDD feature selection on planted data: informative features enter first, in order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qsenn_core.errors import QsennError
from qsenn_core.selection import select_features
from qsenn_core.sparse import solve_path, standardize


def _planted(n: int = 240, d: int = 25, c: int = 4, seed: int = 0
             ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Features 7, 3, 12 carry class signal of decreasing strength; the rest is noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    X = rng.gamma(2.0, 1.0, size=(n, d))  # non-negative, like post-ReLU features
    informative = [7, 3, 12]
    for j, strength, classes in zip(informative, [3.0, 2.0, 1.2], [(0, 1), (2,), (1, 3)],
                                    strict=True):
        X[:, j] += strength * np.isin(y, classes)
    return X, y, informative


def test_informative_features_enter_first_in_order() -> None:
    X, y, informative = _planted()
    res = select_features(X, y, 4, 3, start_ratio=1.0)
    assert res.order == informative
    assert all(a >= b for a, b in zip(res.entry_lambda, res.entry_lambda[1:], strict=False))
    assert res.entry_lambda[0] < res.lambda_max
    assert {"lam", "objective", "duality_gap", "active", "entered", "new"} <= set(res.table)
    assert res.table["entered"].iloc[-1] >= 3


def test_default_start_keeps_order_by_norm_and_is_deterministic() -> None:
    X, y, informative = _planted(seed=1)
    res = select_features(torch.from_numpy(X), torch.from_numpy(y), 4, 6)
    assert len(res.order) == 6 and len(set(res.order)) == 6
    assert set(informative) <= set(res.order[:4])
    # features entering at the same step come in decreasing group norm at that step
    first = [int(j) for j in res.table["new"].iloc[0].split()]
    assert len(first) >= 2
    point = solve_path(standardize(X)[0].numpy(), y, 4, alpha=0.8, group=True, n_lambdas=1,
                       start_ratio=0.1, tol=1e-9, val_frac=0.0).points[0]
    norms = point.weight.norm(dim=0)
    assert set(first) == set(torch.nonzero(norms).flatten().tolist())
    assert first == sorted(first, key=lambda j: -float(norms[j]))
    assert res.order[: len(first)] == first[: len(res.order)]
    again = select_features(X, y, 4, 6)
    assert again.order == res.order and again.entry_lambda == res.entry_lambda


def test_errors() -> None:
    X, y, _ = _planted()
    with pytest.raises(QsennError, match="n_features"):
        select_features(X, y, 4, 26)
    with pytest.raises(QsennError, match="max_steps"):
        select_features(X, y, 4, 25, start_ratio=1.0, max_steps=2)
    X[5, 5] = np.inf
    with pytest.raises(QsennError, match="NaN/Inf"):
        select_features(X, y, 4, 3)
    X, y, _ = _planted()
    with pytest.raises(QsennError, match="class 4 has no samples"):
        select_features(X, y, 5, 3)
