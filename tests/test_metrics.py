"""Tests of qsenn_core.metrics: every metric on hand-built inputs with a known answer, and the
fast 1-D mean shift against scikit-learn's MeanShift (kept small: scikit-learn is slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import MeanShift, estimate_bandwidth

from qsenn_core import metrics
from qsenn_core.errors import DataError, ParamsError

# ------------------------------------------------------------------------------------------------
# accuracy and sparsity
# ------------------------------------------------------------------------------------------------


def test_accuracy_from_logits_and_from_indices() -> None:
    logits = torch.tensor([[0.1, 2.0], [3.0, -1.0], [0.0, 1.0], [5.0, 4.0]])
    labels = torch.tensor([1, 0, 0, 0])
    assert metrics.accuracy(logits, labels) == pytest.approx(0.75)
    assert metrics.accuracy(np.array([1, 1, 1, 1]), labels.numpy()) == pytest.approx(0.25)
    with pytest.raises(DataError):
        metrics.accuracy(np.array([1, 0]), np.array([1, 0, 1]))


def test_features_per_class_and_used_features() -> None:
    w = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    assert metrics.features_per_class(w) == pytest.approx(5 / 3)
    assert metrics.n_used_features(w) == 2
    assert metrics.n_used_features(np.zeros((3, 4))) == 0


def test_top_k_features_signed_with_deterministic_ties() -> None:
    w = np.array([[1.0, -5.0, 1.0, 1.0, 0.0], [0.0, 2.0, 0.0, 3.0, 0.0]])
    top = metrics.top_k_features(w, 3)
    np.testing.assert_array_equal(top, [[0, 2, 3], [3, 1, 0]])
    with pytest.raises(ParamsError):
        metrics.top_k_features(w, 6)


# ------------------------------------------------------------------------------------------------
# diversity@k (eq. 6)
# ------------------------------------------------------------------------------------------------


def _one_hot_maps(n_images: int, n_features: int, side: int, peak: float) -> np.ndarray:
    """Feature j of every image peaks at position j (all other positions 0)."""
    maps = np.zeros((n_images, n_features, side * side), dtype=np.float32)
    for j in range(n_features):
        maps[:, j, j] = peak
    return maps.reshape(n_images, n_features, side, side)


def test_diversity_identical_maps_is_one_over_k() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 1, 3, 3)).astype(np.float32)
    maps = np.repeat(base, 6, axis=1)
    w = rng.normal(size=(3, 6))
    pred = np.array([0, 1, 2, 1])
    for k in (1, 3, 5):
        assert metrics.diversity_at_k(maps, w, pred, k=k) == pytest.approx(1 / k, rel=1e-9)


def test_diversity_disjoint_one_hot_maps_is_one() -> None:
    maps = _one_hot_maps(3, 6, side=3, peak=60.0)
    w = np.ones((2, 6))
    value = metrics.diversity_at_k(torch.from_numpy(maps), torch.from_numpy(w), [0, 1, 1], k=5)
    assert value == pytest.approx(1.0, abs=1e-6)


def test_diversity_uses_top_weighted_features_of_the_predicted_class() -> None:
    # features 0-2 share one map, features 3-5 are disjoint one-hot maps
    maps = _one_hot_maps(2, 6, side=3, peak=60.0)
    maps[:, 1] = maps[:, 0]
    maps[:, 2] = maps[:, 0]
    w = np.array([[3.0, 2.0, 1.0, -1.0, -2.0, -3.0],  # class 0: top-3 = overlapping 0, 1, 2
                  [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]])  # class 1: top-3 = disjoint 5, 4, 3
    assert metrics.diversity_at_k(maps, w, [0, 0], k=3) == pytest.approx(1 / 3, abs=1e-6)
    assert metrics.diversity_at_k(maps, w, [1, 1], k=3) == pytest.approx(1.0, abs=1e-6)
    logits = np.array([[0.0, 1.0], [1.0, 0.0]])  # image 0 -> class 1, image 1 -> class 0
    assert metrics.diversity_at_k(maps, w, logits, k=3) == pytest.approx(2 / 3, abs=1e-6)


def test_diversity_can_skip_classes_with_fewer_than_k_weights() -> None:
    maps = _one_hot_maps(2, 4, side=2, peak=60.0)
    maps[:, 1] = maps[:, 0]
    w = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]])
    both = metrics.diversity_at_k(maps, w, [0, 1], k=2)
    assert both == pytest.approx(0.75, abs=1e-6)
    w_sparse = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    skip = metrics.diversity_at_k(maps, w_sparse, [0, 1], k=2, require_k_nonzero=True)
    assert skip == pytest.approx(0.5, abs=1e-6)  # only image 0 (class 0 has 2 weights)


def test_diversity_per_image_gives_both_readings() -> None:
    maps = _one_hot_maps(3, 4, side=2, peak=60.0)
    maps[:, 1] = maps[:, 0]
    w = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # class 1: one nonzero weight
    pred = [0, 1, 1]
    values = metrics.diversity_per_image(maps, w, pred, k=2, batch_size=2)
    # class 0: features 0, 1 share a map -> 1/2; class 1: features 2 and 0 (zero weight, the
    # lowest index among the ties) are disjoint -> 1
    np.testing.assert_allclose(values, [0.5, 1.0, 1.0], atol=1e-6)
    keep = metrics.images_with_k_nonzero(w, pred, k=2)
    np.testing.assert_array_equal(keep, [True, False, False])
    assert metrics.diversity_at_k(maps, w, pred, k=2) == pytest.approx(values.mean())
    assert metrics.diversity_at_k(maps, w, pred, k=2, require_k_nonzero=True) == pytest.approx(
        values[keep].mean())
    with pytest.raises(DataError, match="no image left"):
        metrics.diversity_at_k(maps, w, [1, 1, 1], k=2, require_k_nonzero=True)


def test_diversity_rejects_mismatched_shapes() -> None:
    with pytest.raises(DataError):
        metrics.diversity_at_k(np.zeros((2, 3, 2, 2)), np.ones((2, 4)), [0, 1])
    with pytest.raises(DataError):
        metrics.diversity_at_k(np.zeros((2, 4, 2, 2)), np.ones((2, 4)), [0, 2])


# ------------------------------------------------------------------------------------------------
# dependence (eq. 7-8)
# ------------------------------------------------------------------------------------------------


def test_dependence_known_values() -> None:
    w = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    f = np.array([[2.0, 2.0, 2.0, 2.0],  # class 0, equal effects -> 1/4
                  [1.0, 5.0, 5.0, 5.0],  # class 1 uses feature 0 only -> 1
                  [0.0, 3.0, 1.0, 0.0]])  # class 0, effects 3 and 1 -> 3/4
    assert metrics.dependence(f, w, [0, 1, 0]) == pytest.approx((0.25 + 1 + 0.75) / 3)
    # negative weights/features count by magnitude (eq. 7)
    assert metrics.dependence(-f, -w, [0, 1, 0]) == pytest.approx((0.25 + 1 + 0.75) / 3)


def test_dependence_skips_images_without_effect_and_differs_on_standardized_inputs() -> None:
    w = np.array([[1.0, 1.0]])
    f = np.array([[0.0, 0.0], [3.0, 1.0]])
    assert metrics.dependence(f, w, [0, 0]) == pytest.approx(0.75)
    standardized = (f - f.mean(axis=0)) / f.std(axis=0)
    assert metrics.dependence(standardized, w, [0, 0]) == pytest.approx(0.5)
    assert np.isnan(metrics.dependence(np.zeros((2, 2)), w, [0, 0]))


def test_dependence_standardized_uses_the_sparse_layer_input() -> None:
    w = np.array([[1.0, 1.0], [0.0, 2.0]])
    f = np.array([[3.0, 1.0], [1.0, 4.0]])
    mean, std = np.array([1.0, 1.0]), np.array([1.0, -2.0])  # the layer divides by |std|
    # raw (paper, eq. 7): effects (3, 1) -> 3/4 and (0, 8) -> 1
    assert metrics.dependence(f, w, [0, 1]) == pytest.approx((0.75 + 1.0) / 2)
    # standardized: (2, 0) -> 1 and (0, 1.5 * 2) -> 1
    np.testing.assert_allclose(metrics.standardized(f, mean, std), [[2.0, 0.0], [0.0, 1.5]])
    assert metrics.dependence_standardized(f, w, [0, 1], mean, std) == pytest.approx(1.0)
    with pytest.raises(DataError, match="columns"):
        metrics.standardized(f, mean[:1], std)


def test_standardized_and_predicted_classes_match_the_layers() -> None:
    from qsenn_core.sparse_layer import SparseLayer

    rng = np.random.default_rng(0)
    f = rng.gamma(2.0, 1.0, size=(40, 6)).astype(np.float32)
    w = np.sign(rng.normal(size=(5, 6))) * (rng.random((5, 6)) < 0.5)
    b, mean, std = rng.normal(size=5), f.mean(0), f.std(0) + 0.1
    layer = SparseLayer(torch.arange(6), torch.from_numpy(w), torch.from_numpy(b),
                        torch.from_numpy(mean), torch.from_numpy(std))
    with torch.no_grad():
        np.testing.assert_allclose(metrics.standardized(f, mean, std),
                                   layer.standardize(torch.from_numpy(f)).numpy(), atol=1e-5)
        sparse_pred = layer(torch.from_numpy(f)).argmax(1).numpy()
    np.testing.assert_array_equal(metrics.predicted_classes(f, w, b, mean, std), sparse_pred)
    dense = torch.nn.Linear(6, 5).double()
    with torch.no_grad():
        dense_pred = dense(torch.from_numpy(f).double()).argmax(1).numpy()
    np.testing.assert_array_equal(
        metrics.predicted_classes(f, dense.weight.detach(), dense.bias.detach()), dense_pred)
    with pytest.raises(DataError, match="both mean and std"):
        metrics.predicted_classes(f, w, b, mean=mean)
    with pytest.raises(DataError, match="one layer"):
        metrics.predicted_classes(f, w, b[:4])


# ------------------------------------------------------------------------------------------------
# alignment (eq. 9-10)
# ------------------------------------------------------------------------------------------------


def _alignment_loop(f: np.ndarray, present: np.ndarray) -> np.ndarray:
    out = np.zeros((present.shape[1], f.shape[1]))
    for a in range(present.shape[1]):
        plus, minus = present[:, a] == 1, present[:, a] == 0
        if plus.any() and minus.any():
            out[a] = f[plus].mean(axis=0) - f[minus].mean(axis=0)
    return out


def test_alignment_matrix_matches_eq9_and_has_no_nan() -> None:
    rng = np.random.default_rng(1)
    present = (rng.random((40, 5)) < 0.4).astype(np.int64)
    present[:, 3] = 0  # never present
    present[:, 4] = 1  # always present
    f = rng.gamma(2.0, size=(40, 3))
    a = metrics.alignment_matrix(f, present)
    assert a.shape == (5, 3)
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, _alignment_loop(f, present), rtol=1e-12, atol=1e-12)
    assert np.all(a[3:] == 0)


def test_feature_equal_to_attribute_has_maximal_alignment() -> None:
    rng = np.random.default_rng(2)
    present = (rng.random((50, 4)) < 0.3).astype(np.int64)
    f = np.stack([present[:, 2] * 1.0, rng.random(50)], axis=1)
    a = metrics.alignment_matrix(f, present)
    assert a[2, 0] == pytest.approx(1.0)  # mean 1 where present, 0 where absent
    assert np.argmax(a[:, 0]) == 2
    share = present[:, 2].mean()
    # eq. 10: the indicator's term is 1 / mean(F - min F) = 1 / share; r averages both features
    second = a[:, 1].max() / (f[:, 1] - f[:, 1].min()).mean()
    assert metrics.alignment_r(f, present) == pytest.approx((1 / share + second) / 2)
    # scaling or shifting a feature does not change its alignment term
    assert metrics.alignment_r(f * 3 + 7, present) == pytest.approx((1 / share + second) / 2)


def test_alignment_r_guards_constant_features_and_degenerate_attributes() -> None:
    present = np.array([[1, 1], [0, 1], [1, 1], [0, 1]])  # attribute 1 always present
    f = np.array([[1.0, 4.0], [0.0, 4.0], [1.0, 4.0], [0.0, 4.0]])  # feature 1 constant
    assert metrics.alignment_r(f, present) == pytest.approx((1 / 0.5 + 0.0) / 2)
    with pytest.raises(DataError):
        metrics.alignment_r(f, np.ones((4, 2)))
    with pytest.raises(DataError):
        metrics.alignment_r(f, np.full((4, 2), 2))


# ------------------------------------------------------------------------------------------------
# Correlation@k
# ------------------------------------------------------------------------------------------------


def test_correlation_at_k_known_values() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=200)
    noise = rng.normal(size=(200, 3))
    f = np.stack([base, 2 * base + 1, -0.5 * base, noise[:, 0], noise[:, 1], noise[:, 2]], axis=1)
    w_correlated = np.array([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    assert metrics.correlation_at_k(f, w_correlated, k=3) == pytest.approx(1.0)
    w_mixed = np.array([[1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
    value = metrics.correlation_at_k(f, w_mixed, k=3)
    independent = np.abs(np.corrcoef(noise.T)[np.triu_indices(3, 1)]).mean()
    assert value == pytest.approx((1.0 + independent) / 2)
    assert independent < 0.2


def test_correlation_at_k_constant_feature_counts_as_uncorrelated() -> None:
    x = np.linspace(0, 1, 10)
    f = np.stack([x, x, np.ones(10)], axis=1)
    value = metrics.correlation_at_k(f, np.ones((1, 3)), k=3)
    assert value == pytest.approx(1 / 3)  # pairs: (0, 1) -> 1, (0, 2) and (1, 2) -> 0
    with pytest.raises(ParamsError):
        metrics.correlation_at_k(f, np.ones((1, 3)), k=1)


# ------------------------------------------------------------------------------------------------
# binary features: fast mean shift == scikit-learn MeanShift
# ------------------------------------------------------------------------------------------------


def _sample(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "unimodal":
        return rng.normal(size=n)
    if kind == "bimodal":
        return np.r_[rng.normal(0, 0.3, n // 2), rng.normal(3, 0.5, n - n // 2)]
    if kind == "trimodal":
        third = n // 3
        return np.r_[rng.normal(0, 0.3, third), rng.normal(2, 0.3, third),
                     rng.normal(5, 0.4, n - 2 * third)]
    if kind == "relu_float32":  # many exact zeros, values with float32 precision
        return np.maximum(rng.normal(0.3, 1, n), 0).astype(np.float32).astype(np.float64)
    if kind == "rounded":  # many ties
        return np.round(rng.gamma(2, 1, n), 1)
    if kind == "mostly_zero":
        return np.r_[np.zeros(n * 8 // 10), rng.uniform(1, 5, n - n * 8 // 10)]
    raise ValueError(kind)


@pytest.mark.parametrize(
    ("kind", "seed"),
    [("unimodal", 0), ("bimodal", 1), ("trimodal", 2), ("relu_float32", 3), ("rounded", 4),
     ("mostly_zero", 5)],
)
def test_mean_shift_1d_equals_sklearn(kind: str, seed: int) -> None:
    x = _sample(kind, 90, seed)
    ref = MeanShift().fit(x[:, None])
    ours = metrics.mean_shift_1d(x)
    assert ours.bandwidth == estimate_bandwidth(x[:, None])
    assert ours.n_clusters == len(ref.cluster_centers_)
    np.testing.assert_allclose(ours.centers, ref.cluster_centers_[:, 0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(ours.sizes, np.bincount(ref.labels_))


@pytest.mark.parametrize("n", [7, 600, 1301])
def test_bandwidth_is_bit_identical_to_sklearn(n: int) -> None:
    rng = np.random.default_rng(n)
    x = np.round(np.maximum(rng.normal(0.2, 1, n), 0), 3)
    assert metrics.estimate_bandwidth_1d(x) == estimate_bandwidth(x[:, None])
    sub = n // 2
    assert metrics.estimate_bandwidth_1d(x, n_samples=sub, random_state=3) == estimate_bandwidth(
        x[:, None], n_samples=sub, random_state=3)


def test_binary_feature_counts_and_fraction() -> None:
    f = np.stack([_sample("bimodal", 80, 10), _sample("unimodal", 80, 11),
                  _sample("trimodal", 80, 12), np.zeros(80)], axis=1)
    counts = metrics.binary_feature_counts(f)
    expected = [len(MeanShift().fit(f[:, [j]]).cluster_centers_) for j in range(3)] + [1]
    np.testing.assert_array_equal(counts, expected)
    assert counts[0] == 2 and counts[1] != 2 and counts[3] == 1  # two modes -> binary
    assert metrics.binary_feature_fraction(f) == pytest.approx(np.mean(counts == 2))


def test_strict_binary_fraction_needs_large_clusters() -> None:
    rng = np.random.default_rng(6)
    balanced = np.r_[rng.normal(0, 0.2, 150), rng.normal(4, 0.2, 150)]
    lopsided = np.r_[rng.normal(0, 0.2, 285), rng.normal(4, 0.2, 15)]
    f = np.stack([balanced, lopsided], axis=1)
    sizes = [metrics.mean_shift_1d(f[:, j]).sizes for j in range(2)]
    assert sorted(sizes[0]) == [150, 150] and sorted(sizes[1]) == [15, 285]
    assert metrics.binary_feature_fraction(f) == pytest.approx(1.0)
    assert metrics.binary_feature_fraction(f, strict_min_cluster=15) == pytest.approx(1.0)
    assert metrics.binary_feature_fraction(f, strict_min_cluster=20) == pytest.approx(0.5)
