"""Benchmark: the binary-feature metric, fast 1-D mean shift vs. scikit-learn's MeanShift.

Builds a synthetic training-feature matrix shaped like Q-SENN's (6000 images x 50 features,
ReLU-like, float32 values, many exact zeros; unimodal, bimodal and trimodal columns), counts the
mean-shift clusters of every feature with ``qsenn_core.metrics.binary_feature_counts`` and with
``sklearn.cluster.MeanShift().fit`` per feature, and prints one table: time, speed-up and whether
the cluster counts are identical.

scikit-learn needs tens of seconds per 6000-point feature, so by default it runs on a subset of
the features (``--sklearn-features``, chosen to cover every kind of distribution) and its time
for all features is extrapolated linearly; the table says so. ``--sklearn-features 50`` runs it
on all of them.

    .venv/bin/python bench/bench_binary_features.py [--n 6000] [--features 50]
        [--sklearn-features 5] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.cluster import MeanShift

from qsenn_core.metrics import binary_feature_counts, binary_feature_fraction

KINDS = ("unimodal", "bimodal", "trimodal", "sparse_relu", "bimodal_zero")


def make_features(n: int, n_features: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """(n, n_features) float64 matrix of float32-precision ReLU-like features, and their kinds."""
    rng = np.random.default_rng(seed)
    cols, kinds = [], []
    for j in range(n_features):
        kind = KINDS[j % len(KINDS)]
        if kind == "unimodal":
            x = rng.gamma(2.0 + j % 3, 0.5, n)
        elif kind == "bimodal":
            on = rng.random(n) < rng.uniform(0.2, 0.6)
            x = np.where(on, rng.normal(3.0, 0.4, n), rng.normal(0.6, 0.3, n))
        elif kind == "trimodal":
            mode = rng.integers(0, 3, n)
            x = np.array([0.5, 2.5, 5.0])[mode] + rng.normal(0, 0.35, n)
        elif kind == "sparse_relu":
            x = rng.normal(rng.uniform(-0.5, 0.5), 1.0, n)
        else:  # bimodal_zero: exact zeros (dead ReLU) vs. an active mode
            x = np.where(rng.random(n) < 0.5, rng.normal(2.0, 0.5, n), -1.0)
        cols.append(np.maximum(x, 0.0).astype(np.float32))
        kinds.append(kind)
    return np.stack(cols, axis=1).astype(np.float64), kinds


def time_fast(f: np.ndarray, repeats: int) -> tuple[float, np.ndarray]:
    """Best-of-``repeats`` wall time of the fast counts for all features, and the counts."""
    best, counts = np.inf, np.empty(0, dtype=np.int64)
    for _ in range(repeats):
        t0 = time.perf_counter()
        counts = binary_feature_counts(f)
        best = min(best, time.perf_counter() - t0)
    return best, counts


def time_sklearn(f: np.ndarray, columns: list[int]) -> tuple[float, np.ndarray]:
    """Wall time of scikit-learn's MeanShift on ``columns`` (one fit each), and the counts."""
    counts = []
    t0 = time.perf_counter()
    for j in columns:
        counts.append(len(MeanShift().fit(f[:, [j]]).cluster_centers_))
    return time.perf_counter() - t0, np.array(counts, dtype=np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6000, help="training images (points per feature)")
    ap.add_argument("--features", type=int, default=50, help="number of features")
    ap.add_argument("--sklearn-features", type=int, default=5,
                    help="features scikit-learn runs on (time extrapolated to all)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of the fast timing (best)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    f, kinds = make_features(args.n, args.features, args.seed)
    n_sk = min(args.sklearn_features, args.features)
    # spread the subset over the kinds: features j = 0, 1, ... cycle through KINDS
    columns = list(range(n_sk))

    fast_all, fast_counts = time_fast(f, args.repeats)
    fast_sub, _ = time_fast(f[:, columns], args.repeats)
    sk_sub, sk_counts = time_sklearn(f, columns)
    sk_all = sk_sub / n_sk * args.features
    identical = np.array_equal(fast_counts[columns], sk_counts)
    extrapolated = n_sk < args.features

    print(f"binary-feature metric on {args.n} x {args.features} features "
          f"(float32-valued ReLU-like, seed {args.seed})")
    print()
    header = f"{'implementation':<34}{'features':>9}{'time [s]':>11}{'s/feature':>11}" \
             f"{f'time {args.features} feat. [s]':>22}"
    print(header)
    print("-" * len(header))
    print(f"{'qsenn_core.metrics (fast 1-D)':<34}{args.features:>9}{fast_all:>11.3f}"
          f"{fast_all / args.features:>11.4f}{fast_all:>22.3f}")
    note = " (extrapolated)" if extrapolated else ""
    print(f"{'sklearn MeanShift per feature':<34}{n_sk:>9}{sk_sub:>11.1f}{sk_sub / n_sk:>11.2f}"
          f"{sk_all:>22.1f}{note}")
    print()
    ratio_sub = sk_sub / fast_sub
    print(f"speed-up, same {n_sk} feature(s):          {ratio_sub:,.0f}x")
    print(f"speed-up, all {args.features} features{' (extrap.)' if extrapolated else ''}:"
          f"{'':>6}{sk_all / fast_all:,.0f}x   (goal >= 10x)")
    print(f"cluster counts identical on the {n_sk} compared feature(s): {identical}")
    print(f"  sklearn: {sk_counts.tolist()}")
    print(f"  fast:    {fast_counts[columns].tolist()}")
    print()
    values, freq = np.unique(fast_counts, return_counts=True)
    histogram = ", ".join(f"{int(v)}: {int(c)}" for v, c in zip(values, freq, strict=True))
    print(f"cluster counts of all {args.features} features (fast), count: features -> "
          f"{histogram}")
    by_kind = {k: fast_counts[[i for i, kk in enumerate(kinds) if kk == k]].tolist() for k in KINDS}
    for k, v in by_kind.items():
        print(f"  {k:<14}{v}")
    strict = args.n / 200  # e.g. CUB: average training images per class with 200 classes
    print(f"binary features: {binary_feature_fraction(f):.1%}, strict (clusters >= {strict:g} "
          f"points): {binary_feature_fraction(f, strict_min_cluster=strict):.1%}")


if __name__ == "__main__":
    main()
