"""Tests of the procedural CUB-format benchmark (qsenn_core.synth).

The files are parsed with small local helpers (the real CUB reader lives in qsenn_core.data), so
these tests also pin the on-disk format that the reader relies on.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qsenn_core import synth
from qsenn_core.errors import ParamsError
from qsenn_core.params import SynthParams

SMALL = SynthParams(
    n_classes=12, image_size=48, train_per_class=4, test_per_class=3, spurious=1.0,
    attribute_noise=0.05, hide_prob=0.05, guess_prob=0.05, seed=3
)
INDEX_FILES = (
    "images.txt",
    "image_class_labels.txt",
    "train_test_split.txt",
    "classes.txt",
    "bounding_boxes.txt",
    "attributes.txt",
    "attributes/attributes.txt",
    "attributes/certainties.txt",
    "attributes/image_attribute_labels.txt",
    "attributes/class_attribute_labels_continuous.txt",
)


# --------------------------------------------------------------------------- helpers


def rows(path: Path) -> list[list[str]]:
    """Whitespace-split lines of a CUB index file (the file must end with a newline)."""
    text = path.read_text()
    assert text.endswith("\n"), f"{path.name} lacks a final newline"
    return [line.split() for line in text.splitlines()]


def id_map(path: Path) -> dict[int, str]:
    """``<id> <value>`` lines as a dict; ids must be 1, 2, 3, ... in order."""
    table = rows(path)
    ids = [int(r[0]) for r in table]
    assert ids == list(range(1, len(ids) + 1)), f"{path.name}: ids are not 1..n in order"
    return {int(r[0]): " ".join(r[1:]) for r in table}


def labels_array(cub: Path) -> np.ndarray:
    """image_attribute_labels.txt as ints (n_images, n_attributes, 2): present, certainty."""
    table = rows(cub / "attributes/image_attribute_labels.txt")
    n_attr = len(id_map(cub / "attributes.txt"))
    arr = np.array([[int(r[0]), int(r[1]), int(r[2]), int(r[3])] for r in table])
    return arr[:, 2:].reshape(-1, n_attr, 2)


def continuous(cub: Path) -> np.ndarray:
    """class_attribute_labels_continuous.txt as a float array (n_classes, n_attributes)."""
    return np.array([[float(v) for v in r] for r in rows(
        cub / "attributes/class_attribute_labels_continuous.txt")])


def type_of_attribute(cub: Path) -> list[str]:
    """Attribute type (``has_wing_color``) per attribute, in id order."""
    return [name.split("::")[0] for name in id_map(cub / "attributes.txt").values()]


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def border_colour(path: Path, width: int = 3) -> np.ndarray:
    """Mean RGB of the outer ``width``-pixel frame of an image."""
    img = np.asarray(Image.open(path), dtype=np.float64)
    mask = np.ones(img.shape[:2], dtype=bool)
    mask[width:-width, width:-width] = False
    return img[mask].mean(0)


def within_class_ratio(colours: np.ndarray, classes: np.ndarray) -> float:
    """Within-class variance of ``colours`` over their total variance (0 = set by the class)."""
    within = sum(((colours[classes == c] - colours[classes == c].mean(0)) ** 2).sum()
                 for c in np.unique(classes))
    return float(within / ((colours - colours.mean(0)) ** 2).sum())


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.SynthSummary]:
    out = tmp_path_factory.mktemp("synth") / "data"
    return out, synth.generate_synth(out, SMALL)


# --------------------------------------------------------------------------- layout and format


def test_layout_every_file_exists(small: tuple[Path, synth.SynthSummary]) -> None:
    out, summary = small
    cub = out / "CUB_200_2011"
    for rel in INDEX_FILES:
        assert (cub / rel).is_file(), rel
    folders = sorted(p.name for p in (cub / "images").iterdir())
    assert len(folders) == SMALL.n_classes
    for split in ("train", "test"):
        assert sorted(p.name for p in (out / "TravelingBirds/CUB_fixed" / split).iterdir()) == \
            folders
    assert summary.n_images == len(list((cub / "images").rglob("*.jpg")))
    assert summary.n_images == len(list((out / "TravelingBirds").rglob("*.jpg")))
    assert sorted(p.name for p in out.iterdir()) == ["CUB_200_2011", "TravelingBirds"]


def test_index_files_parse_as_cub(small: tuple[Path, synth.SynthSummary]) -> None:
    out, summary = small
    cub = out / "CUB_200_2011"
    per_class = SMALL.train_per_class + SMALL.test_per_class
    classes = id_map(cub / "classes.txt")
    assert len(classes) == summary.n_classes == SMALL.n_classes
    for cid, folder in classes.items():
        assert re.fullmatch(r"\d{3}\.[A-Z][A-Za-z]*(_[A-Za-z0-9]+)+", folder), folder
        assert int(folder[:3]) == cid
    assert len(set(classes.values())) == len(classes)

    images = id_map(cub / "images.txt")
    labels = {k: int(v) for k, v in id_map(cub / "image_class_labels.txt").items()}
    split = {k: int(v) for k, v in id_map(cub / "train_test_split.txt").items()}
    assert len(images) == len(labels) == len(split) == summary.n_images
    assert summary.n_images == SMALL.n_classes * per_class
    for iid, rel in images.items():
        folder, name = rel.split("/")
        assert folder == classes[labels[iid]]
        assert re.fullmatch(rf"{re.escape(folder[4:])}_0*{iid}\.jpg", name), name
        assert (cub / "images" / rel).is_file()
    assert set(split.values()) == {0, 1}
    for cid in classes:
        mine = [split[i] for i in images if labels[i] == cid]
        assert (sum(mine), len(mine)) == (SMALL.train_per_class, per_class)
    assert (summary.n_train, summary.n_test) == (sum(split.values()),
                                                 len(split) - sum(split.values()))

    boxes = {k: [float(x) for x in v.split()]
             for k, v in id_map(cub / "bounding_boxes.txt").items()}
    assert len(boxes) == summary.n_images
    for x, y, w, h in boxes.values():
        assert 0 <= x and 0 <= y and w > 4 and h > 4
        assert x + w <= SMALL.image_size + 1e-6 and y + h <= SMALL.image_size + 1e-6


def test_attribute_files(small: tuple[Path, synth.SynthSummary]) -> None:
    out, summary = small
    cub = out / "CUB_200_2011"
    attributes = id_map(cub / "attributes.txt")
    assert (cub / "attributes.txt").read_bytes() == (cub / "attributes/attributes.txt").read_bytes()
    for name in attributes.values():
        assert re.fullmatch(r"has_[a-z]+(_[a-z]+)*::[a-z0-9_()\-]+", name), name
    types = type_of_attribute(cub)
    assert len(attributes) == summary.n_attributes >= 30
    assert len(set(types)) == summary.n_attribute_types >= 8
    assert {"has_bill_shape::dagger", "has_wing_color::blue", "has_breast_pattern::spotted",
            "has_tail_shape::forked_tail", "has_size::small_(5_-_9_in)"} <= set(attributes.values())
    assert (cub / "attributes/certainties.txt").read_text() == \
        "1 not visible\n2 guessing\n3 probably\n4 definitely\n"

    table = rows(cub / "attributes/image_attribute_labels.txt")
    assert len(table) == summary.n_images * len(attributes)
    expected = [(i, a) for i in range(1, summary.n_images + 1)
                for a in range(1, len(attributes) + 1)]
    assert [(int(r[0]), int(r[1])) for r in table] == expected
    for r in table:
        assert len(r) == 5 and r[2] in ("0", "1") and r[3] in ("1", "2", "3", "4")
        assert float(r[4]) >= 0.0

    percent = continuous(cub)
    assert percent.shape == (SMALL.n_classes, len(attributes))
    labels = id_map(cub / "image_class_labels.txt")
    present = labels_array(cub)[:, :, 0]
    cls = np.array([int(labels[i]) for i in sorted(labels)])
    for c in range(SMALL.n_classes):
        np.testing.assert_allclose(percent[c], 100 * present[cls == c + 1].mean(0), atol=1e-5)


def test_images_are_rgb_jpegs_of_the_right_size(small: tuple[Path, synth.SynthSummary]) -> None:
    out, _ = small
    paths = list(out.rglob("*.jpg"))
    assert paths
    for path in paths:
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (48, 48))
            img.load()


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(
    small: tuple[Path, synth.SynthSummary], tmp_path: Path
) -> None:
    out, _ = small
    synth.generate_synth(tmp_path / "again", SMALL)
    first, again = file_bytes(out), file_bytes(tmp_path / "again")
    assert first.keys() == again.keys()
    assert [k for k in first if first[k] != again[k]] == []

    synth.generate_synth(tmp_path / "other", dataclasses.replace(SMALL, seed=4))
    other = file_bytes(tmp_path / "other")
    changed = [k for k in other if other[k] != first.get(k)]
    assert len(changed) > 0.9 * len(other)
    for rel in ("attributes/image_attribute_labels.txt", "classes.txt", "bounding_boxes.txt"):
        assert other[f"CUB_200_2011/{rel}"] != first[f"CUB_200_2011/{rel}"]


# --------------------------------------------------------------------------- class statistics


@pytest.mark.parametrize("n_classes", [4, 5, 7, 12, 50, 200])
def test_prototypes_are_shared_and_separated(n_classes: int) -> None:
    sizes = synth.type_sizes()
    protos = synth.sample_prototypes(np.random.default_rng(n_classes), n_classes, sizes)
    assert protos.shape == (n_classes, len(sizes))
    assert ((protos >= 0) & (protos < sizes)).all()
    dist = (protos[:, None] != protos[None]).sum(-1)
    np.fill_diagonal(dist, len(sizes))
    assert dist.min() >= synth.class_distance(n_classes) >= 4
    for t, size in enumerate(sizes):
        counts = np.bincount(protos[:, t], minlength=size)
        assert not (counts == 1).any(), "an expression identifies a single class"
        assert (counts > 0).sum() == min(size, n_classes // 2)


def test_prototypes_of_two_classes_differ() -> None:
    protos = synth.sample_prototypes(np.random.default_rng(0), 2, synth.type_sizes())
    assert (protos[0] != protos[1]).sum() >= synth.class_distance(2)


def test_noise_free_classes_share_every_attribute(tmp_path: Path) -> None:
    params = dataclasses.replace(SMALL, attribute_noise=0.0, hide_prob=0.0, guess_prob=0.0,
                                 train_per_class=2, test_per_class=1)
    synth.generate_synth(tmp_path / "d", params)
    cub = tmp_path / "d/CUB_200_2011"
    percent = continuous(cub)
    assert set(np.unique(percent)) == {0.0, 100.0}  # noise-free: every image is the prototype
    proto = percent == 100.0
    assert (proto.sum(0) >= 2).all(), "every attribute is present in >= 2 classes"
    types = np.array(type_of_attribute(cub))
    for t in np.unique(types):
        assert (proto[:, types == t].sum(1) == 1).all(), "one expression per type and class"
    differ = (proto[:, None] != proto[None]).sum(-1) // 2  # types in which two classes differ
    np.fill_diagonal(differ, 99)
    assert differ.min() >= 2


def test_certainty_semantics(small: tuple[Path, synth.SynthSummary]) -> None:
    out, _ = small
    cub = out / "CUB_200_2011"
    labels = labels_array(cub)
    present, certainty = labels[..., 0], labels[..., 1]
    assert set(np.unique(certainty)) == {1, 2, 3, 4}
    assert (present[certainty == 1] == 0).all(), "not visible -> is_present 0"
    types = np.array(type_of_attribute(cub))
    part = {f"has_{t.name}": t.part for t in synth.ATTRIBUTE_TYPES}
    parts = np.array([part[t] for t in types])
    hidden = certainty == 1
    for p in np.unique(parts):
        cols = hidden[:, parts == p]
        assert (cols.all(1) | ~cols.any(1)).all(), f"part {p} is hidden only partly"
    assert not hidden[:, parts == "whole"].any()
    # visible, non-guessed annotations are correct: one expression per type at certainty 3/4
    for t in np.unique(types):
        sure = np.isin(certainty[:, types == t], (3, 4)).all(1)
        assert (present[sure][:, types == t].sum(1) == 1).all()
    frac_hidden = hidden[:, parts == "wing"].all(1).mean()
    assert 0.0 < frac_hidden < 0.35
    frac_guess = (certainty == 2).sum() / (certainty != 1).sum()
    assert 0.01 < frac_guess < 0.12


def test_hide_and_guess_probabilities_are_obeyed(tmp_path: Path) -> None:
    params = dataclasses.replace(SMALL, n_classes=4, hide_prob=1.0, guess_prob=0.0)
    synth.generate_synth(tmp_path / "d", params)
    cub = tmp_path / "d/CUB_200_2011"
    certainty = labels_array(cub)[..., 1]
    is_size = np.array([t == "has_size" for t in type_of_attribute(cub)])
    assert (certainty[:, ~is_size] == 1).all()
    assert np.isin(certainty[:, is_size], (3, 4)).all()


# --------------------------------------------------------------------------- TravelingBirds


def tb_table(out: Path) -> tuple[list[Path], list[Path], np.ndarray, np.ndarray]:
    """CUB paths, TravelingBirds paths, class ids and train flags in image-id order."""
    cub = out / "CUB_200_2011"
    images = id_map(cub / "images.txt")
    labels = id_map(cub / "image_class_labels.txt")
    split = id_map(cub / "train_test_split.txt")
    tb = [out / "TravelingBirds/CUB_fixed" / ("train" if split[i] == "1" else "test") / images[i]
          for i in images]
    return ([cub / "images" / images[i] for i in images], tb,
            np.array([int(labels[i]) for i in images]), np.array([split[i] == "1" for i in images]))


def test_travelingbirds_layout_follows_the_split(small: tuple[Path, synth.SynthSummary]) -> None:
    out, _ = small
    cub_paths, tb_paths, _, train = tb_table(out)
    for path in tb_paths:
        assert path.is_file(), path
    listed = {str(p.relative_to(out / "TravelingBirds/CUB_fixed")) for p in tb_paths}
    on_disk = {str(p.relative_to(out / "TravelingBirds/CUB_fixed"))
               for p in (out / "TravelingBirds").rglob("*.jpg")}
    assert listed == on_disk
    assert sum(p.parts[-3] == "train" for p in tb_paths) == train.sum()
    assert [p.name for p in cub_paths] == [p.name for p in tb_paths]


def test_same_bird_on_both_backgrounds(small: tuple[Path, synth.SynthSummary]) -> None:
    """Pixels that agree between the two variants (the bird) lie inside the bounding box."""
    out, _ = small
    cub_paths, tb_paths, _, _ = tb_table(out)
    boxes = rows(out / "CUB_200_2011/bounding_boxes.txt")
    inside_rates, outside_rates = [], []
    for a, b, box in zip(cub_paths, tb_paths, boxes, strict=True):
        same = (np.abs(np.asarray(Image.open(a), float) - np.asarray(Image.open(b), float))
                .max(-1) < 20)
        x, y, w, h = (float(v) for v in box[1:])
        mask = np.zeros_like(same)
        mask[int(y) + 1:int(y + h) - 1, int(x) + 1:int(x + w) - 1] = True
        inside_rates.append(same[mask].mean())
        outside_rates.append(same[~mask].mean())
    assert np.mean(inside_rates) > 0.2
    assert np.mean(inside_rates) > 10 * np.mean(outside_rates)


def test_train_backgrounds_follow_the_class_test_backgrounds_do_not(
    small: tuple[Path, synth.SynthSummary], tmp_path: Path
) -> None:
    out, _ = small
    cub_paths, tb_paths, classes, train = tb_table(out)
    tb = np.array([border_colour(p) for p in tb_paths])
    cub = np.array([border_colour(p) for p in cub_paths])
    assert within_class_ratio(tb[train], classes[train]) < 0.15  # spurious = 1: place = class
    assert within_class_ratio(tb[~train], classes[~train]) > 0.4  # test: random places
    assert within_class_ratio(cub[train], classes[train]) > 0.4  # CUB: class-independent

    synth.generate_synth(tmp_path / "fair", dataclasses.replace(SMALL, spurious=0.0))
    _, fair_paths, fair_classes, fair_train = tb_table(tmp_path / "fair")
    fair = np.array([border_colour(p) for p in fair_paths])
    assert within_class_ratio(fair[fair_train], fair_classes[fair_train]) > 0.4
    # the birds do not depend on the spurious parameter: the CUB variant is byte-identical
    assert file_bytes(out / "CUB_200_2011") == file_bytes(tmp_path / "fair/CUB_200_2011")


# --------------------------------------------------------------------------- atomicity, errors


def test_failure_midway_leaves_no_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = {"n": 0}
    real_save = synth._save_jpeg

    def failing_save(image: Image.Image, path: Path) -> None:
        calls["n"] += 1
        if calls["n"] > 20:
            raise OSError("disk full")
        real_save(image, path)

    monkeypatch.setattr(synth, "_save_jpeg", failing_save)
    with pytest.raises(OSError, match="disk full"):
        synth.generate_synth(tmp_path / "fresh", SMALL)
    assert list(tmp_path.iterdir()) == []

    keep = tmp_path / "kept"
    keep.mkdir()
    (keep / "marker").write_text("old")
    calls["n"] = 0
    with pytest.raises(OSError):
        synth.generate_synth(keep, SMALL)
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    assert [p.name for p in keep.iterdir()] == ["marker"]


def test_rerun_replaces_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "d"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    synth.generate_synth(out, dataclasses.replace(SMALL, n_classes=4))
    assert not (out / "stale.txt").exists()
    assert len(id_map(out / "CUB_200_2011/classes.txt")) == 4


@pytest.mark.parametrize(("field", "value"), [("hide_prob", 1.5), ("n_classes", 1),
                                              ("image_size", 16), ("test_per_class", 0)])
def test_bad_params_are_one_line_errors(field: str, value: float, tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=rf"^synth\.{field}: [^\n]+$"):
        synth.generate_synth(tmp_path / "d", dataclasses.replace(SMALL, **{field: value}))
    assert not (tmp_path / "d").exists()
