"""Feature files: the pooled features f of every image of both splits in one Parquet file.

Format (train rows first): ``image_id`` (int64), ``label`` (int64), ``split`` (string
``train``/``test``), then one float32 column per feature ``f0`` ... ``f{d-1}`` (positional: with a
selection, ``fj`` is the j-th selected feature). Same features -> same bytes (pinned pyarrow, no
timestamps in the file). Written by the ``extract`` stages, read by selection, the sparse path,
quantization, evaluation and alignment: none of those needs torch's model code for it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qsenn_core.errors import DataError
from qsenn_core.io import atomic_path

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
