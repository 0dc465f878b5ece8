"""The elastic-net regularization path as ``solve@i`` and ``glm5`` run it.
"""

from __future__ import annotations

import logging

import pandas as pd
import torch

from qsenn_core.device import resolve_device
from qsenn_core.glm_saga_solver import solve_path_glm_saga
from qsenn_core.params import Params
from qsenn_core.sparse import PathResult, solve_path

log = logging.getLogger(__name__)


def regularization_path(params: Params, X: torch.Tensor, y: torch.Tensor,
                        max_nonzeros: int | None = None) -> PathResult:
    """The elastic-net path of ``params.sparse`` on standardized features, by the chosen solver.

    With ``max_nonzeros`` the exact solver stops at the first point denser than that.
    """
    sp = params.sparse
    common = dict(alpha=sp.alpha, n_lambdas=sp.n_lambdas, lambda_min_ratio=sp.lambda_min_ratio,
                  tol=sp.tol, val_frac=sp.val_frac, seed=params.seed,
                  device=resolve_device(params.device))
    if sp.solver == "glm-saga":
        return solve_path_glm_saga(X, y, params.n_classes, max_epochs=sp.max_epochs, lr=sp.lr,
                                   lookbehind=sp.lookbehind, batch_size=sp.batch_size, **common)
    stop = None if max_nonzeros is None else (lambda point: point.nonzeros > max_nonzeros)
    return solve_path(X, y, params.n_classes, stop=stop, **common)


def path_table(result: PathResult) -> pd.DataFrame:
    """The path as a table for DVC plots (accuracies in percent)."""
    table = result.table
    for column in ("train_accuracy", "val_accuracy"):
        table[column] = 100.0 * table[column]
    return table
