"""Reader for FGVC-Aircraft through ``torchvision.datasets.FGVCAircraft`` (download=False).

Layout of the official ``fgvc-aircraft-2013b`` archive, as torchvision 0.29 reads it::

    <root>/fgvc-aircraft-2013b/data/
        variants.txt                       one variant name per line (100 classes)
        images_variant_trainval.txt        <image_name> <variant name>   (names contain spaces)
        images_variant_test.txt
        images/<image_name>.jpg

The paper trains on ``trainval`` (6,667 images) and tests on ``test`` (3,333), at the
``variant`` level (Table 2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qsenn_core.data.base import DatasetIndex, malformed, one_line, require_dir, require_file
from qsenn_core.errors import DataError

AIRCRAFT_URL = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"


def aircraft_hint(root: Path) -> str:
    """Where to get FGVC-Aircraft and where to put it."""
    return f"download fgvc-aircraft-2013b.tar.gz from {AIRCRAFT_URL} and extract it under {root}"


def read_aircraft(root: str | Path, name: str = "aircraft") -> DatasetIndex:
    """Read FGVC-Aircraft (trainval then test, variant level) into a :class:`DatasetIndex`.

    ``root`` holds ``fgvc-aircraft-2013b/``. The index files are checked line by line first, so
    a malformed line is reported with its file and line number; ``image_ids`` are 0..n-1.
    """
    from torchvision.datasets import FGVCAircraft

    root = Path(root).expanduser().absolute()
    data = root / "fgvc-aircraft-2013b" / "data"
    hint = aircraft_hint(root)
    variants_path = require_file(data / "variants.txt", name, hint)
    require_dir(data / "images", name, hint)
    variants = _check_variants(variants_path, name)
    splits = {"trainval": data / "images_variant_trainval.txt",
              "test": data / "images_variant_test.txt"}
    for path in splits.values():
        _check_labels(require_file(path, name, hint), set(variants), name)

    paths: list[Path] = []
    labels: list[int] = []
    is_train: list[bool] = []
    for split, path in splits.items():
        try:
            ds = FGVCAircraft(str(root), split=split, annotation_level="variant", download=False)
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise DataError(f"{name}: cannot read {path}: {one_line(exc)}") from exc
        paths += [Path(p) for p in ds._image_files]  # torchvision has no public path list
        labels += [int(t) for t in ds._labels]
        is_train += [split == "trainval"] * len(ds._image_files)
    return DatasetIndex(
        name=name,
        root=data.parent,
        image_paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        is_train=np.asarray(is_train, dtype=bool),
        image_ids=np.arange(len(paths), dtype=np.int64),
        class_names=variants,
    )


def _read_lines(path: Path, name: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot read {path}: {one_line(exc)}") from exc


def _check_variants(path: Path, name: str) -> list[str]:
    """Class names of ``variants.txt``; blank or repeated lines are errors (they shift labels)."""
    names: list[str] = []
    for lineno, line in enumerate(_read_lines(path, name), start=1):
        if not line.strip() or line.strip() in names:
            raise malformed(name, path, lineno, "<unique variant name>", line)
        names.append(line.strip())
    if not names:
        raise DataError(f"{name}: malformed index file {path}: no entries")
    return names


def _check_labels(path: Path, variants: set[str], name: str) -> None:
    """Every line of an ``images_variant_*.txt`` file must be ``<image_name> <known variant>``."""
    lines = _read_lines(path, name)
    for lineno, line in enumerate(lines, start=1):
        parts = line.strip().split(" ", 1)
        if len(parts) != 2 or not parts[0] or parts[1] not in variants:
            raise malformed(name, path, lineno, "<image_name> <variant from variants.txt>", line)
    if not lines:
        raise DataError(f"{name}: malformed index file {path}: no entries")
