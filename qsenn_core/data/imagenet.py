"""Reader for ImageNet-1K (ILSVRC2012) through ``torchvision.datasets.ImageNet``.

torchvision 0.29 needs, in ``<root>``:

- the class metadata: ``meta.bin`` (written by torchvision on first use) or the devkit archive
  ``ILSVRC2012_devkit_t12.tar.gz`` it is made from (md5-checked, then parsed with scipy);
- per split, the extracted folder ``train/<wnid>/*.JPEG`` / ``val/<wnid>/*.JPEG`` or the archive
  ``ILSVRC2012_img_train.tar`` / ``ILSVRC2012_img_val.tar``, which torchvision then extracts into
  that folder (a one-off that takes long and needs the disk space of the images).

The paper's test split is the 50,000-image validation set (Table 2).
"""

from __future__ import annotations

import logging
import pickle
import tarfile
from pathlib import Path

import numpy as np

from qsenn_core.data.base import DatasetIndex, not_found, one_line
from qsenn_core.errors import DataError

log = logging.getLogger(__name__)

IMAGENET_URL = "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
META = "meta.bin"
ARCHIVES = {"train": "ILSVRC2012_img_train.tar", "val": "ILSVRC2012_img_val.tar"}


def imagenet_hint(root: Path) -> str:
    """Where to get ImageNet-1K and what torchvision needs under ``root``."""
    return (
        f"download {DEVKIT} and ILSVRC2012_img_{{train,val}}.tar from {IMAGENET_URL} and put "
        f"them (or the extracted train/ and val/ folders plus {META}) in {root}"
    )


def read_imagenet(root: str | Path, name: str = "imagenet") -> DatasetIndex:
    """Read ImageNet-1K (train then val as ``test``) into a :class:`DatasetIndex`.

    Class names are the first WordNet synonym of each class (``tench``), in torchvision's
    (sorted wnid) order; ``image_ids`` are 0..n-1. Listing 1.3M files takes a while; no image is
    opened.
    """
    from torchvision.datasets import ImageNet

    root = Path(root).expanduser().absolute()
    hint = imagenet_hint(root)
    if not (root / META).is_file() and not (root / DEVKIT).is_file():
        raise not_found(name, root / DEVKIT, hint + f" (torchvision needs the devkit or {META})")
    for split, archive in ARCHIVES.items():
        if not (root / split).is_dir() and not (root / archive).is_file():
            raise not_found(name, root / split, hint + f" ({split}/<wnid>/ or {archive})")
        if not (root / split).is_dir():
            log.warning("%s: torchvision will now extract %s into %s (one-off, slow)",
                        name, root / archive, root / split)

    paths: list[Path] = []
    labels: list[int] = []
    is_train: list[bool] = []
    class_names: list[str] = []
    wnids: list[str] | None = None
    for split in ("train", "val"):
        log.info("%s: listing %s", name, root / split)
        try:
            ds = ImageNet(str(root), split=split)
        except (RuntimeError, OSError, ValueError, KeyError, EOFError, tarfile.TarError,
                pickle.UnpicklingError) as exc:
            raise DataError(f"{name}: cannot read {root / split} or {root / META}: "
                            f"{one_line(exc)}") from exc
        if wnids is not None and list(ds.wnids) != wnids:
            raise DataError(f"{name}: {root / split} and {root / 'train'} hold different class "
                            f"folders ({len(ds.wnids)} vs {len(wnids)}); labels would not match")
        wnids = list(ds.wnids)
        class_names = [str(c[0]) if isinstance(c, tuple) else str(c) for c in ds.classes]
        paths += [Path(p) for p, _ in ds.samples]
        labels += [int(t) for _, t in ds.samples]
        is_train += [split == "train"] * len(ds.samples)
    return DatasetIndex(
        name=name,
        root=root,
        image_paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        is_train=np.asarray(is_train, dtype=bool),
        image_ids=np.arange(len(paths), dtype=np.int64),
        class_names=class_names,
    )
