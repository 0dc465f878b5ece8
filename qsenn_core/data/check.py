"""Cheap checks of a dataset before any training: the split structure and every image's header.

A dataset that would fail hours later (a class with no test image, duplicate ids, a truncated
JPEG) stops in ``index_data`` with one line naming the class, id or file.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from qsenn_core.data.base import DatasetIndex
from qsenn_core.errors import DataError

log = logging.getLogger(__name__)


def check_splits(index: DatasetIndex, n_classes: int) -> None:
    """The dataset has the ``n_classes`` classes the params imply, each with training and test
    images, and its image ids are unique."""
    where = f"{index.root} ({index.name})"
    key = "synth.n_classes" if index.name.startswith("synth") else "data.name"
    if index.n_classes != n_classes:
        raise DataError(f"{where}: the dataset has {index.n_classes} classes, but {key} implies "
                        f"{n_classes}; regenerate or fix the params")
    ids, counts = np.unique(index.image_ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{where}: image id {int(ids[counts > 1][0])} appears "
                        f"{int(counts[counts > 1][0])} times; ids must be unique")
    for split, rows in (("train", index.is_train), ("test", ~index.is_train)):
        present = np.bincount(index.labels[rows], minlength=n_classes)
        empty = np.flatnonzero(present == 0)
        if len(empty):
            c = int(empty[0])
            raise DataError(f"{where}: class {c} ({index.class_names[c]}) has no {split} image"
                            + (f" ({len(empty)} classes have none)" if len(empty) > 1 else ""))


def check_image_headers(index: DatasetIndex, progress: bool = True) -> None:
    """Open every image's header (format and size; no pixel decoding): a missing, truncated or
    non-image file is a :class:`DataError` naming it."""
    for path in tqdm(index.image_paths, desc="check images", unit="img", disable=not progress,
                     leave=False):
        try:
            with Image.open(path) as image:
                width, height = image.size
        except FileNotFoundError:
            raise DataError(f"{path}: image file not found") from None
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable image ({' '.join(str(err).split())})") \
                from None
        if width < 1 or height < 1:
            raise DataError(f"{path}: image has no pixels ({width} x {height})")
    log.info("%s: %d image headers read", index.name, len(index.image_paths))
