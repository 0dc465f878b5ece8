"""SLDD feature selection on planted data: the path walks down from lambda_max and records the
features in the order they enter; steps where several enter at once are bisected."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from qsenn_core.errors import QsennError
from qsenn_core.selection import select_features
from qsenn_core.sparse import standardize

pytestmark = pytest.mark.usefixtures("one_thread")

COLUMNS = {"step", "lam", "lam_ratio", "bisection", "objective", "duality_gap", "active",
           "entered", "new", "train_accuracy"}


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


def _many_informative(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """12 features of similar class signal: several enter within one step of a coarse grid."""
    rng = np.random.default_rng(seed)
    n, d, c = 300, 20, 5
    y = np.arange(n) % c
    X = rng.normal(size=(n, d))
    for j in range(12):
        X[:, j] += (1.0 + 0.05 * j) * (y == j % c)
    return X, y


def test_informative_features_enter_first_in_order() -> None:
    X, y, informative = _planted()
    res = select_features(X, y, 4, 3)
    assert res.order == informative
    # the walk starts at lambda_max, where no feature is active (fewer than n_f*)
    assert res.table["lam"].iloc[0] == pytest.approx(res.lambda_max)
    assert res.table["active"].iloc[0] == 0 < 3
    assert res.entry_lambda[0] < res.lambda_max
    assert all(a >= b for a, b in zip(res.entry_lambda, res.entry_lambda[1:], strict=False))
    assert set(res.table) == COLUMNS  # no wall-clock column: the DVC output is deterministic
    assert res.table["entered"].iloc[-1] == 3 and res.seconds > 0


def test_first_feature_is_the_one_with_the_largest_score_at_lambda_max() -> None:
    # At W = 0 the feature with the largest ||X_j^T (Y - mean(Y))|| violates its optimality
    # condition first as lambda falls below lambda_max: the most informative feature.
    X, y, _ = _planted(seed=3, c=3)
    Xs = standardize(X)[0].numpy()
    Y = np.eye(3)[y]
    score = np.linalg.norm(Xs.T @ (Y - Y.mean(0)), axis=1)
    res = select_features(X, y, 3, 1)
    assert res.order == [int(np.argmax(score))]


def test_overshooting_step_is_bisected_to_exactly_n_select() -> None:
    X, y = _many_informative()
    coarse = select_features(X, y, 5, 7, decay=0.5)
    assert len(coarse.order) == 7 and len(set(coarse.order)) == 7
    assert coarse.table["bisection"].sum() > 0
    assert int(coarse.table["active"].iloc[0]) < 7
    # the set is the path's, not the grid's: a fine grid and a full refinement agree
    fine = select_features(X, y, 5, 7, decay=0.97)
    exact = select_features(X, y, 5, 7, decay=0.5, exact_order=True)
    assert set(coarse.order) == set(fine.order) == set(exact.order)
    assert set(coarse.order) <= set(range(12))
    # with exact_order every accepted point lets at most one feature in (or ties at resolution)
    entering = exact.table["new"].str.split().str.len().fillna(0)
    assert entering.max() == 1
    assert exact.order == fine.order
    assert exact.table["bisection"].sum() > coarse.table["bisection"].sum()


def test_exact_ties_are_broken_deterministically_at_the_resolution() -> None:
    X, y, _ = _planted()
    twin = np.concatenate([X, X[:, [7]]], axis=1)  # feature 25 equals feature 7
    res = select_features(twin, y, 4, 1, resolution=1e-3)
    assert res.order[0] in (7, 25)
    last, before = res.table.iloc[-1], res.table.iloc[-2]
    assert last["bisection"] == 1 and last["active"] == 2 and last["entered"] == 1
    assert np.log(before["lam"] / last["lam"]) <= 1e-3
    both = select_features(twin, y, 4, 2, resolution=1e-3)
    assert sorted(both.order) == [7, 25] and both.order[0] == res.order[0]


def test_deterministic() -> None:
    X, y = _many_informative(seed=1)
    a = select_features(torch.from_numpy(X), torch.from_numpy(y), 5, 6, decay=0.6)
    b = select_features(X, y, 5, 6, decay=0.6)
    assert a.order == b.order and a.entry_lambda == b.entry_lambda
    pd.testing.assert_frame_equal(a.table, b.table)


def test_errors() -> None:
    X, y, _ = _planted()
    with pytest.raises(QsennError, match="n_features"):
        select_features(X, y, 4, 26)
    with pytest.raises(QsennError, match="max_steps"):
        select_features(X, y, 4, 25, max_steps=2)
    with pytest.raises(QsennError, match=r"select\.start_ratio: 0\.01 \* lambda_max already"):
        select_features(X, y, 4, 3, start_ratio=0.01)
    with pytest.raises(QsennError, match="resolution"):
        select_features(X, y, 4, 3, resolution=0.0)
    X[5, 5] = np.inf
    with pytest.raises(QsennError, match="NaN/Inf"):
        select_features(X, y, 4, 3)
    X, y, _ = _planted()
    with pytest.raises(QsennError, match="class 4 has no samples"):
        select_features(X, y, 5, 3)
