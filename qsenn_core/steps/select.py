"""Stage ``select_features``: SLDD-Model feature selection on the dense training features.
"""

from __future__ import annotations

import logging
from pathlib import Path

from qsenn_core.device import resolve_device
from qsenn_core.feature_files import read_features
from qsenn_core.io import write_json
from qsenn_core.params import Params
from qsenn_core.selection import select_features
from qsenn_core.steps.sparse_files import write_csv

log = logging.getLogger(__name__)


def select(params: Params, features_path: Path, out_json: Path, out_table: Path) -> list[int]:
    """SLDD-Model feature selection on the dense training features; writes the entry order."""
    X, y, _ = read_features(features_path, "train")
    sel = params.select
    result = select_features(X, y, params.n_classes, sel.n_features, alpha=sel.alpha,
                             start_ratio=sel.start_ratio, decay=sel.decay,
                             max_steps=sel.max_steps, device=resolve_device(params.device))
    write_csv(out_table, result.table)
    write_json(out_json, {"order": result.order, "entry_lambda": result.entry_lambda,
                          "lambda_max": result.lambda_max})
    log.info("selected %d features: %s", len(result.order), result.order)
    return result.order
