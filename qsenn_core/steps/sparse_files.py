"""Files between the stages of the Q-SENN loop, and how each stage reads them.

- ``sparse/selection.json``: the n_f* selected dense features in entry order (``select_features``).
- ``sparse/iter_<i>/solution.pt``: the least-regularized point of the path (W^sp, b, and the
  standardization of the selected features) of ``solve@i``; ``path.csv`` beside it the whole path.
- The training features each iteration's sparse layer sees (:func:`layer_inputs`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from qsenn_core.errors import DataError
from qsenn_core.feature_files import read_features
from qsenn_core.io import atomic_path

log = logging.getLogger(__name__)


SOLUTION_KEYS = ("selection", "weight", "bias", "mean", "std", "lam")


def write_csv(path: Path, table: pd.DataFrame) -> None:
    """Write ``table`` as CSV atomically (stable float formatting for DVC plots)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")


def read_selection(path: Path) -> list[int]:
    """The feature order written by :func:`select`."""
    try:
        order = json.loads(Path(path).read_text())["order"]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: not a selection file ({type(err).__name__})") from None
    return [int(j) for j in order]


@dataclass
class LayerInputs:
    """Training features as the sparse layer of one iteration sees them."""

    selection: torch.Tensor  # indices into the dense feature vector (n_f*,)
    train: torch.Tensor  # raw selected train features (n, n_f*), float64
    labels: torch.Tensor  # (n,)


def layer_inputs(features_path: Path, selection_path: Path, prev: str) -> LayerInputs:
    """Selected training features of the previous model.

    The dense model's file holds all n_f features (the selection is applied here); a fine-tuned
    model's file already holds only the selected ones, in selection order.
    """
    order = read_selection(selection_path)
    X, y, _ = read_features(features_path, "train")
    if prev == "dense":
        if max(order) >= X.shape[1]:
            raise DataError(f"{features_path}: has {X.shape[1]} features, the selection "
                            f"needs feature {max(order)}")
        X = X[:, order]
    elif X.shape[1] != len(order):
        raise DataError(f"{features_path}: has {X.shape[1]} features, expected the "
                        f"{len(order)} selected ones")
    return LayerInputs(torch.tensor(order, dtype=torch.int64),
                       torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64)),
                       torch.from_numpy(y.astype(np.int64)))


def write_solution(path: Path, solution: dict[str, torch.Tensor]) -> None:
    """Write a point of the path (:data:`SOLUTION_KEYS`, float64 tensors) atomically."""
    missing = [key for key in SOLUTION_KEYS if key not in solution]
    if missing:
        raise DataError(f"{path}: solution lacks {', '.join(missing)}")
    with atomic_path(path) as tmp:
        torch.save({key: solution[key] for key in SOLUTION_KEYS}, tmp)


def read_solution(path: Path) -> dict[str, torch.Tensor]:
    """A solution written by :func:`solve` (weights only)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return {key: raw[key] for key in SOLUTION_KEYS}
    except FileNotFoundError:
        raise DataError(f"{path}: solution file not found") from None
    except Exception as err:  # unreadable or incomplete file: one line
        raise DataError(f"{path}: not a solution file ({type(err).__name__})") from None
