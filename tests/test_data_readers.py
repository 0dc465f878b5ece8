"""Dataset readers on tiny trees written in each published layout (a few 8x8 JPEGs)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader

from qsenn_core.data import DATASETS, DatasetIndex, ImageDataset, build_transform, load_dataset
from qsenn_core.data.cub import read_cub
from qsenn_core.errors import DataError, ParamsError

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
# (relative path, class id, is_train); image ids are the 1-based line numbers
CUB_IMAGES = [
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0001.jpg", 1, 1),
    ("001.Black_footed_Albatross/Black_Footed_Albatross_0002.jpg", 1, 0),
    ("002.Laysan_Albatross/Laysan_Albatross_0001.jpg", 2, 1),
    ("002.Laysan_Albatross/Laysan_Albatross_0002.jpg", 2, 1),
    ("002.Laysan_Albatross/Laysan_Albatross_0003.jpg", 2, 0),
]
ATTRIBUTES = ["has_bill_shape::dagger", "has_bill_shape::hooked", "has_wing_color::blue"]


def write_jpeg(path: Path, value: int = 128, size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, value // 2)).save(path, "JPEG")


def attribute_lines() -> tuple[list[str], np.ndarray]:
    """Lines of image_attribute_labels.txt (every certainty) and the matrix they should give."""
    rng = np.random.default_rng(0)
    lines, expected = [], np.zeros((len(CUB_IMAGES), len(ATTRIBUTES)), np.uint8)
    for img in range(1, len(CUB_IMAGES) + 1):
        for att in range(1, len(ATTRIBUTES) + 1):
            present, certainty = int(rng.integers(0, 2)), int(rng.integers(1, 5))
            lines.append(f"{img} {att} {present} {certainty} {rng.uniform(1, 30):.3f}")
            expected[img - 1, att - 1] = present == 1 and certainty >= 3
    # make sure both outcomes of the certainty rule are exercised
    lines[0], expected[0, 0] = "1 1 1 2 3.0", 0  # present but only "guessing"
    lines[1], expected[0, 1] = "1 2 1 3 3.0", 1  # present, "probably"
    lines[2], expected[0, 2] = "1 3 0 4 3.0", 0  # "definitely" absent
    return lines, expected


def make_cub(root: Path, names_beside: bool = False, with_attributes: bool = True) -> np.ndarray:
    """Write CUB_200_2011 under ``root``; return the expected attribute matrix."""
    cub = root / "CUB_200_2011"
    for i, (rel, _, _) in enumerate(CUB_IMAGES):
        write_jpeg(cub / "images" / rel, value=40 * i, size=(12, 10))
    (cub / "images.txt").write_text(
        "".join(f"{i} {rel}\n" for i, (rel, _, _) in enumerate(CUB_IMAGES, 1)))
    (cub / "image_class_labels.txt").write_text(
        "".join(f"{i} {c}\n" for i, (_, c, _) in enumerate(CUB_IMAGES, 1)))
    (cub / "train_test_split.txt").write_text(
        "".join(f"{i} {t}\n" for i, (_, _, t) in enumerate(CUB_IMAGES, 1)))
    (cub / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CUB_CLASSES, 1)))
    (cub / "bounding_boxes.txt").write_text(
        "".join(f"{i} {i}.0 2.0 5.0 {3 + i}.0\n" for i in range(1, len(CUB_IMAGES) + 1)))
    lines, expected = attribute_lines()
    if with_attributes:
        names_file = root / "attributes.txt" if names_beside else cub / "attributes.txt"
        names_file.write_text("".join(f"{i} {a}\n" for i, a in enumerate(ATTRIBUTES, 1)))
        (cub / "attributes").mkdir()
        (cub / "attributes" / "image_attribute_labels.txt").write_text("\n".join(lines) + "\n")
    return expected


# --------------------------------------------------------------------------- CUB


def test_cub_reader_reads_every_field(tmp_path: Path) -> None:
    expected = make_cub(tmp_path)
    index = load_dataset("cub", tmp_path)
    assert index.name == "cub" and index.n_classes == 2
    assert index.class_names == CUB_CLASSES
    assert index.image_ids.tolist() == [1, 2, 3, 4, 5]
    assert index.labels.tolist() == [0, 0, 1, 1, 1]
    assert index.is_train.tolist() == [True, False, True, True, False]
    assert index.split("train").tolist() == [0, 2, 3]
    assert index.split("test").tolist() == [1, 4]
    assert all(p.is_absolute() and p.is_file() for p in index.image_paths)
    assert index.image_paths[2] == (tmp_path / "CUB_200_2011/images" / CUB_IMAGES[2][0]).absolute()
    assert index.attribute_names == ATTRIBUTES
    assert index.attributes is not None and index.attributes.dtype == np.uint8
    np.testing.assert_array_equal(index.attributes, expected)
    assert index.bboxes is not None
    np.testing.assert_allclose(index.bboxes[3], [4.0, 2.0, 5.0, 7.0])


def test_cub_attribute_names_beside_the_folder_as_in_the_tarball(tmp_path: Path) -> None:
    expected = make_cub(tmp_path, names_beside=True)
    index = load_dataset("cub", tmp_path)
    assert index.attribute_names == ATTRIBUTES
    np.testing.assert_array_equal(index.attributes, expected)


def test_cub_without_attribute_files_has_none(tmp_path: Path) -> None:
    make_cub(tmp_path, with_attributes=False)
    index = load_dataset("cub", tmp_path)
    assert index.attributes is None and index.attribute_names is None
    assert len(index) == 5


def test_cub_malformed_attribute_lines_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = make_cub(tmp_path)
    path = tmp_path / "CUB_200_2011/attributes/image_attribute_labels.txt"
    lines = path.read_text().splitlines()
    # like the real file: extra fields on a few lines; they must not count as "present"
    lines[4] = lines[4].split()[0] + " 2 1 4 0 12.5"
    lines.insert(7, "3 1 1 4 5.0 extra")
    lines.append("2 x 1 4 1.0")
    lines.append("")  # a trailing blank line is not malformed
    path.write_text("\n".join(lines) + "\n")
    expected[1, 1] = 0  # line 5 (image 2, attribute 2) was replaced by a malformed line
    with caplog.at_level(logging.WARNING):
        index = load_dataset("cub", tmp_path)
    np.testing.assert_array_equal(index.attributes, expected)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 3 malformed line(s)" in warnings[0] and str(path) in warnings[0]
    assert "first at line 5" in warnings[0]


def test_cub_missing_dataset_is_one_line_with_file_and_url(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cub", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("cub: dataset not found")
    assert str(tmp_path / "CUB_200_2011" / "images.txt") in msg
    assert "https://www.vision.caltech.edu/datasets/cub_200_2011/" in msg


def test_cub_missing_index_file_is_named(tmp_path: Path) -> None:
    make_cub(tmp_path)
    (tmp_path / "CUB_200_2011/train_test_split.txt").unlink()
    with pytest.raises(DataError, match="train_test_split.txt"):
        load_dataset("cub", tmp_path)


@pytest.mark.parametrize(
    ("file", "line_no", "bad_line"),
    [
        ("image_class_labels.txt", 3, "3"),  # missing field
        ("image_class_labels.txt", 2, "2 two"),  # not an integer
        ("image_class_labels.txt", 4, "4 7"),  # unknown class id
        ("train_test_split.txt", 5, "5 2"),  # not 0/1
        ("images.txt", 2, "x 001.Black_footed_Albatross/a.jpg"),  # bad id
        ("bounding_boxes.txt", 1, "1 1.0 2.0 wide 3.0"),
        ("classes.txt", 2, "1 002.Laysan_Albatross"),  # duplicate id
    ],
)
def test_cub_malformed_index_file_names_file_and_line(
    tmp_path: Path, file: str, line_no: int, bad_line: str
) -> None:
    make_cub(tmp_path)
    path = tmp_path / "CUB_200_2011" / file
    lines = path.read_text().splitlines()
    lines[line_no - 1] = bad_line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        load_dataset("cub", tmp_path)
    msg = str(err.value)
    assert str(path) in msg and f"line {line_no}" in msg and "\n" not in msg


def test_cub_image_missing_from_a_label_file_is_an_error(tmp_path: Path) -> None:
    make_cub(tmp_path)
    path = tmp_path / "CUB_200_2011/image_class_labels.txt"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(DataError, match="no entry for id 5"):
        load_dataset("cub", tmp_path)


def test_synth_reads_the_cub_layout_and_names_the_stage_when_missing(tmp_path: Path) -> None:
    make_cub(tmp_path)
    index = load_dataset("synth", tmp_path)
    assert index.name == "synth" and len(index) == 5 and index.attributes is not None
    with pytest.raises(DataError) as err:
        load_dataset("synth", tmp_path / "nowhere")
    assert "synth: dataset not found" in str(err.value) and "prepare_data" in str(err.value)


# --------------------------------------------------------------------------- TravelingBirds


def make_travelingbirds(split_root: Path) -> list[tuple[str, str]]:
    """Write TravelingBirds images following CUB's split; return (split, rel path) in order."""
    out = []
    for split in ("train", "test"):
        for rel, _, t in sorted(CUB_IMAGES):
            if (split == "train") == bool(t):
                write_jpeg(split_root / split / rel, value=200, size=(12, 10))
                out.append((split, rel))
    return out


def test_travelingbirds_joins_cub_attributes_by_path(tmp_path: Path) -> None:
    expected = make_cub(tmp_path)  # CUB_200_2011 beside the TravelingBirds root
    tb_root = tmp_path / "TravelingBirds"
    written = make_travelingbirds(tb_root / "CUB_fixed")
    index = load_dataset("travelingbirds", tb_root)
    assert index.class_names == CUB_CLASSES
    assert index.is_train.tolist() == [s == "train" for s, _ in written]
    assert index.image_ids.tolist() == list(range(len(written)))
    rel_to_cub = {rel: i for i, (rel, _, _) in enumerate(CUB_IMAGES)}
    for row, (split, rel) in enumerate(written):
        assert index.image_paths[row] == tb_root / "CUB_fixed" / split / rel
        cub_row = rel_to_cub[rel]
        assert index.labels[row] == CUB_IMAGES[cub_row][1] - 1
        np.testing.assert_array_equal(index.attributes[row], expected[cub_row])
    assert index.attribute_names == ATTRIBUTES and index.bboxes is not None


def test_travelingbirds_without_cub_has_no_attributes(tmp_path: Path) -> None:
    make_travelingbirds(tmp_path / "CUB_fixed")
    index = load_dataset("travelingbirds", tmp_path)
    assert index.attributes is None and index.bboxes is None
    assert index.class_names == CUB_CLASSES
    assert np.bincount(index.labels).tolist() == [2, 3]


def test_travelingbirds_missing_names_the_folder_and_url(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("travelingbirds", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("travelingbirds: dataset not found")
    assert str(tmp_path / "CUB_fixed" / "train") in msg and "codalab" in msg


def test_synth_travelingbirds_reads_train_test_under_root(tmp_path: Path) -> None:
    expected = make_cub(tmp_path)
    written = make_travelingbirds(tmp_path / "TravelingBirds")  # no CUB_fixed level
    index = load_dataset("synth_travelingbirds", tmp_path)
    assert index.name == "synth_travelingbirds" and len(index) == len(written)
    first_rel = written[0][1]
    np.testing.assert_array_equal(
        index.attributes[0], expected[[r for r, _, _ in CUB_IMAGES].index(first_rel)])


# --------------------------------------------------------------------------- Stanford Cars

CAR_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"]


def _annotations(items: list[tuple[str, int]]) -> np.ndarray:
    dtype = [(f, "O") for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    return np.array([(1, 1, 6, 6, cls, fname) for fname, cls in items], dtype=dtype)


def make_cars(root: Path) -> None:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    scipy.io.savemat(base / "devkit/cars_meta.mat",
                     {"class_names": np.array(CAR_CLASSES, dtype=object)})
    train = [("00001.jpg", 3), ("00002.jpg", 1), ("00003.jpg", 2)]
    test = [("00001.jpg", 2), ("00002.jpg", 3)]
    scipy.io.savemat(base / "devkit/cars_train_annos.mat", {"annotations": _annotations(train)})
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": _annotations(test)})
    for folder, items in (("cars_train", train), ("cars_test", test)):
        for fname, _ in items:
            write_jpeg(base / folder / fname)


def test_cars_reader_wraps_torchvision(tmp_path: Path) -> None:
    make_cars(tmp_path)
    index = load_dataset("cars", tmp_path)
    assert index.class_names == CAR_CLASSES
    assert index.labels.tolist() == [2, 0, 1, 1, 2]
    assert index.is_train.tolist() == [True, True, True, False, False]
    assert index.image_ids.tolist() == [0, 1, 2, 3, 4]
    base = (tmp_path / "stanford_cars").absolute()
    assert index.image_paths[0] == base / "cars_train/00001.jpg"
    assert index.image_paths[3] == base / "cars_test/00001.jpg"
    assert index.attributes is None


def test_cars_missing_names_the_devkit_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cars", tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cars: dataset not found")
    assert str(tmp_path / "stanford_cars/devkit/cars_meta.mat") in msg
    assert "ai.stanford.edu/~jkrause/cars" in msg


def test_cars_malformed_annotation_file_is_named(tmp_path: Path) -> None:
    make_cars(tmp_path)
    bad = tmp_path / "stanford_cars/cars_test_annos_withlabels.mat"
    scipy.io.savemat(bad, {"something_else": np.zeros(3)})
    with pytest.raises(DataError, match="cars_test_annos_withlabels.mat"):
        load_dataset("cars", tmp_path)


# --------------------------------------------------------------------------- FGVC-Aircraft

VARIANTS = ["707-320", "A300B4", "F/A-18"]


def make_aircraft(root: Path) -> Path:
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(VARIANTS) + "\n")
    trainval = [("0034309", "A300B4"), ("0056978", "707-320"), ("1000001", "F/A-18")]
    test = [("0062765", "F/A-18"), ("2000002", "707-320")]
    for split, items in (("trainval", trainval), ("test", test)):
        (data / f"images_variant_{split}.txt").write_text(
            "".join(f"{i} {v}\n" for i, v in items))
        for image_name, _ in items:
            write_jpeg(data / "images" / f"{image_name}.jpg")
    return data


def test_aircraft_reader_wraps_torchvision(tmp_path: Path) -> None:
    data = make_aircraft(tmp_path).absolute()
    index = load_dataset("aircraft", tmp_path)
    assert index.class_names == VARIANTS
    assert index.labels.tolist() == [1, 0, 2, 2, 0]
    assert index.is_train.tolist() == [True, True, True, False, False]
    assert index.image_paths[3] == data / "images/0062765.jpg"


def test_aircraft_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    data = make_aircraft(tmp_path)
    path = data / "images_variant_test.txt"
    path.write_text(path.read_text() + "0099999 Concorde\n")
    with pytest.raises(DataError) as err:
        load_dataset("aircraft", tmp_path)
    assert str(path) in str(err.value) and "line 3" in str(err.value)


def test_aircraft_missing_names_the_file_and_url(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("aircraft", tmp_path)
    msg = str(err.value)
    assert msg.startswith("aircraft: dataset not found") and "\n" not in msg
    assert str(tmp_path / "fgvc-aircraft-2013b/data/variants.txt") in msg
    assert "robots.ox.ac.uk/~vgg/data/fgvc-aircraft" in msg


# --------------------------------------------------------------------------- ImageNet


def make_imagenet(root: Path) -> None:
    wnid_to_classes = {"n01440764": ("tench", "Tinca tinca"), "n01443537": ("goldfish",)}
    torch.save((wnid_to_classes, ["n01443537", "n01440764"]), root / "meta.bin")
    for split, per_class in (("train", 2), ("val", 1)):
        for wnid in wnid_to_classes:
            for k in range(per_class):
                write_jpeg(root / split / wnid / f"{wnid}_{k}.JPEG")


def test_imagenet_reader_wraps_torchvision(tmp_path: Path) -> None:
    make_imagenet(tmp_path)
    index = load_dataset("imagenet", tmp_path)
    assert index.class_names == ["tench", "goldfish"]
    assert index.labels.tolist() == [0, 0, 1, 1, 0, 1]
    assert index.is_train.tolist() == [True] * 4 + [False] * 2
    assert index.image_paths[4] == (tmp_path / "val/n01440764/n01440764_0.JPEG").absolute()


def test_imagenet_missing_says_the_devkit_is_needed(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("imagenet", tmp_path)
    msg = str(err.value)
    assert msg.startswith("imagenet: dataset not found") and "\n" not in msg
    assert "ILSVRC2012_devkit_t12.tar.gz" in msg and "image-net.org" in msg


def test_unknown_dataset_is_a_params_error(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="data.name"):
        load_dataset("mnist", tmp_path)


# --------------------------------------------------------------------------- ImageDataset


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_reader_feeds_image_dataset(tmp_path: Path, name: str) -> None:
    if name in ("synth", "cub"):
        make_cub(tmp_path)
    elif name in ("synth_travelingbirds", "travelingbirds"):
        make_travelingbirds(tmp_path / ("TravelingBirds" if name.startswith("synth") else ""))
    else:
        {"cars": make_cars, "aircraft": make_aircraft, "imagenet": make_imagenet}[name](tmp_path)
    index = load_dataset(name, tmp_path)
    assert index.name == name
    ds = ImageDataset(index, "test", build_transform(name, 16, train=False))
    image, label, pos = ds[len(ds) - 1]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert pos == int(index.split("test")[-1]) and label == int(index.labels[pos])


def test_image_dataset_batches_through_a_dataloader(tmp_path: Path) -> None:
    make_cub(tmp_path)
    index = load_dataset("cub", tmp_path)
    ds = ImageDataset(index, "train", build_transform("cub", 8, train=True))
    assert len(ds) == 3
    batches = list(DataLoader(ds, batch_size=2, shuffle=False))
    assert [b[0].shape for b in batches] == [(2, 3, 8, 8), (1, 3, 8, 8)]
    positions = torch.cat([b[2] for b in batches]).tolist()
    labels = torch.cat([b[1] for b in batches]).tolist()
    assert positions == index.split("train").tolist()
    assert labels == index.labels[positions].tolist()


def test_crop_to_bbox_crops_before_the_transform(tmp_path: Path) -> None:
    make_cub(tmp_path)
    index = load_dataset("cub", tmp_path)
    ds = ImageDataset(index, "train", transform=None, crop_to_bbox=True)
    image, _, pos = ds[1]  # row 2 = image id 3: box x=3, y=2, w=5, h=6 inside a 12x10 image
    assert pos == 2 and image.shape == (3, 6, 5)
    full, _, _ = ImageDataset(index, "train", transform=None)[1]
    assert full.shape == (3, 10, 12)


def test_crop_to_bbox_without_boxes_is_an_error(tmp_path: Path) -> None:
    make_cub(tmp_path)
    (tmp_path / "CUB_200_2011/bounding_boxes.txt").unlink()
    index = load_dataset("cub", tmp_path)
    with pytest.raises(DataError, match="crop_to_bbox"):
        ImageDataset(index, "train", transform=None, crop_to_bbox=True)


def test_truncated_jpeg_names_the_file(tmp_path: Path) -> None:
    make_cub(tmp_path)
    index = load_dataset("cub", tmp_path)
    bad = index.image_paths[index.split("test")[0]]
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(noise).save(bad, "JPEG")
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    ds = ImageDataset(index, "test", build_transform("cub", 8, train=False))
    with pytest.raises(DataError) as err:
        ds[0]
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match="corrupt image .*not a readable image"):
        ds[0]


def test_dataset_index_checks_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="labels"):
        DatasetIndex("x", tmp_path, [tmp_path / "a.jpg"], np.zeros(2), np.ones(1, bool),
                     np.zeros(1), ["a"])
    with pytest.raises(ValueError, match="split"):
        DatasetIndex("x", tmp_path, [], np.zeros(0), np.zeros(0, bool), np.zeros(0),
                     ["a"]).split("val")  # type: ignore[arg-type]


def test_read_cub_accepts_a_string_path(tmp_path: Path) -> None:
    make_cub(tmp_path)
    assert len(read_cub(str(tmp_path / "CUB_200_2011"))) == 5
