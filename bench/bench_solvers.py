"""Benchmark: the exact path solver vs. its peers on CUB-sized synthetic features.

Peers (``--peer``, repeatable; ``--peer none`` runs the exact solver alone):

- ``glm-saga``: the authors' package (:mod:`qsenn_core.glm_saga_solver`), stochastic;
- ``glmnet``: the Fortran glmnet (coordinate descent, Friedman, Hastie & Tibshirani 2010) through
  ``python-glmnet``, multinomial family, standardization off, intercepts on, the given lambda
  grid; ``--glmnet-thresh`` may repeat (one run each). The group path runs its grouped
  multinomial (``type.multinomial = "grouped"``): the same column-l2 penalty;
- ``sklearn-saga``: scikit-learn's ``LogisticRegression(solver="saga")``, multinomial with an
  elastic-net penalty, warm-started along the grid (elastic-net path only: it has no group
  penalty).

Every solver gets the same standardized features, training split
(:func:`qsenn_core.sparse.split_train_val`), lambda_max and lambda grid, and solves the same
objective (:mod:`qsenn_core.sparse`, with the paper's elastic net of glm-saga)::

    P(W, b) = 1/n sum_i CE(W x_i + b, y_i) + lam * (alpha Omega(W) + (1 - alpha) / 2 ||W||_F^2).

glmnet's multinomial objective is exactly this one with its ``lambda = lam`` (its observation
weights are normalized to mean 1/n, its penalty is ``(1-alpha)/2 ||B||^2 + alpha ||B||_1``);
scikit-learn minimizes ``C sum_i CE + l1_ratio ||W||_1 + (1 - l1_ratio)/2 ||W||_F^2``, which is
``C n`` times P with ``C = 1 / (n lam)`` and ``l1_ratio = alpha``. Each peer's points get their
objective and certified relative duality gap recomputed in float64 by
:func:`qsenn_core.sparse.objective_and_gap`, the routine that certifies the exact solver.

Two paths:

1. the selection path: group elastic net, alpha = 0.8, d = 2048, lambdas from 0.1 * lambda_max
   down by a factor 0.9 per step (``--select-steps`` points);
2. the sparse path: elastic net, alpha = 0.99, d = 50, ``--n-lambdas`` points from lambda_max
   down to 1e-3 * lambda_max.

Times are CPU seconds of this process (``time.process_time``) with ``--threads`` threads in
torch and in every BLAS/OpenMP pool (default 1: the main figure on a shared machine). For each
peer: its time, its certified gaps, and the exact solver's time on the same points both at
``--exact-tol`` and at the peer's worst certified gap (the speed-up at equal certified gap).

    .venv/bin/python bench/bench_solvers.py --peer glmnet --peer sklearn-saga

Reduced::

    .venv/bin/python bench/bench_solvers.py --n 1200 --classes 40 --d-select 256 \\
        --n-lambdas 10 --select-steps 5

``--peer-points K`` runs glm-saga and glmnet on the first K points of the *same* grid only
(``--sklearn-points`` for scikit-learn's saga, default 10: the first, easiest points alone take
it minutes at full size); the exact solver then also solves those K points alone, and that is
what the peer's time is compared with.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from qsenn_core.errors import QsennError
from qsenn_core.glm_saga_solver import solve_path_glm_saga
from qsenn_core.sparse import (
    PathPoint,
    PathResult,
    accuracy,
    lambda_grid,
    lambda_max,
    objective_and_gap,
    prepare,
    require_all_classes,
    solve_path,
    split_train_val,
    standardize,
)

PEERS: tuple[str, ...] = ("glm-saga", "glmnet", "sklearn-saga")

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


# --------------------------------------------------------------------------- shared set-up


@dataclass(frozen=True)
class PathInput:
    """The training split and lambda grid that :func:`qsenn_core.sparse.solve_path` would use."""

    X_train: torch.Tensor  # float64
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    train_index: np.ndarray
    val_index: np.ndarray
    lambdas: np.ndarray
    lambda_max: float


def path_input(X: np.ndarray, y: np.ndarray, n_classes: int, *, alpha: float, group: bool,
               n_lambdas: int, lambda_min_ratio: float, start_ratio: float = 1.0,
               val_frac: float = 0.1, seed: int = 0) -> PathInput:
    """Same split, lambda_max and grid as ``solve_path`` with these arguments."""
    Xt, yt = prepare(X, y, n_classes)
    train_idx, val_idx = split_train_val(yt.numpy(), val_frac, seed)
    X64 = Xt.to(torch.float64)
    X_tr, y_tr = X64[train_idx], yt[train_idx]
    require_all_classes(y_tr, n_classes)
    Y_tr = torch.nn.functional.one_hot(y_tr, n_classes).to(torch.float64)
    lmax = lambda_max(X_tr, Y_tr, alpha, group)
    grid = lambda_grid(start_ratio * lmax, n_lambdas, lambda_min_ratio)
    return PathInput(X_tr, y_tr, X64[val_idx], yt[val_idx], train_idx,
                     np.asarray(val_idx, dtype=np.int64), grid, lmax)


def certified_point(data: PathInput, lam: float, weight: np.ndarray, bias: np.ndarray,
                    alpha: float, group: bool, seconds: float, iterations: int = 0) -> PathPoint:
    """A peer's (W, b) as a :class:`PathPoint`: objective and certified gap in float64."""
    W = torch.as_tensor(np.asarray(weight, dtype=np.float64))
    b = torch.as_tensor(np.asarray(bias, dtype=np.float64))
    if not (torch.isfinite(W).all() and torch.isfinite(b).all()):
        raise QsennError(f"peer returned NaN/Inf weights at lambda {lam:.4g}")
    res = objective_and_gap(data.X_train, data.y_train, W, b, lam, alpha, group, W.shape[0])
    return PathPoint(lam=lam, weight=W, bias=b, objective=res.primal,
                     duality_gap=max(res.gap, 0.0), nonzeros=int((W != 0).sum()),
                     train_acc=accuracy(data.X_train, data.y_train, W, b),
                     val_acc=accuracy(data.X_val, data.y_val, W, b), seconds=seconds,
                     iterations=iterations)


# --------------------------------------------------------------------------- glmnet


@dataclass(frozen=True)
class GlmnetRun:
    """What glmnet returned besides the path: passes over the data, exit code, divergence."""

    passes: int
    error_code: int
    diverged: bool  # NaN/Inf weights: the path is cut before the first such point


def solve_path_glmnet(data: PathInput, n_classes: int, *, alpha: float, group: bool,
                      thresh: float, max_passes: int) -> tuple[PathResult, GlmnetRun]:
    """glmnet's multinomial path on ``data.lambdas`` (``lognet``: standardization off, intercept).

    ``thresh`` is glmnet's convergence threshold (coordinate descent stops when no coefficient
    update changes the weighted deviance by more than thresh times the null deviance) and
    ``max_passes`` its ``maxit``, the total number of passes over the data for the *whole* path.
    glmnet stops early (returning fewer points) when it runs out of passes or the fitted
    probabilities saturate; a fatal code raises :class:`QsennError`. Its Newton steps have no
    line search: where they diverge (NaN/Inf weights) the path is cut before that point. One
    Fortran call solves the whole path, so the points carry no time of their own (NaN).
    """
    from glmnet._glmnet import lognet, lsolns  # benchmark-only dependency (dev extra)

    X = np.asfortranarray(data.X_train.numpy(), dtype=np.float64)
    y = data.y_train.numpy()
    n, d = X.shape
    Y = np.asfortranarray(np.eye(n_classes)[y], dtype=np.float64)
    offsets = np.zeros((n, n_classes), dtype=np.float64, order="F")
    bounds = np.asfortranarray(np.vstack([np.full(d, -np.inf), np.full(d, np.inf)]))
    lambdas = np.asarray(data.lambdas, dtype=np.float64)
    # flmin = 1 means "use ulam as given"; kopt 2 = grouped multinomial (column-l2 penalty)
    (n_fit, intercepts, packed, packed_index, n_in, _dev0, _dev, lam_used, passes,
     error_code) = lognet(alpha, n_classes, X, Y, offsets, np.zeros(1, dtype=np.int32),
                          np.ones(d), bounds, d + 1, 1.0, lambdas, thresh, ne=d,
                          nlam=len(lambdas), isd=0, intr=1, maxit=max_passes,
                          kopt=2 if group else 0)
    if error_code > 0:
        raise QsennError(f"glmnet: fatal error code {error_code} (thresh {thresh:g})")
    if n_fit == 0:
        raise QsennError(f"glmnet: no path point converged (code {error_code})")
    if not np.allclose(lam_used[:n_fit], lambdas[:n_fit], rtol=1e-10):
        raise QsennError("glmnet: used other lambdas than the grid it was given")
    coef = lsolns(d, packed[:, :, :n_fit], packed_index, n_in[:n_fit])  # (d, n_c, n_fit)
    finite = [bool(np.isfinite(coef[:, :, k]).all() and np.isfinite(intercepts[:, k]).all())
              for k in range(n_fit)]
    n_good = finite.index(False) if False in finite else n_fit
    if n_good == 0:
        raise QsennError(f"glmnet: NaN/Inf weights at the first point (thresh {thresh:g})")
    points = [certified_point(data, float(lambdas[k]), coef[:, :, k].T, intercepts[:, k],
                              alpha, group, seconds=float("nan"))
              for k in range(n_good)]
    result = PathResult(points=points, lambda_max=data.lambda_max, alpha=alpha, group=group,
                        solver=f"glmnet (thresh {thresh:g})", train_index=data.train_index,
                        val_index=data.val_index)
    return result, GlmnetRun(passes=int(passes), error_code=int(error_code),
                             diverged=n_good < n_fit)


# --------------------------------------------------------------------------- scikit-learn saga


def sklearn_c(lam: float, n: int) -> float:
    """scikit-learn's C for our lam: C sum_i CE + r(W) = C n (mean CE + r(W) / (C n))."""
    return 1.0 / (n * lam)


def solve_path_sklearn_saga(data: PathInput, n_classes: int, *, alpha: float, tol: float,
                            max_epochs: int, seed: int = 0) -> PathResult:
    """scikit-learn's saga on ``data.lambdas``, warm-started from the previous point.

    ``l1_ratio = alpha`` and ``C = 1 / (n lam)`` (:func:`sklearn_c`); ``tol`` is saga's own rule
    (max weight change relative to the max weight), ``max_epochs`` its ``max_iter`` per point.
    Needs >= 3 classes: with 2, scikit-learn fits one weight vector (binary logistic), a
    different penalty than the two-row multinomial one.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if n_classes < 3:
        raise QsennError("sklearn-saga: needs >= 3 classes for the multinomial objective")
    X, y = data.X_train.numpy(), data.y_train.numpy()
    model = LogisticRegression(l1_ratio=alpha, solver="saga", tol=tol, max_iter=max_epochs,
                               warm_start=True, random_state=seed)
    points = []
    for lam in tqdm(data.lambdas, desc="sklearn saga path", disable=None):
        model.set_params(C=sklearn_c(float(lam), X.shape[0]))
        start = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X, y)
        seconds = time.process_time() - start
        points.append(certified_point(data, float(lam), model.coef_, model.intercept_, alpha,
                                      False, seconds, iterations=int(np.max(model.n_iter_))))
    return PathResult(points=points, lambda_max=data.lambda_max, alpha=alpha, group=False,
                      solver="sklearn-saga", train_index=data.train_index,
                      val_index=data.val_index)


# --------------------------------------------------------------------------- reporting


def compare(exact: PathResult, peer: PathResult | None) -> pd.DataFrame:
    """One row per exact path point; the peer's columns where it has that point."""
    rows = []
    for i, p in enumerate(exact.points):
        row = {"lam": p.lam, "obj_exact": p.objective, "gap_exact": p.relative_gap,
               "nnz_exact": p.nonzeros, "s_exact": p.seconds}
        if peer is not None and i < len(peer.points):
            q = peer.points[i]
            row.update({"obj_peer": q.objective, "excess_peer": (q.objective - p.objective)
                        / abs(p.objective), "gap_peer": q.relative_gap, "nnz_peer": q.nonzeros,
                        "s_peer": q.seconds})
        rows.append(row)
    return pd.DataFrame(rows)


def prefix_grid(grid: dict[str, float | int | bool], k: int) -> dict[str, float | int | bool]:
    """The grid of the first ``k`` points of ``grid`` (same log-spaced lambdas)."""
    n = int(grid["n_lambdas"])
    if k <= 0 or k >= n:
        return grid
    ratio = float(grid["lambda_min_ratio"]) ** ((k - 1) / (n - 1))
    return {**grid, "n_lambdas": k, "lambda_min_ratio": ratio}


def timed(fn: Callable[[], PathResult]) -> tuple[PathResult, float]:
    """(result, CPU seconds of this process) of ``fn()``."""
    cpu = time.process_time()
    out = fn()
    return out, time.process_time() - cpu


def _print_table(title: str, table: pd.DataFrame, every: int) -> None:
    keep = [i for i in range(len(table)) if i % every == 0 or i == len(table) - 1]
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_rows", 500, "display.float_format", "{:.4g}".format):
        print(f"\n-- {title} (every {every}th point and the last)")
        print(table.iloc[keep].to_string(index=False))


def lead_in_lambdas(data: PathInput, start_ratio: float) -> np.ndarray:
    """Lambdas from lambda_max down to (not including) the grid's first one, at the grid's step.

    glmnet starts every path from W = 0 and warm-starts each point from the previous one; its
    Newton steps have no line search, so a path that starts far below lambda_max (the
    selection path starts at 0.1 lambda_max) needs these points first, as glmnet computes its
    own grids. Their time counts as glmnet's; they are not compared.
    """
    if start_ratio >= 1.0:
        return np.zeros(0)
    lams = data.lambdas
    step = lams[1] / lams[0] if len(lams) > 1 else 0.9
    k = int(math.floor(math.log(start_ratio) / math.log(step) - 1e-9))
    return data.lambda_max * step ** np.arange(k + 1) if k >= 0 else np.zeros(0)


PeerRun = tuple[str, PathResult | None, float, str]


def run_glmnet(data: PathInput, n_classes: int, args: argparse.Namespace, alpha: float,
               group: bool, start_ratio: float) -> list[PeerRun]:
    """One glmnet run per ``--glmnet-thresh``; a failed run has no path and says why."""
    lead = lead_in_lambdas(data, start_ratio) if args.glmnet_lead_in else np.zeros(0)
    fed = dataclasses.replace(data, lambdas=np.concatenate([lead, data.lambdas]))
    runs: list[PeerRun] = []
    for thresh in args.glmnet_thresh:
        label = f"glmnet (thresh {thresh:g})"
        start = time.process_time()
        try:
            res, info = solve_path_glmnet(fed, n_classes, alpha=alpha, group=group,
                                          thresh=thresh, max_passes=args.glmnet_max_passes)
        except QsennError as err:
            runs.append((label, None, time.process_time() - start, f"failed: {err}"))
            continue
        cpu = time.process_time() - start
        note = f"{info.passes} passes, code {info.error_code}"
        if lead.size:
            note += f", {lead.size} lead-in points from lambda_max first"
        if info.diverged:
            note += ", NaN/Inf weights after the last point"
        res.points = res.points[lead.size:]
        if len(res.points) < len(data.lambdas):
            note += f", stopped after {len(res.points)} of {len(data.lambdas)} points"
        runs.append((label, res if res.points else None, cpu, note))
    return runs


def run_peer(peer: str, X: np.ndarray, y: np.ndarray, n_classes: int, args: argparse.Namespace,
             grid: dict[str, float | int | bool]) -> list[PeerRun]:
    """[(label, path or None, CPU s, note)] of one peer on ``grid`` (glmnet: per threshold)."""
    alpha, group = float(grid["alpha"]), bool(grid["group"])
    sub = {k: v for k, v in grid.items() if k not in ("alpha", "group")}
    if peer == "glm-saga":
        res, cpu = timed(lambda: solve_path_glm_saga(
            X, y, n_classes, tol=args.glm_tol, max_epochs=args.glm_max_epochs,
            device=args.device, **grid))
        return [("glm-saga", res, cpu, f"its tol {args.glm_tol:g}")]
    data = path_input(X, y, n_classes, alpha=alpha, group=group, seed=args.seed, **sub)
    if peer == "sklearn-saga":
        res, cpu = timed(lambda: solve_path_sklearn_saga(
            data, n_classes, alpha=alpha, tol=args.sklearn_tol, max_epochs=args.sklearn_epochs,
            seed=args.seed))
        return [("sklearn-saga", res, cpu, f"tol {args.sklearn_tol:g}, "
                 f"max_iter {args.sklearn_epochs} per point")]
    return run_glmnet(data, n_classes, args, alpha, group, float(grid.get("start_ratio", 1.0)))


def run(name: str, X: np.ndarray, y: np.ndarray, n_classes: int, args: argparse.Namespace,
        **grid: float | int | bool) -> None:
    """Exact path, then every peer on the same grid; prints tables and speed-ups (CPU time)."""
    def exact_path(tol: float, on: dict[str, float | int | bool]) -> tuple[PathResult, float]:
        return timed(lambda: solve_path(X, y, n_classes, tol=tol, device=args.device,
                                        seed=args.seed, method=args.exact_method, **on))

    print(f"\n== {name}: n={len(y)} classes={n_classes} d={X.shape[1]} {grid}")
    exact, c_exact = exact_path(args.exact_tol, grid)
    gaps = np.array([p.relative_gap for p in exact.points])
    method = "fista" if grid.get("group") else args.exact_method  # groups: always FISTA
    print(f"exact ({method}, tol {args.exact_tol:g}): {c_exact:9.2f} s CPU, {len(gaps)} points, "
          f"max relative gap {gaps.max():.2e}, final nonzeros {exact.final.nonzeros}")
    n = len(exact.points)
    for peer in args.peer:
        if peer == "sklearn-saga" and grid.get("group"):
            print("sklearn-saga: no group penalty, skipped on this path")
            continue
        k_want = args.sklearn_points if peer == "sklearn-saga" else args.peer_points
        sub = prefix_grid(grid, k_want)
        for label, res, c_peer, note in run_peer(peer, X, y, n_classes, args, sub):
            if res is None:
                print(f"{label}: no point to compare after {c_peer:.2f} s CPU ({note})")
                continue
            table = compare(exact, res)
            _print_table(f"exact vs {label}", table, args.print_every)
            k = len(res.points)
            part = table.iloc[:k]
            worst = float(part.gap_peer.max())
            reached = int((part.gap_peer <= args.exact_tol).sum())
            print(f"{label} ({note}): {c_peer:9.2f} s CPU on {k} points, relative gap max "
                  f"{worst:.2e} / median {float(part.gap_peer.median()):.2e}, {reached} of {k} "
                  f"points <= {args.exact_tol:g}, max excess objective "
                  f"{float(part.excess_peer.max()):.2e}, max |nnz - nnz_exact| "
                  f"{int((part.nnz_peer - part.nnz_exact).abs().max())}")
            on = grid if k >= n else prefix_grid(grid, k)
            c_same = c_exact if k >= n else exact_path(args.exact_tol, on)[1]
            print(f"  exact, same {k} points, tol {args.exact_tol:g}: {c_same:.2f} s CPU -> "
                  f"{c_peer / c_same:.1f}x faster than {label} (whose gaps are up to "
                  f"{worst:.1e})")
            if worst > args.exact_tol:
                matched, c_matched = exact_path(worst, on)
                worst_exact = max(p.relative_gap for p in matched.points)
                print(f"  exact, same {k} points, tol {worst:.2e} (the peer's worst gap): "
                      f"{c_matched:.2f} s CPU, its max gap {worst_exact:.2e} -> "
                      f"{c_peer / c_matched:.1f}x faster at equal certified gap")


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
    parser.add_argument("--peer", action="append", choices=[*PEERS, "none"], default=None,
                        help="peer solver(s) to compare with (repeatable; default glm-saga)")
    parser.add_argument("--peer-points", type=int, default=0,
                        help="run glm-saga and glmnet on the first K grid points only (0: all)")
    parser.add_argument("--glm-tol", type=float, default=1e-4)
    parser.add_argument("--glm-max-epochs", type=int, default=2000)
    parser.add_argument("--glmnet-thresh", type=float, action="append", default=None,
                        help="glmnet's convergence threshold (repeatable; default 1e-7 and 1e-10)")
    parser.add_argument("--glmnet-max-passes", type=int, default=1_000_000,
                        help="glmnet's maxit: passes over the data for the whole path")
    parser.add_argument("--glmnet-lead-in", action=argparse.BooleanOptionalAction, default=True,
                        help="give glmnet the points from lambda_max down to the path's start")
    parser.add_argument("--sklearn-tol", type=float, default=1e-6)
    parser.add_argument("--sklearn-epochs", type=int, default=1000,
                        help="scikit-learn saga's max_iter (epochs) per point")
    parser.add_argument("--sklearn-points", type=int, default=10,
                        help="run scikit-learn's saga on the first K grid points only (0: all)")
    parser.add_argument("--only", choices=["select", "sparse"], default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of torch and of every BLAS/OpenMP pool")
    parser.add_argument("--print-every", type=int, default=10)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.peer = [p for p in (args.peer or ["glm-saga"]) if p != "none"]
    args.glmnet_thresh = args.glmnet_thresh or [1e-7, 1e-10]
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)

    with threadpool_limits(limits=args.threads):
        X, y = make_features(args.n, args.classes, args.d_select, args.seed)
        if args.only in (None, "select"):
            steps = args.select_steps
            Xs = standardize(X)[0].numpy()
            run("selection path (group, alpha=0.8)", Xs, y, args.classes, args, alpha=0.8,
                group=True, start_ratio=0.1, n_lambdas=steps,
                lambda_min_ratio=0.9 ** (steps - 1))
        if args.only in (None, "sparse"):
            Xd = standardize(X[:, : args.d_sparse])[0].numpy()
            run("sparse path (elastic net, alpha=0.99)", Xd, y, args.classes, args, alpha=0.99,
                group=False, n_lambdas=args.n_lambdas, lambda_min_ratio=1e-3)


if __name__ == "__main__":
    main()
