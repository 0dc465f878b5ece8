"""The dataset table and the metric-column table are complete and are what the code uses.

Datasets: every ``data.name`` has a reader, a class count, a prompt noun and transform stats, and
the README's Datasets table is the registry's. Metrics: the keys the evaluate stage writes (by
running its own function on a tiny model, and in the committed ``metrics/*.json``) are exactly the
registry's, and the report and compare tables show the registry's columns.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from qsenn_core import alignment, compare, report
from qsenn_core.backbones import build_model
from qsenn_core.data import READERS, build_transform, load_dataset
from qsenn_core.dataset_registry import DATASETS, dataset_spec
from qsenn_core.errors import ParamsError
from qsenn_core.metric_columns import (
    COMPARE_COLUMNS,
    HIGHER,
    LOWER,
    METRIC_COLUMNS,
    NEITHER,
    REPORT_COLUMNS,
)
from qsenn_core.params import DATASET_CLASSES, load_params, params_from_dict
from qsenn_core.steps.evaluate import model_metrics

REPO = Path(__file__).resolve().parents[1]
#: The models the evaluate stages write ``metrics/<model>.json`` for (the report's rows).
EVALUATED = re.compile(r"(dense|glm5|iter_\d+|final)\.json")

# --------------------------------------------------------------------------- datasets


def test_every_dataset_has_a_reader_a_noun_stats_and_a_class_count() -> None:
    assert list(READERS) == list(DATASETS)
    for name, spec in DATASETS.items():
        assert spec.name == name and callable(READERS[name])
        assert spec.layout.strip() and spec.object_noun.strip()
        assert alignment.object_noun(name) == spec.object_noun
        mean, std = spec.stats
        assert len(mean) == len(std) == 3 and min(std) > 0 and all(0 <= m <= 1 for m in mean)
        # only the generated datasets take their class count from synth.n_classes
        assert (spec.n_classes is None) == name.startswith("synth")
        assert spec.n_classes is None or spec.n_classes > 1
    assert DATASET_CLASSES == {name: spec.n_classes for name, spec in DATASETS.items()}


def test_paper_facts_of_the_real_datasets() -> None:
    # Table 2 (classes); supplement: no random crop for aircraft, no TrivialAugment for ImageNet
    assert {n: s.n_classes for n, s in DATASETS.items() if s.n_classes} == {
        "cub": 200, "travelingbirds": 200, "cars": 196, "aircraft": 100, "imagenet": 1000}
    assert [n for n, s in DATASETS.items() if not s.random_crop] == ["aircraft"]
    assert not DATASETS["imagenet"].trivial_augment and DATASETS["cub"].trivial_augment
    assert {DATASETS[n].object_noun for n in ("cub", "travelingbirds", "synth")} == {"bird"}


def test_readme_datasets_table_is_the_registry() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Datasets\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\w+)`(?: \(default\))? \| (.+) \|$", section, flags=re.M)
    assert dict(rows) == {name: spec.layout for name, spec in DATASETS.items()}
    assert [name for name, _ in rows] == list(DATASETS)


def test_unknown_dataset_is_the_same_params_error_everywhere(tmp_path: Path) -> None:
    with pytest.raises(ParamsError) as expected:
        dataset_spec("mnist")
    message = str(expected.value)
    assert message.startswith("data.name: unknown dataset 'mnist'") and "cub" in message
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["name"] = "mnist"
    calls = (lambda: load_dataset("mnist", tmp_path), lambda: build_transform("mnist", 16, True),
             lambda: alignment.object_noun("mnist"), lambda: params_from_dict(raw))
    for call in calls:
        with pytest.raises(ParamsError) as err:
            call()
        assert str(err.value) == message


def test_the_tables_and_params_import_no_torch() -> None:
    code = ("import sys, qsenn_core.params, qsenn_core.dataset_registry, "
            "qsenn_core.metric_columns; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- metric columns


def _keys_of_model_metrics() -> set[str]:
    """The keys the evaluate stage's ``model_metrics`` writes for a tiny dense model with
    attributes (so alignment r is defined)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model("small_cnn", 3, width=8)
    images = torch.rand(6, 3, 16, 16)
    test_set = [(images[i], i % 3, i) for i in range(len(images))]
    train_features = rng.random((12, 8)).astype(np.float32)
    attributes = rng.random((12, 4)) > 0.5
    result = model_metrics(load_params(REPO / "params.yaml"), model, train_features, attributes,
                           test_set, batch_size=4)
    return set(result)


def test_model_metrics_writes_exactly_the_registered_metrics() -> None:
    computed = _keys_of_model_metrics()
    assert computed <= set(METRIC_COLUMNS), "model_metrics writes a key without a column"
    # the one column model_metrics cannot write is evaluate's change against the previous
    # iteration (it needs two models); the committed metrics below show it
    assert set(METRIC_COLUMNS) - computed == {"assignments_changed"}


def test_committed_metrics_have_only_registered_keys() -> None:
    files = sorted(p for p in (REPO / "metrics").iterdir() if EVALUATED.fullmatch(p.name))
    assert {"dense.json", "glm5.json", "final.json"} <= {p.name for p in files}
    for path in files:
        unknown = sorted(set(json.loads(path.read_text())) - set(METRIC_COLUMNS))
        assert not unknown, (f"{path.relative_to(REPO)}: keys without a column {unknown} "
                             "(stale after an evaluate change? `dvc repro` rewrites it)")
    assert any("assignments_changed" in json.loads(p.read_text()) for p in files)


def test_metric_columns_are_well_formed() -> None:
    labels = [c.label for c in METRIC_COLUMNS.values()]
    assert len(set(labels)) == len(labels)
    for key, col in METRIC_COLUMNS.items():
        assert col.key == key and col.label and col.source
        assert col.unit in ("%", "") and col.better in (HIGHER, LOWER, NEITHER)
        assert col.digits >= 0
        assert col.arrow == {HIGHER: "↑", LOWER: "↓", NEITHER: ""}[col.better]
    order = list(METRIC_COLUMNS)
    for view in (REPORT_COLUMNS, COMPARE_COLUMNS):
        keys = [c.key for c in view]
        assert keys == sorted(keys, key=order.index)  # the registry's order
    # the paper's headline metrics are in both tables
    assert {c.key for c in REPORT_COLUMNS} <= {c.key for c in COMPARE_COLUMNS}
    assert [c.key for c in REPORT_COLUMNS][:4] == [
        "accuracy", "diversity_at_5", "dependence", "alignment_r"]


def test_report_and_compare_show_the_registry_columns(tmp_path: Path) -> None:
    every = {key: float(i + 1) for i, key in enumerate(METRIC_COLUMNS)}
    table = report.metrics_table({"final": every})
    headers = re.findall(r"<th>([^<]*)</th>", table.split("</tr>", 1)[0])
    assert headers == ["Model", *(f"{c.label} {c.arrow}".strip() for c in REPORT_COLUMNS)]
    experiment = compare.Experiment("main", "abc1234", None, {}, {"metrics/final.json": every})
    (row,) = compare.table([experiment])
    assert [k for k in row if k not in ("experiment", "baseline", "changes")] == [
        c.key for c in COMPARE_COLUMNS]
    assert all(row[c.key] == every[c.key] for c in COMPARE_COLUMNS)
