"""The concept names of the learned features, as the ``align`` stage writes them.

``reports/alignment.csv`` holds one row per feature (its index in the backbone, ``feature``) with
its best CLIP concepts (``concept_1`` ...); the explanation report and the atlas show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from qsenn_core.errors import DataError


def read_concept_names(path: Path) -> dict[int, str]:
    """Feature index -> its best concept, from ``reports/alignment.csv`` (explain report)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: alignment table not found")
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable CSV ({' '.join(str(err).split())})") from None
    if not {"feature", "concept_1"} <= set(table.columns):
        raise DataError(f"{path}: not an alignment table (needs columns feature, concept_1)")
    return {int(f): str(c) for f, c in zip(table["feature"], table["concept_1"], strict=True)}


def alignment_rows(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, object]]:
    """Rows of ``reports/alignment.csv`` for the HTML report (all columns unless given)."""
    table = pd.read_csv(path, keep_default_na=False)
    if columns is not None:
        table = table[[c for c in columns if c in table.columns]]
    return table.to_dict(orient="records")
