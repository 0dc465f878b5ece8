"""Reader for the CUB-200-2011 layout (also used for the generated ``synth`` dataset).

Layout (all ids 1-based, one entry per line, fields separated by whitespace)::

    CUB_200_2011/
        images.txt                  <image_id> <class_folder>/<file>.jpg   (under images/)
        image_class_labels.txt      <image_id> <class_id>
        train_test_split.txt        <image_id> <is_training_image>
        classes.txt                 <class_id> <NNN.Name>
        bounding_boxes.txt          <image_id> <x> <y> <width> <height>        (optional)
        attributes/image_attribute_labels.txt
                                    <image_id> <attribute_id> <is_present> <certainty_id> <time>
    attributes.txt                  <attribute_id> <name>
        (in CUB_200_2011/, in CUB_200_2011/attributes/ or, as in the official tarball, beside it)

Attributes are binarised as in the supplement (alignment r): an attribute counts as present
(rho_{a+}) when annotated present with certainty "probably" (3) or "definitely" (4).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from qsenn_core.data.base import (
    DatasetIndex,
    align_to,
    int_field,
    malformed,
    read_table,
    require_dir,
    require_file,
)
from qsenn_core.errors import DataError

log = logging.getLogger(__name__)

CUB_URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"

#: Lowest certainty id that counts as present: 3 = "probably", 4 = "definitely" (supplement).
PRESENT_MIN_CERTAINTY = 3

_ATTR_FMT = "<image_id> <attribute_id> <is_present> <certainty_id> <time>"
_ATTR_COLUMNS = 8  # fields read per line; lines with more go through the slow path
_ATTR_CHUNK = 1_000_000  # lines parsed at a time (bounds memory on the 3.7M-line real file)


def cub_hint(cub_dir: Path) -> str:
    """Where to get CUB-200-2011 and where to put it."""
    return f"download CUB-200-2011 from {CUB_URL} and extract it under {cub_dir.parent}"


def read_cub(cub_dir: str | Path, name: str = "cub", hint: str | None = None) -> DatasetIndex:
    """Read a ``CUB_200_2011`` folder into a :class:`DatasetIndex` without opening any image.

    Args:
        cub_dir: the ``CUB_200_2011`` folder.
        name: dataset name used in the index and in error messages (``cub`` or ``synth``).
        hint: the "where to get it" part of the not-found error (default: the CUB download page).

    Rows follow ``images.txt``; ``image_ids`` are CUB's 1-based ids; labels are 0-based
    positions in ``classes.txt`` sorted by class id; class names are kept as written
    (``001.Black_footed_Albatross``).
    Attributes and bounding boxes are None when their files are absent.
    """
    cub_dir = Path(cub_dir).expanduser().absolute()
    hint = hint or cub_hint(cub_dir)
    images = read_table(
        require_file(cub_dir / "images.txt", name, hint), name, 2, "<image_id> <path>", rest=True
    )
    images_dir = require_dir(cub_dir / "images", name, hint)
    labels_t = read_table(
        require_file(cub_dir / "image_class_labels.txt", name, hint),
        name, 2, "<image_id> <class_id>",
    )
    split_t = read_table(
        require_file(cub_dir / "train_test_split.txt", name, hint),
        name, 2, "<image_id> <is_training_image>",
    )
    classes_t = read_table(
        require_file(cub_dir / "classes.txt", name, hint), name, 2, "<class_id> <name>", rest=True
    )

    ids = images.ids
    class_order = np.argsort(classes_t.ids, kind="stable")
    class_names = [classes_t.fields[i][0] for i in class_order]
    class_ids = classes_t.ids[class_order]

    rows = align_to(ids, labels_t, name)
    image_class = int_field(labels_t, rows, 0, name, "<image_id> <class_id>")
    label_pos = np.searchsorted(class_ids, image_class)
    label_pos = np.clip(label_pos, 0, len(class_ids) - 1)
    bad = class_ids[label_pos] != image_class
    if bad.any():
        r = rows[int(np.flatnonzero(bad)[0])]
        raise DataError(
            f"{name}: malformed index file {labels_t.path} line {int(labels_t.line_numbers[r])}: "
            f"class id {int(image_class[bad][0])} is not in {classes_t.path}"
        )

    rows = align_to(ids, split_t, name)
    flags = int_field(split_t, rows, 0, name, "<image_id> <is_training_image>")
    if not np.isin(flags, (0, 1)).all():
        r = rows[int(np.flatnonzero(~np.isin(flags, (0, 1)))[0])]
        line = " ".join([str(split_t.ids[r]), *split_t.fields[r]])
        raise malformed(name, split_t.path, int(split_t.line_numbers[r]),
                        "<image_id> <0|1>", line)

    attribute_names, attributes = _read_attributes(cub_dir, ids, name)
    return DatasetIndex(
        name=name,
        root=cub_dir,
        image_paths=[images_dir / f[0] for f in images.fields],
        labels=label_pos.astype(np.int64),
        is_train=flags == 1,
        image_ids=ids,
        class_names=class_names,
        attribute_names=attribute_names,
        attributes=attributes,
        bboxes=_read_bboxes(cub_dir / "bounding_boxes.txt", ids, name),
    )


def _read_bboxes(path: Path, ids: np.ndarray, name: str) -> np.ndarray | None:
    """``bounding_boxes.txt`` as an (n, 4) float array in image order, or None if absent."""
    if not path.is_file():
        log.info("%s: no %s; bounding boxes unavailable", name, path)
        return None
    fmt = "<image_id> <x> <y> <width> <height>"
    table = read_table(path, name, 5, fmt)
    rows = align_to(ids, table, name)
    out = np.empty((len(ids), 4), dtype=np.float64)
    for k, r in enumerate(rows):
        try:
            out[k] = [float(v) for v in table.fields[r]]
        except ValueError:
            line = " ".join([str(table.ids[r]), *table.fields[r]])
            raise malformed(name, path, int(table.line_numbers[r]), fmt, line) from None
    return out


def find_attribute_names_file(cub_dir: Path) -> Path | None:
    """``attributes.txt`` in the CUB folder, its ``attributes/`` folder or beside it (tarball)."""
    for path in (
        cub_dir / "attributes.txt",
        cub_dir / "attributes" / "attributes.txt",
        cub_dir.parent / "attributes.txt",
    ):
        if path.is_file():
            return path
    return None


def _read_attributes(
    cub_dir: Path, image_ids: np.ndarray, name: str
) -> tuple[list[str] | None, np.ndarray | None]:
    """Attribute names and the binary (n_images, n_attributes) matrix, or (None, None)."""
    labels_path = cub_dir / "attributes" / "image_attribute_labels.txt"
    names_path = find_attribute_names_file(cub_dir)
    if names_path is None and not labels_path.is_file():
        log.info("%s: no attribute files under %s; attributes unavailable", name, cub_dir)
        return None, None
    if names_path is None or not labels_path.is_file():
        log.warning(
            "%s: attributes unavailable: %s", name,
            f"no attributes.txt for {labels_path}" if names_path is None else f"no {labels_path}",
        )
        return None, None
    names_t = read_table(names_path, name, 2, "<attribute_id> <name>", rest=True)
    order = np.argsort(names_t.ids, kind="stable")
    attribute_names = [names_t.fields[i][0] for i in order]
    attributes = parse_image_attribute_labels(labels_path, image_ids, names_t.ids[order], name)
    return attribute_names, attributes


def parse_image_attribute_labels(
    path: Path, image_ids: np.ndarray, attribute_ids: np.ndarray, name: str
) -> np.ndarray:
    """Binary attribute matrix from ``image_attribute_labels.txt`` (vectorised, chunked).

    ``out[i, j] = 1`` iff image ``image_ids[i]`` has attribute ``attribute_ids[j]`` annotated
    present with certainty >= :data:`PRESENT_MIN_CERTAINTY`. Malformed lines (wrong number of
    fields, non-numeric or out-of-range values, unknown ids; the real CUB file has a few with
    extra fields) are skipped and counted in one warning. A file without any valid line is an error.
    """
    img_lookup = _lookup(image_ids)
    attr_lookup = _lookup(attribute_ids)
    out = np.zeros((len(image_ids), len(attribute_ids)), dtype=np.uint8)
    n_bad = n_ok = 0
    first_bad: int | None = None
    for first_line, cols, extra, blank in _attribute_chunks(path, name):
        with np.errstate(invalid="ignore"):
            img = _to_index(cols[0], img_lookup)
            attr = _to_index(cols[1], attr_lookup)
            present, certainty, time = cols[2], cols[3], cols[4]
            valid = (
                ~extra & ~blank & (img >= 0) & (attr >= 0) & np.isfinite(time)
                & np.isin(present, (0.0, 1.0)) & np.isin(certainty, (1.0, 2.0, 3.0, 4.0))
            )
        bad = ~valid & ~blank
        if bad.any() and first_bad is None:
            first_bad = first_line + int(np.flatnonzero(bad)[0])
        n_bad += int(bad.sum())
        n_ok += int(valid.sum())
        hit = valid & (present == 1.0) & (certainty >= PRESENT_MIN_CERTAINTY)
        out[img[hit], attr[hit]] = 1
    if n_ok == 0:
        raise DataError(f"{name}: malformed index file {path}: no valid line '{_ATTR_FMT}'")
    if n_bad:
        log.warning(
            "%s: skipped %d malformed line(s) in %s (first at line %d; expected '%s')",
            name, n_bad, path, first_bad, _ATTR_FMT,
        )
    return out


def _lookup(ids: np.ndarray) -> np.ndarray:
    """Dense array mapping an id to its position (-1 where the id is unknown)."""
    table = np.full(int(ids.max(initial=0)) + 2, -1, dtype=np.int64)
    table[ids[ids >= 0]] = np.flatnonzero(ids >= 0)
    return table


def _to_index(values: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """Map float ids to positions through ``lookup``; non-integers and unknown ids give -1."""
    ok = np.isfinite(values) & (values == np.round(values)) & (values >= 0)
    ok &= values < len(lookup)
    out = np.full(values.shape, -1, dtype=np.int64)
    out[ok] = lookup[values[ok].astype(np.int64)]
    return out


_Chunk = tuple[int, list[np.ndarray], np.ndarray, np.ndarray]


def _attribute_chunks(path: Path, name: str) -> list[_Chunk]:
    """Parse the file as (first line number, 5 float columns, has-extra-fields, is-blank) chunks.

    The fast path is pandas' C tokenizer; a line with more than ``_ATTR_COLUMNS`` fields makes it
    fail, and the whole file is then parsed by :func:`_attribute_chunks_slow`.
    """
    chunks: list[_Chunk] = []
    try:
        reader = pd.read_csv(
            path, sep=r"\s+", header=None, names=list(range(_ATTR_COLUMNS)), engine="c",
            skip_blank_lines=False, chunksize=_ATTR_CHUNK,
        )
        line = 1
        for df in reader:
            cols = [pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64) for c in range(5)]
            extra = df.iloc[:, 5:].notna().to_numpy().any(axis=1)
            blank = df.isna().to_numpy().all(axis=1)
            chunks.append((line, cols, extra, blank))
            line += len(df)
    except pd.errors.ParserError:
        return _attribute_chunks_slow(path, name)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot read {path}: {exc}") from exc
    return chunks


def _attribute_chunks_slow(path: Path, name: str) -> list[_Chunk]:
    """Line-by-line fallback of :func:`_attribute_chunks` (any number of fields per line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: cannot read {path}: {exc}") from exc
    cols = np.full((5, len(lines)), np.nan)
    extra = np.zeros(len(lines), dtype=bool)
    blank = np.zeros(len(lines), dtype=bool)
    for i, text in enumerate(lines):
        parts = text.split()
        blank[i] = not parts
        extra[i] = len(parts) > 5
        for c, value in enumerate(parts[:5]):
            try:
                cols[c, i] = float(value)
            except ValueError:
                pass
    return [(1, list(cols), extra, blank)]
