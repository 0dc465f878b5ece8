"""The exact path solver: objective, lambda_max, certified duality gap, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from qsenn_core import sparse
from qsenn_core.errors import QsennError


def _data(n: int = 150, d: int = 6, c: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    X = rng.normal(size=(n, d)) + 1.6 * np.eye(c, d)[y] + 0.5 * rng.normal(size=(n, 1))
    return sparse.standardize(X)[0].numpy(), y


def test_standardize_guards_constant_columns() -> None:
    X = np.column_stack([np.arange(5.0), np.full(5, 3.0), [1.0, 0.0, 1.0, 0.0, 1.0]])
    Xs, mean, std = sparse.standardize(X)
    assert torch.allclose(mean, torch.tensor([2.0, 3.0, 0.6], dtype=torch.float64))
    assert float(std[1]) == 1.0
    assert torch.all(Xs[:, 1] == 0)
    assert torch.allclose(Xs[:, [0, 2]].std(0), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(Xs.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_stratified_split_is_seeded() -> None:
    y = np.repeat(np.arange(4), [10, 20, 1, 30])
    tr, va = sparse.split_train_val(y, 0.1, seed=3)
    assert np.array_equal(np.bincount(y[va], minlength=4), [1, 2, 0, 3])
    assert np.intersect1d(tr, va).size == 0 and tr.size + va.size == y.size
    assert np.array_equal(va, sparse.split_train_val(y, 0.1, seed=3)[1])
    assert not np.array_equal(va, sparse.split_train_val(y, 0.1, seed=4)[1])


@pytest.mark.parametrize("group", [False, True])
def test_lambda_max_is_the_first_nonzero(group: bool) -> None:
    X, y = _data()
    lmax = sparse.lambda_max(torch.from_numpy(X), torch.from_numpy(y), 0.99, group)
    path = sparse.solve_path(X, y, 3, n_lambdas=2, lambda_min_ratio=0.98, tol=1e-8,
                             group=group, val_frac=0.0)
    assert path.lambda_max == pytest.approx(lmax)
    assert path.points[0].lam == pytest.approx(lmax)
    assert path.points[0].nonzeros == 0
    assert path.points[1].nonzeros > 0


def test_matches_sklearn_saga_objective() -> None:
    X, y = _data()
    n = len(y)
    path = sparse.solve_path(X, y, 3, n_lambdas=6, lambda_min_ratio=1e-2, tol=1e-9, val_frac=0.0)
    for point in path.points[2::3]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf = LogisticRegression(C=1.0 / (point.lam * n), l1_ratio=0.99, solver="saga",
                                     tol=1e-12, max_iter=100000).fit(X, y)
        ref = sparse.objective_and_gap(X, y, clf.coef_, clf.intercept_, point.lam, 0.99, False)
        assert point.objective == pytest.approx(ref.primal, rel=1e-6)
        assert point.objective <= ref.primal * (1 + 1e-9)
        assert point.duality_gap <= 1e-9 * point.objective
        # the certificate is a lower bound of every primal value (weak duality)
        ours = sparse.objective_and_gap(X, y, point.weight, point.bias, point.lam, 0.99, False)
        assert ours.dual <= ref.primal + 1e-12


@pytest.mark.parametrize(("alpha", "group"), [(0.99, False), (0.8, True), (1.0, False),
                                              (1.0, True)])
def test_gap_is_certified_and_below_tol(alpha: float, group: bool) -> None:
    X, y = _data(d=8, c=4, seed=1)
    tol = 1e-7
    path = sparse.solve_path(X, y, 4, alpha=alpha, group=group, n_lambdas=5, tol=tol)
    rng = np.random.default_rng(0)
    tr = path.train_index
    for p in path.points:
        assert 0.0 <= p.duality_gap <= tol * p.objective + 1e-15
        if group:  # whole feature columns enter and leave together
            col_nnz = (p.weight != 0).sum(0)
            assert bool(((col_nnz == 0) | (col_nnz == 4)).all())
        # D is a lower bound: no perturbed point may have a smaller objective than it
        for _ in range(3):
            W = p.weight + 0.01 * torch.from_numpy(rng.normal(size=tuple(p.weight.shape)))
            other = sparse.objective_and_gap(X[tr], y[tr], W, p.bias, p.lam, alpha, group)
            assert other.primal >= p.objective - p.duality_gap - 1e-12
            assert other.dual <= p.objective + 1e-12
    assert list(path.table.columns[:3]) == ["lam", "objective", "duality_gap"]
    assert {"nonzeros", "train_accuracy", "val_accuracy"} <= set(path.table.columns)
    assert "seconds" not in path.table.columns  # a DVC-tracked plot holds no wall-clock time
    assert all(p.seconds > 0 for p in path.points)


def test_gap_of_a_poor_point_is_large_but_valid() -> None:
    X, y = _data()
    best = sparse.solve_path(X, y, 3, n_lambdas=1, start_ratio=0.05, tol=1e-10, val_frac=0.0)
    lam = best.points[0].lam
    res = sparse.objective_and_gap(X, y, torch.zeros(3, 6), torch.zeros(3), lam, 0.99, False)
    assert res.gap > 1e-2
    assert res.dual <= best.points[0].objective + 1e-12


def test_deterministic_and_path_shapes() -> None:
    X, y = _data()
    a = sparse.solve_path(X, y, 3, n_lambdas=4, tol=1e-6, seed=1)
    b = sparse.solve_path(X, y, 3, n_lambdas=4, tol=1e-6, seed=1)
    assert len(a.points) == 4 and a.final is a.points[-1]
    assert a.final.weight.shape == (3, 6) and a.final.bias.shape == (3,)
    for p, q in zip(a.points, b.points, strict=True):
        assert torch.equal(p.weight, q.weight) and torch.equal(p.bias, q.bias)
    lams = a.table["lam"].to_numpy()
    assert np.allclose(lams[1:] / lams[:-1], 1e-3 ** (1 / 3))
    assert 0.0 <= a.final.val_acc <= 1.0 and a.final.train_acc > 0.6


def test_newton_reaches_the_fista_optimum_in_fewer_iterations() -> None:
    # nearly separable classes and a tiny ridge: the regime where FISTA needs many iterations
    X, y = _data(n=400, d=12, c=5, seed=2)
    kwargs = {"n_lambdas": 12, "lambda_min_ratio": 1e-3, "tol": 1e-9, "val_frac": 0.0}
    newton = sparse.solve_path(X, y, 5, method="newton", **kwargs)
    fista = sparse.solve_path(X, y, 5, method="fista", **kwargs)
    for p, q in zip(newton.points, fista.points, strict=True):
        assert p.duality_gap <= 1e-9 * p.objective + 1e-15
        assert p.objective == pytest.approx(q.objective, rel=2e-9)
        assert torch.allclose(p.weight, q.weight, atol=1e-3)
    late = slice(6, None)
    its_newton = sum(p.iterations for p in newton.points[late])
    its_fista = sum(p.iterations for p in fista.points[late])
    assert its_newton * 5 < its_fista, (its_newton, its_fista)


def _group_problem(d: int = 40) -> tuple[sparse.Problem, float]:
    """Group path data: 4 informative features among ``d``; lam where a few groups are active."""
    rng = np.random.default_rng(5)
    y = np.arange(300) % 4
    X = rng.normal(size=(300, d))
    X[:, :4] += 1.5 * np.eye(4)[y]
    Xt = sparse.standardize(X)[0]
    prob = sparse.Problem.build(Xt, torch.from_numpy(y), 4, 0.8, group=True)
    return prob, 0.3 * sparse.lambda_max(prob.X, prob.Y, 0.8, group=True)


def _fista_from_zero(prob: sparse.Problem, lam: float, single: bool) -> sparse._Fista:
    cols = torch.arange(prob.X.shape[1])
    W = prob.X.new_zeros(prob.Y.shape[1], cols.numel())
    return sparse._fista(prob, prob.X, cols, W, sparse.initial_bias(prob.counts), lam, 1e-10,
                         20000, 1.0, single=single)


def _full_objective(prob: sparse.Problem, res: sparse._Fista, lam: float) -> float:
    W = prob.X.new_zeros(prob.Y.shape[1], prob.X.shape[1])
    W[:, res.cols] = res.weight
    return prob.objective(prob.X @ W.T + res.bias, W, lam)


def test_fista_prunes_features_that_stay_at_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    prob, lam = _group_problem()
    pruned = _fista_from_zero(prob, lam, single=False)
    assert pruned.cols.tolist() == [0, 1, 2, 3]  # the informative features, all active
    assert bool((pruned.weight.norm(dim=0) > 0).all())
    assert torch.equal(pruned.Xa, prob.X[:, pruned.cols])
    monkeypatch.setattr(sparse, "_PRUNE_MARGIN", 0.0)  # scores are >= 0: nothing is dropped
    full = _fista_from_zero(prob, lam, single=False)
    assert full.cols.numel() == 40
    assert _full_objective(prob, pruned, lam) == pytest.approx(
        _full_objective(prob, full, lam), rel=1e-9)


def test_float32_products_then_a_float64_certificate() -> None:
    prob, lam = _group_problem()
    double = _fista_from_zero(prob, lam, single=False)
    assert prob._single is None  # single=False never builds the float32 copy
    mixed = _fista_from_zero(prob, lam, single=True)
    assert prob._single is not None and prob._single.dtype == torch.float32
    assert mixed.Xa.dtype == torch.float64 and mixed.weight.dtype == torch.float64
    W = prob.X.new_zeros(4, 40)
    W[:, mixed.cols] = mixed.weight
    res = sparse.objective_and_gap(prob.X, prob.y, W, mixed.bias, lam, 0.8, True)
    assert res.gap <= 1e-10 * res.primal
    assert res.primal == pytest.approx(_full_objective(prob, double, lam), rel=1e-9)


def test_hessian_product_in_low_precision_is_close_to_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(300, 8, generator=gen, dtype=torch.float64)
    P = torch.softmax(torch.randn(300, 5, generator=gen, dtype=torch.float64) * 2, dim=1)
    D = torch.randn(5, 8, generator=gen, dtype=torch.float64)
    db = torch.randn(5, generator=gen, dtype=torch.float64)
    free = torch.ones(5, 8, dtype=torch.bool)
    free[0, :3] = False
    HW, Hb = sparse._hessian_product(X, P, free, 0.01, D, db)
    low = X.to(sparse._hessian_matmul_dtype(X))
    assert low.dtype in (torch.bfloat16, torch.float32)
    HW_low, Hb_low = sparse._hessian_product(low, P.to(torch.float32), free, 0.01, D, db)
    assert HW_low.dtype == torch.float64 and bool((HW_low[0, :3] == 0).all())
    assert float((HW_low - HW).norm() / HW.norm()) < 2e-2
    assert float((Hb_low - Hb).norm() / Hb.norm()) < 2e-2


def test_pseudo_gradient_is_zero_exactly_at_optimality() -> None:
    W = torch.tensor([[0.0, 1.0, -1.0, 0.0, 2.0]])
    G = torch.tensor([[0.05, -0.1, 0.1, 0.3, 0.1]])
    pg = sparse._pseudo_gradient(W, G, thr=0.1)
    # optimal: |G| <= thr at a zero; G = -thr sign(w) at a nonzero
    assert torch.allclose(pg, torch.tensor([[0.0, 0.0, 0.0, 0.2, 0.2]]))


def test_extrapolated_start_keeps_signs_and_never_raises_the_objective() -> None:
    X, y = _data(n=200, d=6, c=3, seed=4)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    prob = sparse.Problem.build(Xt, yt, 3, 0.99, False)
    path = sparse.solve_path(X, y, 3, n_lambdas=8, tol=1e-10, val_frac=0.0)
    a, b, c = path.points[2:5]
    state = sparse._State(weight=b.weight, bias=b.bias, lam=b.lam,
                          previous=(a.weight, a.bias, a.lam))
    W, bias = sparse._extrapolated_start(prob, state, c.lam)

    def objective(W: torch.Tensor, bias: torch.Tensor) -> float:
        return sparse.objective_and_gap(X, y, W, bias, c.lam, 0.99, False).primal

    assert objective(W, bias) <= objective(b.weight, b.bias)
    assert bool(((W == 0) | (torch.sign(W) == torch.sign(b.weight))).all())
    # here the prediction is closer to the next solution than the last solution is
    assert float((W - c.weight).norm()) < float((b.weight - c.weight).norm())


def test_fast_preset() -> None:
    X, y = _data()
    path = sparse.solve_path(X, y, 3, **sparse.FAST_PRESET)
    assert len(path.points) == 5
    assert all(p.relative_gap <= 0.1 for p in path.points)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_features_are_one_line_errors(bad: float) -> None:
    X, y = _data()
    X[3, 2] = bad
    with pytest.raises(QsennError) as err:
        sparse.solve_path(X, y, 3, n_lambdas=2)
    assert "NaN/Inf" in str(err.value) and "\n" not in str(err.value)


def test_class_without_training_samples() -> None:
    X, y = _data()
    with pytest.raises(QsennError, match="class 3 has no samples") as err:
        sparse.solve_path(X, y, 4, n_lambdas=2)
    assert "\n" not in str(err.value)


def test_bad_labels_and_params() -> None:
    X, y = _data()
    with pytest.raises(QsennError, match="labels"):
        sparse.solve_path(X, y[:-1], 3)
    with pytest.raises(QsennError, match="values must lie"):
        sparse.solve_path(X, y - 1, 3)
    with pytest.raises(QsennError, match="alpha"):
        sparse.solve_path(X, y, 3, alpha=0.0)
    with pytest.raises(QsennError, match="method"):
        sparse.solve_path(X, y, 3, method="lbfgs")
    with pytest.raises(QsennError, match="constant"):
        sparse.solve_path(np.zeros_like(X), y, 3)
