"""qsenn_core.feature_anatomy and bench/bench_binary_anatomy.py: clusters against classes served."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from bench_scripts import load_bench
from dvc_project import Reproduced, copy_project
from scipy import stats

from qsenn_core.errors import DataError
from qsenn_core.feature_anatomy import anatomy_summary, effective_classes, feature_anatomy
from qsenn_core.feature_files import read_features
from qsenn_core.metrics import binary_feature_fraction


def test_effective_classes_counts_the_classes_a_feature_is_equally_active_in() -> None:
    labels = np.repeat(np.arange(10), [5, 6, 7, 8, 9, 10, 11, 12, 13, 14])  # unequal class sizes
    on_in_three = np.isin(labels, [0, 4, 9]) * 2.5
    everywhere = np.full(len(labels), 0.7)
    one_half = (labels == 2) * 1.0 + (labels == 3) * 0.5  # (1 + 0.5)^2 / (1 + 0.25) = 1.8
    features = np.stack([on_in_three, everywhere, one_half, np.zeros(len(labels))], axis=1)
    got = effective_classes(features, labels)
    np.testing.assert_allclose(got[:3], [3.0, 10.0, 1.8])
    assert math.isnan(got[3])  # silent everywhere: no classes to count


def test_effective_classes_uses_class_means_not_sums() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    features = np.ones((100, 1))  # equal in both classes, whatever their sizes
    assert effective_classes(features, labels)[0] == pytest.approx(2.0)


@pytest.mark.parametrize(("features", "labels", "match"), [
    (np.ones((4, 2)), np.zeros(3), "disagree"),
    (-np.ones((4, 2)), np.zeros(4), "non-negative"),
])
def test_effective_classes_rejects_bad_input(features: np.ndarray, labels: np.ndarray,
                                             match: str) -> None:
    with pytest.raises(DataError, match=match):
        effective_classes(features, labels)


def _planted() -> tuple[np.ndarray, np.ndarray]:
    """Six features with known cluster counts: two values are two clusters (bandwidth 0),
    three values three, a constant one; the general features serve more classes."""
    labels = np.repeat(np.arange(20), 10)
    cls = labels[:, None]
    cols = [
        np.full(len(labels), 1.0),                                       # 1 cluster, 20 classes
        (labels < 12) * 1.0,                                             # 2 clusters, 12 classes
        (labels % 2 == 0) * 1.0,                                         # 2 clusters, 10 classes
        (labels == 0) * 2.0 + (labels == 1) * 1.0,                       # 3 clusters, 1.8
        (labels == 5) * 3.0 + np.isin(labels, [6, 7]) * 1.5,             # 3 clusters
        np.select([cls[:, 0] == 3, cls[:, 0] == 4, cls[:, 0] == 8], [4.0, 2.0, 1.0], 0.0),
    ]
    return np.stack(cols, axis=1), labels


def test_anatomy_clusters_are_the_binary_metric_clusters() -> None:
    features, labels = _planted()
    anatomy = feature_anatomy(features, labels)
    np.testing.assert_array_equal(anatomy.n_clusters, [1, 2, 2, 3, 3, 4])
    assert anatomy.n_features == 6
    assert np.mean(anatomy.n_clusters == 2) == binary_feature_fraction(features)


def test_summary_shares_means_and_rank_correlation() -> None:
    features, labels = _planted()
    anatomy = feature_anatomy(features, labels)
    summary = anatomy_summary(anatomy)
    assert summary["unimodal_pct"] == pytest.approx(100 / 6)
    assert summary["binary_pct"] == pytest.approx(200 / 6)
    assert summary["multimodal_pct"] == pytest.approx(300 / 6)
    assert summary["effective_classes_unimodal"] == pytest.approx(20.0)
    assert summary["effective_classes_binary"] == pytest.approx(11.0)
    e = anatomy.effective_classes
    assert summary["effective_classes_multimodal"] == pytest.approx(e[3:].mean())
    assert summary["effective_classes"] == pytest.approx(e.mean())
    # more clusters, fewer classes
    expected = stats.spearmanr(anatomy.n_clusters, e).statistic
    assert summary["spearman_clusters_classes"] == pytest.approx(expected)
    assert expected < -0.8


def test_summary_is_nan_where_a_kind_is_missing() -> None:
    labels = np.repeat(np.arange(4), 5)
    features = np.stack([(labels < 2) * 1.0, (labels < 3) * 1.0], axis=1)  # two binary ones
    summary = anatomy_summary(feature_anatomy(features, labels))
    assert summary["binary_pct"] == 100.0
    assert math.isnan(summary["effective_classes_unimodal"])
    assert math.isnan(summary["spearman_clusters_classes"])  # clusters are constant


def test_bench_rows_match_workspace_and_revision(reproduced: Reproduced, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench("bench_binary_anatomy")
    root = copy_project(reproduced.root, tmp_path / "project")
    workspace = bench.anatomy_rows(root)
    assert [row["model"] for row in workspace] == ["dense", "iter_2"]
    features, labels, _ = read_features(root / "features/iter_2.parquet", "train")
    expected = anatomy_summary(feature_anatomy(features, labels))
    assert {k: workspace[1][k] for k in expected} == pytest.approx(expected, nan_ok=True)

    out = tmp_path / "rows.json"
    assert bench.main(["--root", str(root), "--rev", "HEAD", "--json", str(out)]) == 0
    at_head = json.loads(out.read_text())
    assert [row["rev"] for row in at_head] == ["HEAD", "HEAD"]
    for ws, head in zip(workspace, at_head, strict=True):  # HEAD holds the same outputs
        assert {k: v for k, v in head.items() if k != "rev"} == pytest.approx(
            {k: v for k, v in ws.items() if k != "rev"}, nan_ok=True)
    assert "| HEAD | iter_2 |" in capsys.readouterr().out

    assert bench.main(["--root", str(root), "--rev", "no-such-rev"]) == 1
    assert "no-such-rev: cannot read params.yaml" in capsys.readouterr().err
