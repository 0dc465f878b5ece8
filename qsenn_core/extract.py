"""Feature extraction: the feature vector f (or the selected f*) of every image, to Parquet.

The features are the global-average-pooled feature maps M of the backbone before dropout (paper,
Method: "Phi extracts feature maps M ... and aggregates them into a feature vector f"), computed
with the model in eval mode and the test transform for both splits. They feed the feature
selection, the sparse solve (glm-saga) and the evaluation metrics.

File format (one Parquet file, both splits, train rows first): ``image_id`` (int64), ``label``
(int64), ``split`` (string ``train``/``test``), then one float32 column per feature ``f0`` ...
``f{d-1}`` (positional: with a selection, ``fj`` is the j-th selected feature). Same features ->
same bytes (pinned pyarrow, no timestamps in the file).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from qsenn_core.data import DatasetIndex, ImageDataset, build_transform
from qsenn_core.errors import DataError
from qsenn_core.io import atomic_path
from qsenn_core.training import prepare_model, to_device

log = logging.getLogger(__name__)

#: The splits a feature file holds, in row order.
SPLITS: tuple[str, ...] = ("train", "test")
_FEATURE_COLUMN = re.compile(r"^f(\d+)$")


class SplitFeatures(NamedTuple):
    """Features of one split: ``features`` float32 (n, d), ``labels`` and ``positions`` int64."""

    features: np.ndarray
    labels: np.ndarray
    positions: np.ndarray


def feature_columns(d: int) -> list[str]:
    """Column names ``f0`` ... ``f{d-1}``."""
    return [f"f{j}" for j in range(d)]


@torch.no_grad()
def extract_features(model: nn.Module, dataset: Dataset[Any], *, batch_size: int,
                     device: torch.device, num_workers: int = 0,
                     selection: Tensor | None = None, desc: str = "extract") -> SplitFeatures:
    """Features f (B, n_f) of every image of ``dataset``, in dataset order, model in eval mode.

    ``dataset`` yields ``(image, label, position)`` (``position`` = row in the dataset index;
    without it the running index is used). With ``selection`` only those feature columns are
    kept (later iterations extract only the n_f* selected features). Computed in float32 (no
    autocast); on CUDA with channels_last, pinned memory and non-blocking copies.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"{desc}: the split is empty: no images to extract features from")
    model = prepare_model(model, device)
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    index = selection.to(device) if selection is not None else None
    feats, labels, positions = [], [], []
    seen = 0
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False):
        images = to_device(batch[0], device)
        f = model(images).features
        if index is not None:
            f = f[:, index]
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(batch[1]).long())
        count = images.shape[0]
        positions.append(torch.as_tensor(batch[2]).long() if len(batch) > 2
                         else torch.arange(seen, seen + count))
        seen += count
    return SplitFeatures(torch.cat(feats).numpy().astype(np.float32, copy=False),
                         torch.cat(labels).numpy(), torch.cat(positions).numpy())


def features_table(image_ids: np.ndarray, splits: dict[str, SplitFeatures]) -> pa.Table:
    """The Arrow table of :func:`write_features`; ``image_ids`` maps index positions to ids."""
    widths = {s.features.shape[1] for s in splits.values()}
    if len(widths) != 1:
        raise DataError(f"features of the splits differ in width: {sorted(widths)}")
    d = widths.pop()
    parts = [(name, s) for name, s in splits.items()]
    features = np.asfortranarray(np.concatenate([s.features for _, s in parts]),
                                 dtype=np.float32)
    positions = np.concatenate([s.positions for _, s in parts]).astype(np.int64)
    columns: dict[str, pa.Array] = {
        "image_id": pa.array(np.asarray(image_ids, dtype=np.int64)[positions], pa.int64()),
        "label": pa.array(np.concatenate([s.labels for _, s in parts]).astype(np.int64)),
        "split": pa.array(np.concatenate([np.full(len(s.labels), name) for name, s in parts])
                          .tolist(), pa.string()),
    }
    for j, name in enumerate(feature_columns(d)):
        columns[name] = pa.array(features[:, j], pa.float32())
    return pa.table(columns)


def write_features(path: str | os.PathLike[str], image_ids: np.ndarray, *,
                   train: SplitFeatures, test: SplitFeatures) -> None:
    """Write both splits' features to one Parquet file, atomically and deterministically.

    ``image_ids`` is ``DatasetIndex.image_ids`` (indexed by the returned positions).
    """
    for name, split in (("train", train), ("test", test)):
        if len(split.labels) == 0:
            raise DataError(f"{path}: the {name} split is empty: no features to write")
    table = features_table(image_ids, {"train": train, "test": test})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=["split"])
    log.info("wrote %d x %d features to %s", table.num_rows, table.num_columns - 3, path)


def read_features(path: str | os.PathLike[str],
                  split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features ``X`` float32 (n, d), labels int64 and image ids int64 of one split."""
    path = Path(path)
    if split not in SPLITS:
        raise DataError(f"{path}: unknown split {split!r} (known: {', '.join(SPLITS)})")
    if not path.is_file():
        raise DataError(f"{path}: features file not found")
    try:
        table = pq.read_table(path, filters=[("split", "==", split)])
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(err).split())})") \
            from None
    numbered = sorted((int(m.group(1)), name) for name in table.column_names
                      if (m := _FEATURE_COLUMN.match(name)))
    missing = {"image_id", "label", "split"} - set(table.column_names)
    if missing or not numbered:
        raise DataError(f"{path}: not a features file (missing "
                        f"{', '.join(sorted(missing)) or 'feature columns f0...'})")
    if table.num_rows == 0:
        raise DataError(f"{path}: no rows for the {split} split")
    X = np.empty((table.num_rows, len(numbered)), dtype=np.float32)
    for j, (_, name) in enumerate(numbered):
        X[:, j] = table.column(name).to_numpy()
    labels = table.column("label").to_numpy().astype(np.int64)
    image_ids = table.column("image_id").to_numpy().astype(np.int64)
    return X, labels, image_ids


def extract_to_parquet(path: str | os.PathLike[str], model: nn.Module, index: DatasetIndex, *,
                       image_size: int, batch_size: int, device: torch.device,
                       num_workers: int = 0, crop_to_bbox: bool = False,
                       selection: Tensor | None = None) -> None:
    """Extract the features of both splits with the test transform and write them to ``path``.

    The one call of the ``extract`` stage: an empty split fails before any image is read and
    nothing is written.
    """
    transform = build_transform(index.name, image_size, train=False)
    splits = {name: ImageDataset(index, name, transform, crop_to_bbox=crop_to_bbox)
              for name in ("train", "test")}
    for name, dataset in splits.items():
        if len(dataset) == 0:
            raise DataError(f"{index.name}: the {name} split is empty: no features to extract")
    out = {name: extract_features(model, dataset, batch_size=batch_size, device=device,
                                  num_workers=num_workers, selection=selection,
                                  desc=f"extract {name}")
           for name, dataset in splits.items()}
    write_features(path, index.image_ids, train=out["train"], test=out["test"])
