"""bench/bench_solvers.py: glm-saga on a prefix of the path uses the same lambdas."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from qsenn_core.sparse import lambda_grid

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_solvers.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_solvers", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_solvers"] = module
    spec.loader.exec_module(module)
    return module


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
