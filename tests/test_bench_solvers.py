"""bench/bench_solvers.py: same lambdas for every solver, and each peer's objective mapped onto
the exact solver's (a wrong mapping shows as a large certified gap under our objective)."""

from __future__ import annotations

import argparse
import math
from types import ModuleType

import numpy as np
import pytest
from bench_scripts import load_bench

from qsenn_core.sparse import lambda_grid, solve_path, standardize


def _bench() -> ModuleType:
    return load_bench("bench_solvers")


def _problem(bench: ModuleType, n: int, n_classes: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    X, y = bench.make_features(n, n_classes, d, seed=3)
    return standardize(X)[0].numpy(), y


def test_prefix_grid_is_the_first_points_of_the_grid() -> None:
    bench = _bench()
    grid = {"alpha": 0.99, "group": False, "n_lambdas": 100, "lambda_min_ratio": 1e-3}
    full = lambda_grid(0.7, 100, 1e-3)
    for k in (1, 2, 20, 99):
        sub = bench.prefix_grid(grid, k)
        assert sub["n_lambdas"] == k and sub["alpha"] == 0.99 and sub["group"] is False
        np.testing.assert_allclose(lambda_grid(0.7, k, float(sub["lambda_min_ratio"])),
                                   full[:k], rtol=1e-12)
    assert bench.prefix_grid(grid, 0) == grid and bench.prefix_grid(grid, 100) == grid


def test_benchmark_features_are_nonnegative_correlated_and_seeded() -> None:
    bench = _bench()
    X, y = bench.make_features(2000, 8, 30, seed=1)
    assert X.shape == (2000, 30) and np.array_equal(np.bincount(y), np.full(8, 250))
    assert X.min() >= 0.0 and (X == 0).any()
    corr = np.abs(np.corrcoef(X, rowvar=False)[np.triu_indices(30, 1)]).mean()
    rng = np.random.default_rng(0)
    shuffled = np.column_stack([rng.permutation(col) for col in X.T])
    independent = np.abs(np.corrcoef(shuffled, rowvar=False)[np.triu_indices(30, 1)]).mean()
    assert corr > 2.0 * independent  # the shared latent factors correlate the columns
    assert np.array_equal(X, bench.make_features(2000, 8, 30, seed=1)[0])


def test_path_input_uses_the_exact_solvers_split_and_grid() -> None:
    bench = _bench()
    X, y = _problem(bench, 240, 4, 6)
    exact = solve_path(X, y, 4, alpha=0.9, n_lambdas=4, lambda_min_ratio=0.1, tol=1e-6)
    data = bench.path_input(X, y, 4, alpha=0.9, group=False, n_lambdas=4, lambda_min_ratio=0.1)
    assert np.array_equal(data.train_index, exact.train_index)
    assert math.isclose(data.lambda_max, exact.lambda_max, rel_tol=1e-12)
    np.testing.assert_allclose(data.lambdas, [p.lam for p in exact.points], rtol=1e-12)


@pytest.mark.parametrize("group", [False, True])
def test_glmnet_solves_the_exact_solvers_objective(group: bool) -> None:
    pytest.importorskip("glmnet")
    bench = _bench()
    X, y = _problem(bench, 300, 4, 8)
    alpha = 0.8 if group else 0.99
    grid = {"alpha": alpha, "group": group, "n_lambdas": 8, "lambda_min_ratio": 0.2}
    exact = solve_path(X, y, 4, tol=1e-9, **grid)
    data = bench.path_input(X, y, 4, n_lambdas=8, lambda_min_ratio=0.2, alpha=alpha,
                            group=group)
    res, info = bench.solve_path_glmnet(data, 4, alpha=alpha, group=group, thresh=1e-13,
                                        max_passes=10**6)
    assert info.error_code == 0 and not info.diverged and len(res.points) == 8
    for p, q in zip(exact.points, res.points, strict=True):
        assert q.relative_gap < 1e-5  # certified by our own routine, in float64
        assert abs(q.objective - p.objective) <= 1e-5 * p.objective
    # at lambda_max W = 0 is optimal: glmnet's weights there are zero up to rounding
    assert float(res.points[0].weight.abs().max()) < 1e-8


def test_sklearn_c_maps_the_penalty() -> None:
    pytest.importorskip("sklearn")
    bench = _bench()
    X, y = _problem(bench, 150, 3, 4)
    data = bench.path_input(X, y, 3, alpha=0.5, group=False, n_lambdas=3, lambda_min_ratio=0.3)
    res = bench.solve_path_sklearn_saga(data, 3, alpha=0.5, tol=1e-10, max_epochs=20000)
    exact = solve_path(X, y, 3, alpha=0.5, n_lambdas=3, lambda_min_ratio=0.3, tol=1e-9)
    assert [q.iterations > 0 for q in res.points] == [True] * 3
    for p, q in zip(exact.points, res.points, strict=True):
        assert q.relative_gap < 1e-5
        assert abs(q.objective - p.objective) <= 1e-5 * p.objective
    assert math.isclose(bench.sklearn_c(0.01, 200), 0.5)


def test_lead_in_lambdas_walk_from_lambda_max_to_the_start_at_the_grid_step() -> None:
    bench = _bench()
    X, y = _problem(bench, 240, 4, 6)
    data = bench.path_input(X, y, 4, alpha=0.8, group=True, n_lambdas=3, start_ratio=0.1,
                            lambda_min_ratio=0.81)
    lead = bench.lead_in_lambdas(data, 0.1)
    step = data.lambdas[1] / data.lambdas[0]
    assert math.isclose(lead[0], data.lambda_max) and lead.size == 22  # 0.9^21 > 0.1 > 0.9^22
    np.testing.assert_allclose(lead[1:] / lead[:-1], step, rtol=1e-12)
    assert lead[-1] > data.lambdas[0] >= lead[-1] * step * (1 - 1e-12)
    assert bench.lead_in_lambdas(data, 1.0).size == 0


def test_compare_leaves_points_a_peer_did_not_reach_empty() -> None:
    bench = _bench()
    X, y = _problem(bench, 200, 4, 5)
    exact = solve_path(X, y, 4, alpha=0.99, n_lambdas=4, lambda_min_ratio=0.1, tol=1e-6)
    peer = solve_path(X, y, 4, alpha=0.99, n_lambdas=2, lambda_min_ratio=0.1 ** (1 / 3),
                      tol=1e-3)
    table = bench.compare(exact, peer)
    assert len(table) == 4 and table.gap_peer.iloc[:2].notna().all()
    assert table.gap_peer.iloc[2:].isna().all()
    assert (table.excess_peer.iloc[:2] >= -1e-6).all()  # no solver beats the certified optimum


def test_glmnet_runs_report_a_cut_path_and_drop_the_lead_in() -> None:
    pytest.importorskip("glmnet")
    bench = _bench()
    X, y = _problem(bench, 200, 4, 5)
    data = bench.path_input(X, y, 4, alpha=0.99, group=False, n_lambdas=3, lambda_min_ratio=0.5)
    few = argparse.Namespace(glmnet_lead_in=True, glmnet_thresh=[1e-3], glmnet_max_passes=10)
    [(label, res, seconds, note)] = bench.run_glmnet(data, 4, few, 0.99, False, 1.0)
    assert label == "glmnet (thresh 0.001)" and seconds >= 0.0
    assert res is not None and len(res.points) < 3  # glmnet ran out of passes
    assert f"stopped after {len(res.points)} of 3 points" in note and "code -" in note
    group = bench.path_input(X, y, 4, alpha=0.8, group=True, n_lambdas=3, start_ratio=0.1,
                             lambda_min_ratio=0.81)
    ample = argparse.Namespace(glmnet_lead_in=True, glmnet_thresh=[1e-9],
                               glmnet_max_passes=10**6)
    [(_, res, _, note)] = bench.run_glmnet(group, 4, ample, 0.8, True, 0.1)
    assert res is not None and "22 lead-in points" in note and "stopped" not in note
    np.testing.assert_allclose([p.lam for p in res.points], group.lambdas, rtol=1e-12)
    assert max(p.relative_gap for p in res.points) < 1e-5
