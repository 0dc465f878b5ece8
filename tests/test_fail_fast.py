"""Fail fast: the params file and the dataset are checked before any training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from qsenn_core.data.base import DatasetIndex
from qsenn_core.data.check import check_image_headers, check_splits
from qsenn_core.errors import DataError, ParamsError
from qsenn_core.params import load_params
from qsenn_core.steps.check_params import CHECKED, check_params

REPO = Path(__file__).resolve().parents[1]


def _index(tmp_path: Path, labels: list[int], is_train: list[bool],
           ids: list[int] | None = None) -> DatasetIndex:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(len(labels)):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(paths[-1])
    return DatasetIndex(name="cub", root=tmp_path, image_paths=paths, labels=np.array(labels),
                        is_train=np.array(is_train),
                        image_ids=np.array(ids if ids is not None else range(len(labels))),
                        class_names=["a", "b", "c"])


def test_splits_need_every_class_in_train_and_test(tmp_path: Path) -> None:
    good = _index(tmp_path, [0, 1, 2, 0, 1, 2], [True] * 3 + [False] * 3)
    check_splits(good, 3)
    with pytest.raises(DataError, match="has 3 classes, but data.name implies 4"):
        check_splits(good, 4)
    no_test = _index(tmp_path, [0, 1, 2, 0, 1, 1], [True] * 3 + [False] * 3)
    with pytest.raises(DataError, match=r"class 2 \(c\) has no test image"):
        check_splits(no_test, 3)
    twice = _index(tmp_path, [0, 1, 2, 0, 1, 2], [True] * 3 + [False] * 3, ids=[1, 2, 3, 4, 2, 6])
    with pytest.raises(DataError, match="image id 2 appears 2 times"):
        check_splits(twice, 3)


def test_image_headers_name_the_broken_file(tmp_path: Path) -> None:
    index = _index(tmp_path, [0, 1, 2], [True, True, False])
    check_image_headers(index, progress=False)
    index.image_paths[1].write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"img1\.png: not a readable image"):
        check_image_headers(index, progress=False)
    index.image_paths[1].unlink()
    with pytest.raises(DataError, match=r"img1\.png: image file not found"):
        check_image_headers(index, progress=False)


def _params_file(tmp_path: Path, **changes: dict) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in changes.items():
        raw[section].update(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cross_field_rules_stop_loading(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="quant.n_per_class"):
        load_params(_params_file(tmp_path, quant={"n_per_class": 60}))
    with pytest.raises(ParamsError, match="select.n_features: 500 is larger than the width"):
        load_params(_params_file(tmp_path, select={"n_features": 500}))


def test_check_params_writes_the_same_marker_for_any_valid_params(tmp_path: Path) -> None:
    a = load_params(_params_file(tmp_path, train={"epochs": 2}))
    check_params(a, tmp_path / "a.txt")
    b = load_params(_params_file(tmp_path, train={"epochs": 7}))
    check_params(b, tmp_path / "b.txt")
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() == CHECKED
