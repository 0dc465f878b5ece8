"""Tests of the annotation-free alignment (eq. 11-16, Table 6, Figure 6a, prompts)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qsenn_core import alignment as al
from qsenn_core.errors import DataError, ParamsError
from qsenn_core.metrics import alignment_matrix

CUB_NAMES = [
    "has_bill_shape::dagger",
    "has_bill_shape::hooked_seabird",
    "has_wing_color::blue",
    "has_size::small_(5_-_9_in)",
    "has_tail_shape::forked_tail",
    "has_bill_length::about_the_same_as_head",
    "has_head_pattern::eyebrow",
    "has_shape::duck-like",
]


# ---------------------------------------------------------------------------------- prompts


def test_prompts_on_cub_style_names() -> None:
    prompts = al.attribute_prompts(CUB_NAMES, "bird")
    texts = [p.text for p in prompts]
    assert texts == [
        "This is a photo of a dagger-like bill shape of a bird.",
        "This is a photo of a hooked seabird-like bill shape of a bird.",
        "This is a photo of a blue wing color of a bird.",
        "This is a photo of a small (5 - 9 in) size of a bird.",
        "This is a photo of a forked tail tail shape of a bird.",
        "This is a photo of a about the same as head bill length of a bird.",
        "This is a photo of a eyebrow-like head pattern of a bird.",
        "This is a photo of a duck-like shape of a bird.",
    ]
    assert [p.type for p in prompts] == [
        "bill shape", "bill shape", "wing color", "size", "tail shape", "bill length",
        "head pattern", "shape",
    ]
    assert prompts[3].expression == "small (5 - 9 in)"
    assert prompts[0].label == "dagger-like bill shape"
    assert [p.name for p in prompts] == CUB_NAMES


def test_prompt_non_adjectives_are_configurable_and_case_insensitive() -> None:
    names = ["has_wing_color::Blue", "has_bill_shape::dagger", "has_bill_shape::Needle"]
    custom = al.attribute_prompts(names, "car", non_adjectives=["blue", "needle"])
    assert [p.phrase for p in custom] == ["Blue-like wing color", "dagger bill shape",
                                          "Needle-like bill shape"]
    assert custom[0].text.endswith("of a car.")


def test_prompt_bare_concepts_and_errors() -> None:
    (bare,) = al.attribute_prompts(["red_wheel"], "car")
    assert (bare.type, bare.text) == ("", "This is a photo of a red wheel of a car.")
    with pytest.raises(DataError, match="has_::x"):
        al.attribute_prompts(["has_::x"], "bird")
    with pytest.raises(ParamsError):
        al.attribute_prompts(CUB_NAMES, "  ")
    assert al.object_noun("cars") == "car" and al.object_noun("aircraft") == "aircraft"
    with pytest.raises(ParamsError, match="data.name"):
        al.object_noun("mnist")


# ---------------------------------------------------------------------------------- eq. 11-13


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_clip_alignment_known_argmax_and_formula() -> None:
    rng = np.random.default_rng(0)
    prompts = np.eye(4)[:3]  # three orthogonal prompt directions in a 4-d space
    concept = np.repeat(np.arange(3), 4)  # 12 images, 4 showing each concept
    d = _unit(prompts[concept] + 0.05 * rng.normal(size=(12, 4)))
    # feature 0 fires on concept 2, feature 1 on concept 0, feature 2 on concept 1 (scaled, shifted)
    f = np.stack([concept == 2, concept == 0, concept == 1], axis=1).astype(float)
    f = f * np.array([1.0, 7.0, 0.2]) + np.array([0.0, -3.0, 5.0]) + 0.01 * rng.random((12, 3))
    a = al.clip_alignment(f, d, prompts)
    assert a.shape == (3, 3)
    assert a.argmax(axis=1).tolist() == [2, 0, 1]
    # eq. 12-13 written out with loops
    expected = np.zeros((3, 3))
    for j in range(3):
        v = (f[:, j] - f[:, j].mean()) / f[:, j].std()
        for p in range(3):
            expected[j, p] = sum(v[i] * (d[i] @ prompts[p]) for i in range(12))
    np.testing.assert_allclose(a, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(al.similarity(d, prompts), d @ prompts.T)


def test_standardize_features_guards_constant_features() -> None:
    f = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    v = al.standardize_features(f)
    np.testing.assert_allclose(v[:, 0], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)])
    assert np.all(v[:, 1] == 0.0)
    a = al.clip_alignment(f, _unit(np.eye(3)), _unit(np.eye(3)))
    assert np.all(a[1] == 0.0) and np.all(np.isfinite(a))


def test_clip_alignment_shape_errors() -> None:
    with pytest.raises(DataError, match="same CLIP model"):
        al.similarity(np.ones((3, 4)), np.ones((2, 5)))
    with pytest.raises(DataError, match="same training images"):
        al.clip_alignment(np.random.rand(4, 2), np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(DataError, match="NaN"):
        al.standardize_features(np.array([[np.nan, 1.0]]))


def test_ground_truth_alignment_orientation() -> None:
    rng = np.random.default_rng(1)
    f = rng.random((20, 3))
    present = rng.random((20, 5)) < 0.5
    np.testing.assert_array_equal(al.ground_truth_alignment(f, present),
                                  alignment_matrix(f, present).T)


# ---------------------------------------------------------------------------------- eq. 14-15

TYPES = ["a", "a", "a", "b", "b"]
GT_ROW = np.array([0.1, 0.5, 0.3, 0.9, 0.2])  # ground truth order: 3, 1, 2, 4, 0


@pytest.mark.parametrize(
    ("best", "expected"),
    [
        (2, (3, 2, 0.5)),  # type a ordered 1, 2, 0: attribute 2 is 2nd of 3
        (3, (1, 1, 1.0)),
        (4, (4, 2, 0.0)),  # type b ordered 3, 4
        (0, (5, 3, 0.0)),
        (1, (2, 1, 1.0)),
    ],
)
def test_positions_hand_built(best: int, expected: tuple[int, int, float]) -> None:
    clip_row = np.full(5, -1.0)
    clip_row[best] = 2.0
    assert al.positions(GT_ROW, clip_row, TYPES) == expected


def test_validate_alignment_averages_features() -> None:
    a_gt = np.stack([GT_ROW, GT_ROW[::-1]])
    a_clip = np.array([[0, 0, 1, 0, 0], [0, 0, 0, 0, 1.0]])
    # feature 0: best 2 -> (3, 2, 0.5); feature 1: gt = [0.2, 0.9, 0.3, 0.5, 0.1], best 4 is last
    # overall (5) and 2nd of type b = {3: 0.5, 4: 0.1} -> (5, 2, 0.0)
    res = al.validate_alignment(a_gt, a_clip, TYPES)
    assert res == pytest.approx({"pos_full": 4.0, "pos_pred": 2.0, "pos_rel_pred": 0.25})
    pos = al.feature_positions(a_gt, a_clip, TYPES)
    assert pos.predicted.tolist() == [2, 4]
    with pytest.raises(DataError, match="transpose"):
        al.validate_alignment(a_gt, a_clip.T, TYPES)
    with pytest.raises(DataError, match="types"):
        al.validate_alignment(a_gt, a_clip, TYPES[:4])


def test_single_attribute_type_has_no_relative_position() -> None:
    pos = al.feature_positions(np.array([[0.3, 0.2, 0.1]]), np.array([[0.0, 0.0, 1.0]]),
                               ["x", "x", "y"])
    assert pos.pos_pred[0] == 1 and np.isnan(pos.pos_rel_pred[0])
    assert np.isnan(al.validate_alignment(np.array([[0.3, 0.2, 0.1]]),
                                          np.array([[0.0, 0.0, 1.0]]),
                                          ["x", "x", "y"])["pos_rel_pred"])


# ---------------------------------------------------------------------------------- baselines


def _constant_choice(a_gt: np.ndarray, j: int, types: list[str]) -> dict[str, float]:
    clip = np.zeros_like(a_gt)
    clip[:, j] = 1.0
    return al.validate_alignment(a_gt, clip, types)


def test_random_baseline_is_the_uniform_average_over_choices() -> None:
    rng = np.random.default_rng(3)
    types = ["a", "a", "a", "b", "b", "c", "c", "c", "c"]
    a_gt = rng.normal(size=(7, len(types)))
    choices = [_constant_choice(a_gt, j, types) for j in range(len(types))]
    expected = {k: float(np.mean([c[k] for c in choices])) for k in choices[0]}
    assert al.random_baseline(types) == pytest.approx(expected)
    assert al.random_baseline(types)["pos_full"] == 5.0


def test_static_baseline_is_the_best_constant_ordering() -> None:
    rng = np.random.default_rng(4)
    types = ["a", "a", "b", "b", "b"]
    a_gt = rng.normal(size=(6, 5)) + np.array([0.0, 0.8, 0.0, 0.3, -0.5])
    static = al.optimal_static_baseline(a_gt, types)
    # every constant ordering of the 5 attributes, used for all 6 features
    best = min(
        (al.validate_alignment(a_gt, np.tile(np.asarray(perm, float), (6, 1)), types)
         for perm in itertools.permutations(range(5))),
        key=lambda r: r["pos_full"],
    )
    assert static["pos_full"] == pytest.approx(best["pos_full"])
    # eq. 16: the list starts with the attribute of smallest average position
    ranks = np.argsort(np.argsort(-a_gt, axis=1, kind="stable"), axis=1) + 1
    first = int(al.static_ordering(a_gt)[0])
    assert first == int(np.argmin(ranks.mean(axis=0)))
    assert static == pytest.approx(_constant_choice(a_gt, first, types))


def test_alignment_metrics_rows_in_percent() -> None:
    rng = np.random.default_rng(5)
    types = ["a", "a", "a", "b", "b"]
    a_gt = rng.normal(size=(8, 5))
    m = al.alignment_metrics(a_gt, a_gt, types)  # a perfect alignment
    assert m["pos_full"] == 1.0 and m["pos_pred"] == 1.0 and m["pos_rel_pred"] == 100.0
    assert m["random_pos_full"] == 3.0 and m["random_pos_rel_pred"] == 50.0
    assert m["random_pos_pred"] == pytest.approx(3 / 5 * 2 + 2 / 5 * 1.5)
    assert m["static_pos_full"] >= m["pos_full"]
    assert (m["n_features"], m["n_attributes"]) == (8, 5)


# ---------------------------------------------------------------------------------- report


def test_top_concepts_and_alignment_table() -> None:
    prompts = al.attribute_prompts(["has_wing_color::red", "has_wing_color::blue",
                                    "has_bill_shape::needle"], "bird")
    a_clip = np.array([[0.1, 0.7, 0.3], [0.9, -0.2, 0.95]])
    tops = al.top_concepts(a_clip, prompts, k=2)
    assert tops[0] == [("blue wing color", 0.7), ("needle-like bill shape", 0.3)]
    assert [name for name, _ in tops[1]] == ["needle-like bill shape", "red wing color"]
    assert al.concept_names(a_clip, prompts) == ["blue wing color", "needle-like bill shape"]
    weight = np.array([[0.5, 0.0], [0.0, -0.5], [0.5, 0.5]])
    table = al.alignment_table(a_clip, prompts, weight, ["A", "B", "C"], feature_ids=[17, 4], k=2)
    assert table["feature"].tolist() == [17, 4]
    assert table["classes_pos"].tolist() == ["A; C", "C"]
    assert table["classes_neg"].tolist() == ["", "B"]
    assert table["n_classes"].tolist() == [2, 2]
    assert table["concept_1"].tolist() == ["blue wing color", "needle-like bill shape"]
    assert table["alignment_2"].tolist() == [0.3, 0.9]
    with pytest.raises(ParamsError, match="k must be"):
        al.top_concepts(a_clip, prompts, k=4)
    with pytest.raises(DataError, match="weight"):
        al.alignment_table(a_clip, prompts, weight.T, ["A", "B", "C"])


def test_quartile_bins_and_figure_6a() -> None:
    bins = al.quartile_bins([5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 6.0])
    assert [b.tolist() for b in bins] == [[5, 1], [3, 2], [4, 0], [6]]
    rng = np.random.default_rng(6)
    a_clip = rng.normal(size=(12, 5))
    rel = rng.random(12)
    rel[3] = np.nan
    png = al.figure_6a(a_clip, rel)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert al.figure_6a(a_clip, rel) == png  # deterministic bytes
    with pytest.raises(DataError, match="pos_rel_pred"):
        al.figure_6a(a_clip, rel[:5])
