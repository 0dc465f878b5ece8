"""CLIP embedding files: D_clip (eq. 11), the L2-normalized embeddings of the training images.

One Parquet file: ``image_id``, ``label``, then ``e0 ... e{d-1}`` (float32). Written by
``clip_embed``, read by ``align``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from qsenn_core.errors import DataError
from qsenn_core.io import atomic_path

log = logging.getLogger(__name__)

#: Prefix of the embedding columns (``e0`` ... ``e{d-1}``).
EMBEDDING_PREFIX = "e"


def write_embeddings(path: Path, image_ids: np.ndarray, labels: np.ndarray,
                     embeddings: np.ndarray) -> None:
    """Parquet ``image_id``, ``label``, then ``e0 ... e{d-1}`` (float32), written atomically."""
    emb = np.asarray(embeddings, dtype=np.float32)
    columns: dict[str, pa.Array] = {
        "image_id": pa.array(np.asarray(image_ids, dtype=np.int64)),
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
    }
    for j in range(emb.shape[1]):
        columns[f"{EMBEDDING_PREFIX}{j}"] = pa.array(np.ascontiguousarray(emb[:, j]))
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp, compression="zstd")
    log.info("wrote %d x %d CLIP embeddings to %s", *emb.shape, path)


def read_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(image_ids, D_clip)`` of a file written by :func:`write_embeddings`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CLIP embeddings file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(err).split())})") \
            from None
    names = [n for n in table.column_names if n.startswith(EMBEDDING_PREFIX)
             and n[len(EMBEDDING_PREFIX):].isdigit()]
    if "image_id" not in table.column_names or not names:
        raise DataError(f"{path}: not a CLIP embeddings file (needs image_id and e0, e1, ...)")
    names.sort(key=lambda n: int(n[len(EMBEDDING_PREFIX):]))
    emb = np.stack([table.column(n).to_numpy() for n in names], axis=1).astype(np.float32)
    return table.column("image_id").to_numpy().astype(np.int64), emb
