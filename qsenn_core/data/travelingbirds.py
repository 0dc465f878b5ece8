"""Reader for TravelingBirds (Koh et al. 2020): CUB birds pasted on class-correlated backgrounds.

Layout of the published ``CUB_fixed`` release (no index files, the split is the folder)::

    <root>/CUB_fixed/train/<NNN.Class>/<file>.jpg
    <root>/CUB_fixed/test/<NNN.Class>/<file>.jpg

``<root>/train`` and ``<root>/test`` directly under ``<root>`` are accepted too. The images keep
CUB's class folders and file names, so attributes (and bounding boxes) are joined from a
``CUB_200_2011`` folder by matching ``<class>/<file>`` to its ``images.txt``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from qsenn_core.data.base import (
    IMAGE_SUFFIXES,
    DatasetIndex,
    not_found,
    sort_class_folders,
)
from qsenn_core.data.cub import read_cub
from qsenn_core.errors import DataError

log = logging.getLogger(__name__)

TRAVELINGBIRDS_URL = "https://worksheets.codalab.org/bundles/0x518829de2aa440c79cd9d75ef6669f27"


def travelingbirds_hint(root: Path) -> str:
    """Where to get TravelingBirds and where to put it."""
    return (
        f"download TravelingBirds (CUB_fixed) from {TRAVELINGBIRDS_URL} "
        f"(Koh et al. 2020, github.com/yewsiang/ConceptBottleneck) and extract it under {root}"
    )


def find_split_root(root: Path) -> Path | None:
    """The folder holding ``train/`` and ``test/``: ``root/CUB_fixed`` or ``root`` itself."""
    for candidate in (root / "CUB_fixed", root):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def read_travelingbirds(
    root: str | Path,
    name: str = "travelingbirds",
    cub_dirs: Sequence[str | Path] | None = None,
    hint: str | None = None,
) -> DatasetIndex:
    """Read TravelingBirds into a :class:`DatasetIndex`; attributes come from CUB if available.

    Args:
        root: the folder holding ``CUB_fixed/`` (or ``train/`` and ``test/`` directly).
        name: dataset name for the index and error messages.
        cub_dirs: ``CUB_200_2011`` folders to join attributes and boxes from; the first one
            holding ``images.txt`` is used (default: ``root/CUB_200_2011``,
            ``root/../CUB_200_2011``). None found: attributes and bboxes are None.
        hint: the "where to get it" part of the not-found error.

    Rows: train then test, each ordered by class then file name; ``image_ids`` are 0..n-1.
    Classes: those of the CUB folder when it is joined (so labels agree with CUB), else the class
    folders ordered by their ``NNN.`` prefix.
    """
    root = Path(root).expanduser().absolute()
    hint = hint or travelingbirds_hint(root)
    split_root = find_split_root(root)
    if split_root is None:
        raise not_found(name, root / "CUB_fixed" / "train", hint)

    rel_paths: list[str] = []
    is_train: list[bool] = []
    for split in ("train", "test"):
        found = _list_images(split_root / split)
        if not found:
            raise DataError(f"{name}: no images found in {split_root / split}/<class>/")
        rel_paths += found
        is_train += [split == "train"] * len(found)
    folders = [p.split("/", 1)[0] for p in rel_paths]

    cub = _find_cub(root, cub_dirs, name)
    if cub is not None and set(folders) <= set(cub.class_names):
        class_names = list(cub.class_names)
    else:
        if cub is not None:
            log.warning("%s: class folders do not match %s/classes.txt; using folder order",
                        name, cub.root)
        class_names = sort_class_folders(sorted(set(folders)))
    class_pos = {c: i for i, c in enumerate(class_names)}

    n = len(rel_paths)
    split_dirs = {True: split_root / "train", False: split_root / "test"}
    index = DatasetIndex(
        name=name,
        root=split_root,
        image_paths=[split_dirs[t] / p for p, t in zip(rel_paths, is_train, strict=True)],
        labels=np.asarray([class_pos[f] for f in folders], dtype=np.int64),
        is_train=np.asarray(is_train, dtype=bool),
        image_ids=np.arange(n, dtype=np.int64),
        class_names=class_names,
    )
    if cub is not None:
        _join_cub(index, rel_paths, cub)
    return index


def _list_images(split_dir: Path) -> list[str]:
    """``<class>/<file>`` of every image under ``split_dir``, ordered by class then file name."""
    classes = sort_class_folders([d.name for d in split_dir.iterdir() if d.is_dir()
                                  and not d.name.startswith(".")])
    out: list[str] = []
    for cls in classes:
        files = sorted(
            f.name for f in (split_dir / cls).iterdir()
            if f.is_file() and not f.name.startswith(".")
            and f.suffix.lower() in IMAGE_SUFFIXES
        )
        out += [f"{cls}/{f}" for f in files]
    return out


def _find_cub(root: Path, cub_dirs: Sequence[str | Path] | None, name: str) -> DatasetIndex | None:
    """The first readable ``CUB_200_2011`` candidate as an index, or None."""
    candidates = [Path(d) for d in cub_dirs] if cub_dirs is not None else [
        root / "CUB_200_2011", root.parent / "CUB_200_2011"
    ]
    for cub_dir in candidates:
        if (cub_dir / "images.txt").is_file():
            log.info("%s: joining attributes from %s", name, cub_dir)
            return read_cub(cub_dir, name=f"{name} (CUB join)")
    log.info("%s: no CUB_200_2011 folder at %s; attributes unavailable", name,
             " or ".join(str(c) for c in candidates))
    return None


def _join_cub(index: DatasetIndex, rel_paths: list[str], cub: DatasetIndex) -> None:
    """Copy CUB attributes and bboxes onto ``index`` rows by matching ``<class>/<file>``.

    If any TravelingBirds image has no CUB counterpart, nothing is joined (a partial matrix
    would silently mark the unmatched images as having no attribute).
    """
    images_dir = cub.root / "images"
    cub_row = {p.relative_to(images_dir).as_posix(): i for i, p in enumerate(cub.image_paths)}
    rows = np.asarray([cub_row.get(p, -1) for p in rel_paths], dtype=np.int64)
    if (rows < 0).any():
        first = rel_paths[int(np.flatnonzero(rows < 0)[0])]
        log.warning(
            "%s: %d of %d images are not in %s/images.txt (e.g. %s); attributes unavailable",
            index.name, int((rows < 0).sum()), len(rows), cub.root, first,
        )
        return
    if cub.attributes is not None:
        index.attribute_names = list(cub.attribute_names or [])
        index.attributes = cub.attributes[rows]
    if cub.bboxes is not None:
        index.bboxes = cub.bboxes[rows]
