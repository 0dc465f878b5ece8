"""Reader for Stanford Cars through ``torchvision.datasets.StanfordCars`` (download=False).

Layout expected by torchvision 0.29::

    <root>/stanford_cars/
        devkit/cars_meta.mat               class_names (196)
        devkit/cars_train_annos.mat        annotations: bbox_x1..bbox_y2, class (1-based), fname
        cars_train/<fname>
        cars_test_annos_withlabels.mat     same fields for the test split
        cars_test/<fname>
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qsenn_core.data.base import DatasetIndex, one_line, require_dir, require_file
from qsenn_core.errors import DataError

CARS_URL = "https://ai.stanford.edu/~jkrause/cars/car_dataset.html"


def cars_hint(root: Path) -> str:
    """Where to get Stanford Cars and where to put it."""
    return (
        f"download Stanford Cars from {CARS_URL} (offline; use a mirror with "
        f"cars_test_annos_withlabels.mat) and extract it as {root / 'stanford_cars'} "
        "in torchvision's StanfordCars layout"
    )


def read_cars(root: str | Path, name: str = "cars") -> DatasetIndex:
    """Read Stanford Cars (train then test) into a :class:`DatasetIndex`; no image is opened.

    ``root`` is the folder that holds ``stanford_cars/``. ``image_ids`` are 0..n-1 (the file
    names repeat across the splits).
    """
    from torchvision.datasets import StanfordCars

    root = Path(root).expanduser().absolute()
    base = root / "stanford_cars"
    hint = cars_hint(root)
    meta = require_file(base / "devkit" / "cars_meta.mat", name, hint)
    splits = {
        "train": (base / "devkit" / "cars_train_annos.mat", base / "cars_train"),
        "test": (base / "cars_test_annos_withlabels.mat", base / "cars_test"),
    }
    for ann, images in splits.values():
        require_file(ann, name, hint)
        require_dir(images, name, hint)

    paths: list[Path] = []
    labels: list[int] = []
    is_train: list[bool] = []
    class_names: list[str] = []
    for split, (ann, _) in splits.items():
        try:
            ds = StanfordCars(str(root), split=split, download=False)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError, OSError) as exc:
            raise DataError(
                f"{name}: malformed annotation file {ann} or {meta}: {one_line(exc)}"
            ) from exc
        class_names = [str(c) for c in ds.classes]
        samples = ds._samples  # torchvision keeps (path, 0-based label) here, no public accessor
        paths += [Path(p) for p, _ in samples]
        labels += [int(t) for _, t in samples]
        is_train += [split == "train"] * len(samples)

    labels_arr = np.asarray(labels, dtype=np.int64)
    if len(labels_arr) and (labels_arr.min() < 0 or labels_arr.max() >= len(class_names)):
        raise DataError(
            f"{name}: malformed annotations under {base}: class ids must lie in "
            f"1..{len(class_names)} (devkit/cars_meta.mat)"
        )
    return DatasetIndex(
        name=name,
        root=base,
        image_paths=paths,
        labels=labels_arr,
        is_train=np.asarray(is_train, dtype=bool),
        image_ids=np.arange(len(paths), dtype=np.int64),
        class_names=class_names,
    )
