"""Stage ``index_data``: check the dataset, then write the content manifest later stages use."""

from __future__ import annotations

from pathlib import Path

from qsenn_core.data import load_dataset
from qsenn_core.data.check import check_image_headers, check_splits
from qsenn_core.data.manifest import write_manifest
from qsenn_core.params import Params


def index_data(params: Params, out: Path) -> int:
    """Check ``data.name`` under ``data.root`` (class count, splits, ids, image headers) and
    write the manifest of ``data.root`` to ``out``; returns the number of files listed."""
    data = params.data
    index = load_dataset(data.name, data.root)
    check_splits(index, params.n_classes)
    check_image_headers(index)
    return write_manifest(data.root, out)
