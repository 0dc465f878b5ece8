"""Stage ``solve@i``: the regularization path on the standardized selected features.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from qsenn_core.params import Params
from qsenn_core.sparse import standardize
from qsenn_core.steps.path import path_table, regularization_path
from qsenn_core.steps.sparse_files import layer_inputs, write_csv, write_solution

log = logging.getLogger(__name__)


def solve(params: Params, features_path: Path, selection_path: Path, prev: str,
          out_solution: Path, out_table: Path) -> None:
    """The glm-saga style path on the standardized selected features of ``prev``.

    The least-regularized point (W^sp) goes to quantization (paper, Quantization).
    """
    inputs = layer_inputs(features_path, selection_path, prev)
    X, mean, std = standardize(inputs.train)
    result = regularization_path(params, X, inputs.labels)
    point = result.final
    write_csv(out_table, path_table(result))
    write_solution(out_solution, {
        "selection": inputs.selection, "weight": point.weight.double().cpu(),
        "bias": point.bias.double().cpu(), "mean": mean.double().cpu(),
        "std": std.double().cpu(), "lam": torch.tensor(point.lam, dtype=torch.float64)})
    log.info("path: %d points, least regularized lambda %.4g with %d nonzeros, val acc %.2f%%",
             len(result.points), point.lam, point.nonzeros, 100 * point.val_acc)
