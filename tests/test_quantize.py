"""Quantization (eq. 3-5), the w/o-quantization variant, the bias refit and assignment change."""

from __future__ import annotations

import pytest
import torch

from qsenn_core.errors import QsennError
from qsenn_core.quantize import (
    assignment_change,
    quantize,
    refit_bias,
    sparsify_top,
    weights_to_keep,
)


def _random_sparse(seed: int = 0, shape: tuple[int, int] = (8, 12)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g, dtype=torch.float64)
    w[torch.rand(shape, generator=g) < 0.3] = 0.0
    return w


def test_ternary_keeps_n_largest_with_mean_magnitude() -> None:
    w = _random_sparse()
    n = 20
    q = quantize(w, n)
    assert q.shape == w.shape and q.dtype == w.dtype
    assert int((q != 0).sum()) == n
    top = w.abs().flatten().sort(descending=True).values[:n]
    alpha = float(top.mean())
    assert torch.allclose(q[q != 0].abs(), torch.full((n,), alpha, dtype=torch.float64))
    # the kept entries are the n largest magnitudes, signs preserved (eq. 5)
    assert float(w.abs()[q != 0].min()) >= float(w.abs()[q == 0].max())
    assert torch.equal(torch.sign(q[q != 0]), torch.sign(w[q != 0]))


def test_largest_negative_weight_keeps_its_sign() -> None:
    # the authors' bucketize maps the most negative entry (= -max|W|) to +alpha
    w = torch.tensor([[-5.0, 1.0, 0.0], [2.0, -0.5, 3.0]])
    q = quantize(w, 3)
    alpha = (5.0 + 3.0 + 2.0) / 3
    expected = torch.tensor([[-alpha, 0.0, 0.0], [alpha, 0.0, alpha]])
    assert torch.allclose(q, expected)
    assert float(q[0, 0]) < 0


def test_ties_are_deterministic_and_exact_count() -> None:
    w = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 1.0, 0.5]])
    q = quantize(w, 3)
    assert int((q != 0).sum()) == 3
    # equal magnitudes: lower flat (row-major) index first
    assert torch.equal(q != 0, torch.tensor([[True, True, True], [False, False, False]]))
    assert torch.equal(q, quantize(w.clone(), 3))
    assert torch.equal(sparsify_top(w, 4), torch.tensor([[1.0, -1.0, 1.0], [-1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("n_weights", [0, -3, 3.0, True])
def test_bad_n_weights(n_weights: object) -> None:
    with pytest.raises(QsennError, match="n_weights"):
        quantize(torch.ones(2, 2), n_weights)  # type: ignore[arg-type]


def test_more_weights_than_nonzeros() -> None:
    w = torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    assert int((quantize(w, 2) != 0).sum()) == 2
    with pytest.raises(QsennError, match="only 2 nonzero"):
        quantize(w, 3)
    with pytest.raises(QsennError, match="only 2 nonzero"):
        sparsify_top(w, 3)


def test_a_solution_sparser_than_n_w_keeps_every_nonzero(caplog) -> None:
    w = torch.tensor([[0.5, 0.0, -0.2], [0.0, 0.0, 0.1]])
    assert weights_to_keep(w, 2) == 2  # enough nonzeros: exactly n_w
    with caplog.at_level("WARNING"):
        n = weights_to_keep(w, 6)
    assert n == 3 and "fewer than n_w = 6" in caplog.text
    q = quantize(w, n)
    assert torch.equal(q != 0, w != 0)  # every nonzero kept, with its sign
    assert torch.equal(torch.sign(q), torch.sign(w))


@pytest.mark.parametrize("levels", [2, 4, 1])
def test_bad_levels(levels: int) -> None:
    with pytest.raises(QsennError, match="levels"):
        quantize(torch.ones(2, 2), 2, levels=levels)


def test_nonfinite_weight_is_an_error() -> None:
    with pytest.raises(QsennError, match="NaN"):
        quantize(torch.tensor([[1.0, float("nan")]]), 1)


def test_more_levels_bin_means() -> None:
    w = torch.tensor([[1.0, -1.2, 2.0, -2.9], [3.0, 0.1, -0.2, 0.0]])
    q5 = quantize(w, 5, levels=5)
    # kept magnitudes [1.0, 1.2, 2.0, 2.9, 3.0] over [1, 3] in 2 equal bins: [1, 2) and [2, 3]
    low, high = (1.0 + 1.2) / 2, (2.0 + 2.9 + 3.0) / 3
    expected = torch.tensor([[low, -low, high, -high], [high, 0.0, 0.0, 0.0]])
    assert torch.allclose(q5, expected)
    assert q5.unique().numel() <= 5
    w2 = _random_sparse(3)
    q7 = quantize(w2, 30, levels=7)
    assert int((q7 != 0).sum()) == 30 and q7.abs().unique().numel() <= 4
    assert torch.equal(torch.sign(q7[q7 != 0]), torch.sign(w2[q7 != 0]))
    # n_Q = 3 is eq. 4-5
    assert torch.allclose(quantize(w2, 30, levels=3)[q7 != 0].abs(),
                          w2.abs().flatten().sort(descending=True).values[:30].mean())


def test_sparsify_top_keeps_float_values() -> None:
    w = _random_sparse(1)
    s = sparsify_top(w, 10)
    assert int((s != 0).sum()) == 10
    assert torch.equal(s[s != 0], w[s != 0])
    assert torch.equal(s != 0, quantize(w, 10) != 0)


def test_refit_bias_is_optimal() -> None:
    g = torch.Generator().manual_seed(0)
    n, d, c = 120, 5, 4
    y = torch.arange(n) % c
    f = torch.randn(n, d, generator=g, dtype=torch.float64)
    f = f + torch.eye(c, d, dtype=torch.float64)[y]
    w = quantize(torch.randn(c, d, generator=g, dtype=torch.float64), 8)

    def ce(b: torch.Tensor) -> float:
        return float(torch.nn.functional.cross_entropy(f @ w.T + b, y))

    b = refit_bias(f, w, y)
    assert b.shape == (c,) and abs(float(b.mean())) < 1e-12
    grad = torch.softmax(f @ w.T + b, 1).mean(0) - torch.bincount(y, minlength=c) / n
    assert float(grad.abs().max()) < 1e-9
    for _ in range(5):
        assert ce(b) <= ce(b + 0.05 * torch.randn(c, generator=g, dtype=torch.float64))
    assert ce(b) < ce(torch.zeros(c, dtype=torch.float64))
    assert torch.allclose(refit_bias(f, w, y, init=torch.full((c,), 3.0)), b, atol=1e-8)


def test_refit_bias_needs_every_class() -> None:
    f = torch.randn(6, 2)
    with pytest.raises(QsennError, match="class 2 has no samples"):
        refit_bias(f, torch.ones(3, 2), torch.tensor([0, 1, 0, 1, 0, 1]))


def test_assignment_change() -> None:
    prev = torch.tensor([[0.5, 0.0, -0.5], [0.0, 0.5, 0.0]])
    assert assignment_change(prev, prev * 2) == 0.0
    # one flipped sign, one moved assignment, one kept: 2 of 3 assignments of new are new
    new = torch.tensor([[0.7, 0.0, 0.7], [0.7, 0.0, 0.0]])
    assert assignment_change(prev, new) == pytest.approx(2 / 3)
    assert assignment_change(prev, torch.zeros_like(prev)) == 0.0
    with pytest.raises(QsennError, match="shapes differ"):
        assignment_change(prev, prev.T)
