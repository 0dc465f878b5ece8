"""Common pieces of the dataset readers: the in-memory index, the torch ``Dataset`` and helpers.

Every reader turns a published on-disk layout into one :class:`DatasetIndex` (paths, 0-based
labels, train/test flags, class names and, where the dataset has them, CUB-style attributes and
bounding boxes) without opening a single image. :class:`ImageDataset` then serves one split of an
index to a ``DataLoader``. Expected failures (missing dataset, malformed index file, corrupt
image) raise :class:`~qsenn_core.errors.DataError` with a one-line message naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import functional as tvf

from qsenn_core.errors import DataError

log = logging.getLogger(__name__)

Split = Literal["train", "test"]

#: File name endings accepted as images by the folder-based readers (TravelingBirds).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")


@dataclass
class DatasetIndex:
    """Everything known about a dataset except the pixels.

    Attributes:
        name: dataset name as given to :func:`qsenn_core.data.load_dataset` (``cub``, ...).
        root: the folder the dataset was read from (e.g. ``<root>/CUB_200_2011``).
        image_paths: absolute path of every image, one per row.
        labels: int64 0-based class index per row.
        is_train: bool, True for rows of the training split.
        image_ids: int64 ids: the dataset's own ids (CUB: 1-based ``image_id``), else 0..n-1.
        class_names: one name per class, in label order.
        attribute_names: names of the attributes (``has_bill_shape::dagger``), or None.
        attributes: (n_images, n_attributes) uint8; 1 = annotated present with certainty >= 3
            ("probably" or "definitely", the rho_{a+} of the alignment metric in the supplement),
            else 0. None if the dataset has no attributes.
        bboxes: (n_images, 4) float64 ``x, y, w, h`` in pixels, or None.
    """

    name: str
    root: Path
    image_paths: list[Path]
    labels: np.ndarray
    is_train: np.ndarray
    image_ids: np.ndarray
    class_names: list[str]
    attribute_names: list[str] | None = None
    attributes: np.ndarray | None = None
    bboxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.is_train = np.asarray(self.is_train, dtype=bool)
        self.image_ids = np.asarray(self.image_ids, dtype=np.int64)
        n = len(self.image_paths)
        for field_name in ("labels", "is_train", "image_ids"):
            if getattr(self, field_name).shape != (n,):
                raise ValueError(f"{field_name} must have shape ({n},)")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise ValueError(f"labels must lie in [0, {len(self.class_names)})")
        if (self.attributes is None) != (self.attribute_names is None):
            raise ValueError("attributes and attribute_names must both be set or both be None")
        if self.attributes is not None:
            self.attributes = np.asarray(self.attributes, dtype=np.uint8)
            assert self.attribute_names is not None
            if self.attributes.shape != (n, len(self.attribute_names)):
                raise ValueError(f"attributes must have shape ({n}, {len(self.attribute_names)})")
        if self.bboxes is not None:
            self.bboxes = np.asarray(self.bboxes, dtype=np.float64)
            if self.bboxes.shape != (n, 4):
                raise ValueError(f"bboxes must have shape ({n}, 4)")

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def n_classes(self) -> int:
        """Number of classes n_c."""
        return len(self.class_names)

    def split(self, name: Split) -> np.ndarray:
        """Row positions (int64, ascending) of the ``train`` or ``test`` split."""
        if name == "train":
            mask = self.is_train
        elif name == "test":
            mask = ~self.is_train
        else:
            raise ValueError(f"split must be 'train' or 'test', not {name!r}")
        return np.flatnonzero(mask).astype(np.int64)


# --------------------------------------------------------------------------- errors


def not_found(name: str, expected: Path, hint: str) -> DataError:
    """The one-line error for a missing dataset: which dataset, which file, where to get it."""
    return DataError(f"{name}: dataset not found: expected {expected}; {hint}")


def require_file(path: Path, name: str, hint: str) -> Path:
    """Return ``path`` if it is a file, else raise the dataset-not-found error naming it."""
    if not path.is_file():
        raise not_found(name, path, hint)
    return path


def require_dir(path: Path, name: str, hint: str) -> Path:
    """Return ``path`` if it is a folder, else raise the dataset-not-found error naming it."""
    if not path.is_dir():
        raise not_found(name, path, hint)
    return path


def one_line(text: object) -> str:
    """Collapse a (possibly multi-line) message from a third-party library onto one line."""
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- index files


@dataclass(frozen=True)
class Table:
    """A parsed ``<id> <field> ...`` text file, with the line number of every row."""

    path: Path
    ids: np.ndarray  # int64
    fields: list[list[str]]  # the fields after the id, one list per row
    line_numbers: np.ndarray  # int64, 1-based


def read_table(path: Path, name: str, n_fields: int, fmt: str, rest: bool = False) -> Table:
    """Parse a whitespace-separated index file whose first field is an integer id.

    Args:
        path: the file.
        name: dataset name, for error messages.
        n_fields: number of fields per line, id included.
        fmt: the line format for the error message, e.g. ``"<image_id> <path>"``.
        rest: if True the last field takes the rest of the line (names may contain spaces).

    Blank lines are ignored; any other line that does not match raises a :class:`DataError` with
    the file and line number. Duplicate ids are an error too.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot read {path}: {one_line(exc)}") from exc
    ids: list[int] = []
    fields: list[list[str]] = []
    lines: list[int] = []
    seen: dict[int, int] = {}
    maxsplit = n_fields - 1 if rest else -1
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(None, maxsplit)
        if len(parts) != n_fields:
            raise malformed(name, path, lineno, fmt, line)
        try:
            row_id = int(parts[0])
        except ValueError:
            raise malformed(name, path, lineno, fmt, line) from None
        if row_id in seen:
            raise DataError(
                f"{name}: malformed index file {path} line {lineno}: "
                f"id {row_id} already given on line {seen[row_id]}"
            )
        seen[row_id] = lineno
        ids.append(row_id)
        fields.append(parts[1:])
        lines.append(lineno)
    if not ids:
        raise DataError(f"{name}: malformed index file {path}: no entries")
    return Table(path, np.asarray(ids, np.int64), fields, np.asarray(lines, np.int64))


def malformed(name: str, path: Path, lineno: int, fmt: str, line: str) -> DataError:
    """The error for a line of an index file that does not have the expected format."""
    shown = line.strip()
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return DataError(
        f"{name}: malformed index file {path} line {lineno}: expected '{fmt}', got {shown!r}"
    )


def align_to(ids: np.ndarray, table: Table, name: str) -> np.ndarray:
    """Row numbers of ``table`` for each id in ``ids``; every id must be present in the table."""
    order = np.argsort(table.ids, kind="stable")
    sorted_ids = table.ids[order]
    pos = np.searchsorted(sorted_ids, ids)
    pos = np.clip(pos, 0, len(sorted_ids) - 1)
    found = sorted_ids[pos] == ids
    if not found.all():
        missing = int(ids[~found][0])
        raise DataError(
            f"{name}: malformed index file {table.path}: no entry for id {missing} "
            f"({int((~found).sum())} ids missing)"
        )
    return order[pos]


def int_field(table: Table, rows: np.ndarray, col: int, name: str, fmt: str) -> np.ndarray:
    """Column ``col`` (after the id) of the given rows as int64; errors give file and line."""
    out = np.empty(len(rows), dtype=np.int64)
    for k, r in enumerate(rows):
        try:
            out[k] = int(table.fields[r][col])
        except ValueError:
            line = " ".join([str(table.ids[r]), *table.fields[r]])
            raise malformed(name, table.path, int(table.line_numbers[r]), fmt, line) from None
    return out


def sort_class_folders(names: Sequence[str]) -> list[str]:
    """Order class folder names ``"NNN.Name"`` by their number (then name), others by name."""

    def key(folder: str) -> tuple[int, int, str]:
        head = folder.split(".", 1)[0]
        return (0, int(head), folder) if head.isdigit() else (1, 0, folder)

    return sorted(names, key=key)


# --------------------------------------------------------------------------- torch dataset


def load_rgb(path: Path, name: str) -> Image.Image:
    """Open and fully decode an image as RGB; a missing, corrupt or truncated file: DataError."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError(f"{name}: image not found: {path}") from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"{name}: corrupt image {path}: not a readable image format") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{name}: corrupt or truncated image {path}: {one_line(exc)}") from exc


def crop_box(img: Image.Image, bbox: np.ndarray) -> Image.Image:
    """Crop to an ``x, y, w, h`` box, clipped to the image (at least 1 px each way)."""
    x, y, w, h = (float(v) for v in bbox)
    left = int(np.clip(np.floor(x), 0, img.width - 1))
    top = int(np.clip(np.floor(y), 0, img.height - 1))
    right = int(np.clip(np.ceil(x + w), left + 1, img.width))
    bottom = int(np.clip(np.ceil(y + h), top + 1, img.height))
    return img.crop((left, top, right, bottom))


class ImageDataset(torch.utils.data.Dataset):
    """One split of a :class:`DatasetIndex` as a map-style torch dataset.

    ``dataset[i]`` is ``(image_tensor, label, position)``: the transformed image, its 0-based
    class and its row in the index (to join features back to ``index.image_ids``).
    With ``crop_to_bbox`` the PIL image is cropped to the index's bounding box before the
    transform (as for the prototype-model comparison in the supplement).
    """

    def __init__(
        self,
        index: DatasetIndex,
        split: Split,
        transform: Callable[[Image.Image], Any] | None,
        crop_to_bbox: bool = False,
    ) -> None:
        if crop_to_bbox and index.bboxes is None:
            raise DataError(
                f"{index.name}: data.crop_to_bbox is true but the dataset has no bounding boxes "
                f"(bounding_boxes.txt under {index.root})"
            )
        self.index = index
        self.split = split
        self.positions = index.split(split)
        self.transform = transform
        self.crop_to_bbox = crop_to_bbox

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        pos = int(self.positions[i])
        img = load_rgb(self.index.image_paths[pos], self.index.name)
        if self.crop_to_bbox:
            assert self.index.bboxes is not None
            img = crop_box(img, self.index.bboxes[pos])
        image = self.transform(img) if self.transform is not None else tvf.to_tensor(img)
        return image, int(self.index.labels[pos]), pos
