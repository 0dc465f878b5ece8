"""Benchmark: the exact path solver vs. glm-saga on CUB-sized synthetic features.

Both solvers get the same features, split, objective and lambda grid:

1. the selection path: group elastic net, alpha = 0.8, d = 2048, lambdas from 0.1 * lambda_max
   down by a factor 0.9 per step (``--select-steps`` points);
2. the sparse path: elastic net, alpha = 0.99, d = 50, ``--n-lambdas`` points from lambda_max
   down to 1e-3 * lambda_max.

For each point: time, objective (float64), certified relative duality gap, nonzeros, and the
relative excess objective of glm-saga over the exact solver. Full size (slow: glm-saga takes
hours on 2 CPU cores)::

    .venv/bin/python bench/bench_solvers.py

Reduced::

    .venv/bin/python bench/bench_solvers.py --n 1200 --classes 40 --d-select 256 \\
        --n-lambdas 10 --select-steps 5

``--glm-points K`` runs glm-saga on the first K points of the *same* grid only (the exact
solver still runs the whole path); the speed-up is then measured on those K points (sum of
per-point seconds of both solvers) and glm-saga's whole-path time is extrapolated linearly.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from qsenn_core.glm_saga_solver import solve_path_glm_saga
from qsenn_core.sparse import PathResult, solve_path, standardize


def make_features(n: int, n_classes: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated non-negative features (post-ReLU-like) with class structure."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rank = 32
    prototypes = rng.gamma(1.0, 1.0, size=(n_classes, d)) * (rng.random((n_classes, d)) < 0.2)
    latent = rng.normal(size=(n, rank)) @ rng.normal(scale=rank ** -0.5, size=(rank, d))
    noise = rng.normal(scale=0.7, size=(n, d))
    X = np.maximum(prototypes[y] + latent + noise - 0.3, 0.0)
    return X, y


def compare(exact: PathResult, saga: PathResult | None) -> pd.DataFrame:
    rows = []
    for i, p in enumerate(exact.points):
        row = {"lam": p.lam, "obj_exact": p.objective, "gap_exact": p.relative_gap,
               "nnz_exact": p.nonzeros, "s_exact": p.seconds}
        if saga is not None and i < len(saga.points):
            q = saga.points[i]
            row.update({"obj_saga": q.objective, "excess_saga": (q.objective - p.objective)
                        / abs(p.objective), "gap_saga": q.relative_gap, "nnz_saga": q.nonzeros,
                        "s_saga": q.seconds})
        rows.append(row)
    return pd.DataFrame(rows)


def prefix_grid(grid: dict[str, float | int | bool], k: int) -> dict[str, float | int | bool]:
    """The grid of the first ``k`` points of ``grid`` (same log-spaced lambdas)."""
    n = int(grid["n_lambdas"])
    if k <= 0 or k >= n:
        return grid
    ratio = float(grid["lambda_min_ratio"]) ** ((k - 1) / (n - 1))
    return {**grid, "n_lambdas": k, "lambda_min_ratio": ratio}


def timed(fn: Callable[[], PathResult]) -> tuple[PathResult, float, float]:
    """(result, wall seconds, CPU seconds of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run(name: str, X: np.ndarray, y: np.ndarray, n_classes: int, args: argparse.Namespace,
        **grid: float | int | bool) -> None:
    exact, t_exact, c_exact = timed(lambda: solve_path(X, y, n_classes, tol=args.exact_tol,
                                                       device=args.device,
                                                       method=args.exact_method, **grid))
    saga, t_saga, c_saga = None, float("nan"), float("nan")
    sub = prefix_grid(grid, args.glm_points)
    if not args.skip_glm_saga:
        saga, t_saga, c_saga = timed(lambda: solve_path_glm_saga(
            X, y, n_classes, tol=args.glm_tol, max_epochs=args.glm_max_epochs,
            device=args.device, **sub))
    table = compare(exact, saga)
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_rows", 500, "display.float_format", "{:.4g}".format):
        print(f"\n== {name}: n={len(y)} classes={n_classes} d={X.shape[1]} {grid}")
        print(table.to_string(index=False))
    method = "fista" if grid.get("group") else args.exact_method  # groups: always FISTA
    print(f"exact ({method}): {t_exact:9.2f} s wall, {c_exact:9.2f} s CPU, "
          f"max relative gap {table.gap_exact.max():.2e}, final nonzeros {exact.final.nonzeros}")
    if saga is None:
        return
    k, n = len(saga.points), len(exact.points)
    part = table.iloc[:k]
    print(f"glm-saga: {t_saga:9.2f} s wall, {c_saga:9.2f} s CPU, max relative gap "
          f"{part.gap_saga.max():.2e}, max excess objective {part.excess_saga.max():.2e}, "
          f"max |nnz_saga - nnz_exact| {int((part.nnz_saga - part.nnz_exact).abs().max())}")
    if k < n:
        _, _, c_prefix = timed(lambda: solve_path(X, y, n_classes, tol=args.exact_tol,
                                                  device=args.device,
                                                  method=args.exact_method, **sub))
        print(f"glm-saga ran the first {k} of {n} points; exact on the same {k} points: "
              f"{c_prefix:.2f} s CPU -> speed-up {c_saga / c_prefix:.1f}x (CPU). glm-saga's "
              f"whole path extrapolated linearly: {c_saga * n / k:.0f} s CPU "
              f"({c_saga * n / k / c_exact:.1f}x the exact path)")
    else:
        print(f"speed-up: {c_saga / c_exact:.1f}x (CPU), {t_saga / t_exact:.1f}x (wall)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--d-select", type=int, default=2048)
    parser.add_argument("--d-sparse", type=int, default=50)
    parser.add_argument("--n-lambdas", type=int, default=100)
    parser.add_argument("--select-steps", type=int, default=20)
    parser.add_argument("--exact-tol", type=float, default=1e-6)
    parser.add_argument("--exact-method", choices=["newton", "fista"], default="newton",
                        help="the exact solver's steps on the elastic-net path (the group "
                             "path always uses FISTA)")
    parser.add_argument("--glm-tol", type=float, default=1e-4)
    parser.add_argument("--glm-max-epochs", type=int, default=2000)
    parser.add_argument("--glm-points", type=int, default=0,
                        help="run glm-saga on the first K grid points only (0: all)")
    parser.add_argument("--skip-glm-saga", action="store_true")
    parser.add_argument("--only", choices=["select", "sparse"], default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)

    X, y = make_features(args.n, args.classes, args.d_select, args.seed)
    Xs = standardize(X)[0].numpy()
    if args.only in (None, "select"):
        steps = args.select_steps
        run("selection path (group, alpha=0.8)", Xs, y, args.classes, args, alpha=0.8,
            group=True, start_ratio=0.1, n_lambdas=steps, lambda_min_ratio=0.9 ** (steps - 1))
    if args.only in (None, "sparse"):
        Xd = standardize(X[:, : args.d_sparse])[0].numpy()
        run("sparse path (elastic net, alpha=0.99)", Xd, y, args.classes, args, alpha=0.99,
            group=False, n_lambdas=args.n_lambdas, lambda_min_ratio=1e-3)


if __name__ == "__main__":
    main()
