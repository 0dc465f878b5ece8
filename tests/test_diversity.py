"""Feature Diversity Loss (eq. 2) on hand-built feature maps with values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from qsenn_core.diversity import feature_diversity, feature_diversity_loss


def one_hot_maps(n_f: int, positions: list[int], peaks: list[float], side: int = 2) -> torch.Tensor:
    """(1, n_f, side, side) maps: map i is ``peaks[i]`` at flat index ``positions[i]``, else 0."""
    maps = torch.zeros(1, n_f, side * side, dtype=torch.float64)
    for i, (pos, peak) in enumerate(zip(positions, peaks, strict=True)):
        maps[0, i, pos] = peak
    return maps.view(1, n_f, side, side)


def softmax_peak(v: float, n: int) -> tuple[float, float]:
    """Softmax of a length-n vector that is v at one place and 0 elsewhere: (peak, off)."""
    denom = math.exp(v) + (n - 1)
    return math.exp(v) / denom, 1.0 / denom


def test_identical_maps_give_the_largest_normalized_weight() -> None:
    v = 2.0
    maps = one_hot_maps(3, [0, 0, 0], [v, v, v])
    weight = torch.tensor([[1.0, 2.0, 2.0], [5.0, 0.0, 0.0]], dtype=torch.float64)
    # |W_0| / ||W_0|| = (1, 2, 2) / 3; equal means -> scale 1; at every position the max over
    # identical maps is (2/3) * softmax value, and a softmax sums to 1
    value = feature_diversity(maps, weight, torch.tensor([0]))
    assert value.item() == pytest.approx(2.0 / 3.0, abs=1e-12)


def test_disjoint_equal_maps_sum_to_k_over_sqrt_k() -> None:
    k, v = 4, 60.0  # large peak: softmax is one-hot up to e^-60
    maps = one_hot_maps(k, [0, 1, 2, 3], [v] * k)
    weight = torch.ones(1, k, dtype=torch.float64)
    value = feature_diversity(maps, weight, torch.tensor([0]))
    assert value.item() == pytest.approx(k * (1 / math.sqrt(k)), abs=1e-12)
    # identical maps with the same weights only count one peak
    same = feature_diversity(one_hot_maps(k, [0] * k, [v] * k), weight, torch.tensor([0]))
    assert same.item() == pytest.approx(1 / math.sqrt(k), abs=1e-12)


def test_disjoint_soft_maps_exact_value() -> None:
    v = 1.5
    maps = one_hot_maps(2, [0, 1], [v, v])
    p, off = softmax_peak(v, 4)
    w = 1 / math.sqrt(2)
    # positions 0 and 1: one map peaks (w * p); positions 2 and 3: both are off (w * off)
    expected = w * (2 * p + 2 * off)
    value = feature_diversity(maps, torch.ones(1, 2, dtype=torch.float64), torch.tensor([0]))
    assert value.item() == pytest.approx(expected, abs=1e-12)


def test_mean_activation_scaling() -> None:
    v1, v2 = 3.0, 1.0
    maps = one_hot_maps(2, [0, 1], [v1, v2])
    p1, off1 = softmax_peak(v1, 4)
    p2, off2 = softmax_peak(v2, 4)
    s2 = (v2 / 4) / (v1 / 4)  # mean of map 2 over the largest mean
    w1, w2 = 3 / 5, 4 / 5  # |(-3, 4)| / 5
    expected = (
        max(w1 * p1, w2 * s2 * off2)
        + max(w1 * off1, w2 * s2 * p2)
        + 2 * max(w1 * off1, w2 * s2 * off2)
    )
    weight = torch.tensor([[-3.0, 4.0]], dtype=torch.float64)
    value = feature_diversity(maps, weight, torch.tensor([0]))
    assert value.item() == pytest.approx(expected, abs=1e-12)


def test_batch_uses_each_images_predicted_row_and_loss_is_minus_mean() -> None:
    v = 60.0
    maps = torch.cat([one_hot_maps(2, [0, 1], [v, v]), one_hot_maps(2, [0, 0], [v, v])])
    weight = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    predicted = torch.tensor([0, 1])
    value = feature_diversity(maps, weight, predicted)
    # image 0: disjoint, equal weights -> 2 / sqrt(2); image 1: only feature 0 weighted -> 1
    assert value.tolist() == pytest.approx([math.sqrt(2), 1.0], abs=1e-12)
    loss = feature_diversity_loss(maps, weight, predicted)
    assert loss.item() == pytest.approx(-(math.sqrt(2) + 1.0) / 2, abs=1e-12)


def test_gradient_reaches_maps_not_weight_by_default() -> None:
    torch.manual_seed(0)
    maps = torch.rand(3, 5, 4, 4, requires_grad=True)
    weight = torch.randn(4, 5, requires_grad=True)
    feature_diversity_loss(maps, weight, torch.tensor([0, 2, 3])).backward()
    assert maps.grad is not None and torch.isfinite(maps.grad).all()
    assert maps.grad.abs().sum() > 0
    assert weight.grad is None

    weight2 = weight.detach().clone().requires_grad_(True)
    feature_diversity_loss(maps, weight2, torch.tensor([0, 2, 3]), detach_weight=False).backward()
    assert weight2.grad is not None and weight2.grad.abs().sum() > 0


def test_minimizing_the_loss_spreads_overlapping_maps_apart() -> None:
    # three features whose peaks overlap: descending L_div must raise the diversity
    torch.manual_seed(0)
    bump = torch.zeros(3, 4, 4)
    bump[:, 1:3, 1:3] = 3.0
    maps = (bump + 0.5 * torch.rand(3, 4, 4)).unsqueeze(0).requires_grad_(True)
    weight, predicted = torch.ones(1, 3), torch.tensor([0])
    before = feature_diversity(maps, weight, predicted).item()
    opt = torch.optim.SGD([maps], lr=5.0)
    for _ in range(50):
        opt.zero_grad()
        feature_diversity_loss(maps, weight, predicted).backward()
        opt.step()
    after = feature_diversity(maps, weight, predicted).item()
    assert before < 0.7 and after > 1.4  # the bound for 3 disjoint maps is sqrt(3) ~ 1.73
    peaks = maps.detach().flatten(2).argmax(dim=2)[0]
    assert len(set(peaks.tolist())) == 3  # every feature now peaks on its own position


def test_zero_weight_row_and_zero_maps_are_finite() -> None:
    maps = torch.rand(2, 3, 2, 2, requires_grad=True)
    weight = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    value = feature_diversity(maps, weight, torch.tensor([0, 1]))
    assert value[0].item() == 0.0 and value[1].item() > 0
    value.sum().backward()
    assert torch.isfinite(maps.grad).all()

    zero = torch.zeros(1, 3, 2, 2, requires_grad=True)  # all means 0: guarded division
    value = feature_diversity(zero, weight, torch.tensor([1]))
    assert value.item() == 0.0
    value.sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_large_activations_are_stable() -> None:
    maps = torch.full((1, 2, 3, 3), 1e4)
    maps[0, 0, 0, 0] = 3e4
    value = feature_diversity(maps, torch.ones(1, 2), torch.tensor([0]))
    assert torch.isfinite(value).all()
    assert 0 < value.item() <= math.sqrt(2) + 1e-6


def test_shape_errors() -> None:
    maps = torch.rand(2, 3, 2, 2)
    with pytest.raises(ValueError, match="weight must be"):
        feature_diversity(maps, torch.ones(4, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="predicted must be"):
        feature_diversity(maps, torch.ones(4, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="feature_maps must be"):
        feature_diversity(maps.flatten(2), torch.ones(4, 3), torch.tensor([0, 1]))
