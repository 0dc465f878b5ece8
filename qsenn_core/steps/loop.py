"""Stages of the Q-SENN loop: select_features, solve@i, quantize@i, finetune@i and glm5.

Files between the stages:

- ``sparse/selection.json``: the n_f* selected dense features in entry order.
- ``sparse/iter_<i>/solution.pt``: the least-regularized point of the path (W^sp, b, and the
  standardization of the selected features), ``sparse/iter_<i>/path.csv`` the whole path.
- ``sparse/iter_<i>/layer.pt``: the quantized sparse layer that ``finetune@i`` freezes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from qsenn_core import distributed as ddp
from qsenn_core.errors import DataError
from qsenn_core.extract import read_features
from qsenn_core.glm_saga_solver import solve_path_glm_saga
from qsenn_core.io import atomic_path, write_json
from qsenn_core.metrics import features_per_class, n_used_features
from qsenn_core.params import Params
from qsenn_core.quantize import quantize, refit_bias, sparsify_top
from qsenn_core.selection import select_features
from qsenn_core.sparse import PathResult, solve_path, standardize
from qsenn_core.sparse_layer import (
    SparseLayer,
    attach_sparse_layer,
    load_sparse_layer,
    save_sparse_layer,
)
from qsenn_core.steps.common import device_of, load_splits, trained_model
from qsenn_core.training import finetune_config, fit, scratch_dir, seed_everything

log = logging.getLogger(__name__)

SOLUTION_KEYS = ("selection", "weight", "bias", "mean", "std", "lam")


def write_csv(path: Path, table: pd.DataFrame) -> None:
    """Write ``table`` as CSV atomically (stable float formatting for DVC plots)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")


# --------------------------------------------------------------------------- feature selection


def select(params: Params, features_path: Path, out_json: Path, out_table: Path) -> list[int]:
    """SLDD-Model feature selection on the dense training features; writes the entry order."""
    X, y, _ = read_features(features_path, "train")
    sel = params.select
    result = select_features(X, y, params.n_classes, sel.n_features, alpha=sel.alpha,
                             start_ratio=sel.start_ratio, decay=sel.decay,
                             max_steps=sel.max_steps, device=device_of(params))
    write_csv(out_table, result.table)
    write_json(out_json, {"order": result.order, "entry_lambda": result.entry_lambda,
                          "lambda_max": result.lambda_max})
    log.info("selected %d features: %s", len(result.order), result.order)
    return result.order


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


def layer_inputs(params: Params, features_path: Path, selection_path: Path,
                 prev: str) -> LayerInputs:
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


# --------------------------------------------------------------------------- sparse path


def regularization_path(params: Params, X: torch.Tensor, y: torch.Tensor,
                        max_nonzeros: int | None = None) -> PathResult:
    """The elastic-net path of ``params.sparse`` on standardized features, by the chosen solver.

    With ``max_nonzeros`` the exact solver stops at the first point denser than that.
    """
    sp = params.sparse
    common = dict(alpha=sp.alpha, n_lambdas=sp.n_lambdas, lambda_min_ratio=sp.lambda_min_ratio,
                  tol=sp.tol, val_frac=sp.val_frac, seed=params.seed, device=device_of(params))
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


def solve(params: Params, features_path: Path, selection_path: Path, prev: str,
          out_solution: Path, out_table: Path) -> None:
    """The glm-saga style path on the standardized selected features of ``prev``.

    The least-regularized point (W^sp) goes to quantization (paper, Quantization).
    """
    inputs = layer_inputs(params, features_path, selection_path, prev)
    X, mean, std = standardize(inputs.train)
    result = regularization_path(params, X, inputs.labels)
    point = result.final
    write_csv(out_table, path_table(result))
    solution = {"selection": inputs.selection, "weight": point.weight.double().cpu(),
                "bias": point.bias.double().cpu(), "mean": mean.double().cpu(),
                "std": std.double().cpu(), "lam": torch.tensor(point.lam, dtype=torch.float64)}
    with atomic_path(out_solution) as tmp:
        torch.save(solution, tmp)
    log.info("path: %d points, least regularized lambda %.4g with %d nonzeros, val acc %.2f%%",
             len(result.points), point.lam, point.nonzeros, 100 * point.val_acc)


def read_solution(path: Path) -> dict[str, torch.Tensor]:
    """A solution written by :func:`solve` (weights only)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return {key: raw[key] for key in SOLUTION_KEYS}
    except FileNotFoundError:
        raise DataError(f"{path}: solution file not found") from None
    except Exception as err:  # unreadable or incomplete file: one line
        raise DataError(f"{path}: not a solution file ({type(err).__name__})") from None


# --------------------------------------------------------------------------- quantization


def quantize_solution(params: Params, solution_path: Path, features_path: Path,
                      selection_path: Path, prev: str, out_layer: Path,
                      out_metrics: Path) -> dict[str, float]:
    """W^Q from W^sp (eq. 3-5; or the n_w largest float weights when ``quant.enabled`` is
    false), a refitted bias, and the sparse layer file for fine-tuning."""
    solution = read_solution(solution_path)
    n_weights = params.quant.n_per_class * params.n_classes
    weight = solution["weight"]
    if params.quant.enabled:
        new_weight = quantize(weight, n_weights, params.quant.levels)
    else:
        new_weight = sparsify_top(weight, n_weights)
    inputs = layer_inputs(params, features_path, selection_path, prev)
    standardized = (inputs.train - solution["mean"]) / solution["std"]
    bias = refit_bias(standardized, new_weight.double(), inputs.labels, init=solution["bias"])
    alpha = float(new_weight.abs().max())
    layer = SparseLayer(solution["selection"], new_weight, bias, solution["mean"],
                        solution["std"], alpha=alpha)
    save_sparse_layer(out_layer, layer)
    logits = standardized @ new_weight.double().T + bias.double()
    metrics = {
        "alpha": alpha,
        "nonzeros": int((new_weight != 0).sum()),
        "features_per_class": features_per_class(new_weight),
        "n_features": n_used_features(new_weight),
        "train_accuracy": 100.0 * float((logits.argmax(1) == inputs.labels).double().mean()),
    }
    write_json(out_metrics, metrics)
    log.info("quantized layer: alpha %.4g, %d nonzeros, %.2f features/class",
             alpha, metrics["nonzeros"], metrics["features_per_class"])
    return metrics


# --------------------------------------------------------------------------- fine-tuning


def finetune(params: Params, key: str, prev_model: Path, layer_path: Path, model_out: Path,
             history_out: Path, metrics_out: Path) -> dict[str, float]:
    """Fine-tune the previous model with the sparse layer frozen (L_CE + beta * L_div)."""
    splits = load_splits(params, train_augment=True)
    seed_everything(params.seed)
    model = trained_model(params, prev_model)
    layer = load_sparse_layer(layer_path,
                              train_standardization=params.finetune.train_standardization)
    attach_sparse_layer(model, layer, params.finetune.dropout)
    cfg = finetune_config(params, key)
    resume = scratch_dir(f"finetune_{key}", params.seed, params.data, params.model,
                         params.train, params.finetune, params.iterations[key], prev_model,
                         layer_path, Path(params.data.root))
    result = fit(model, splits.train, splits.test, cfg, device=device_of(params),
                 model_path=model_out, history_path=history_out, resume_dir=resume)
    last = result.history[-1]
    metrics = {"test_accuracy": round(last["test_accuracy"], 4),
               "train_accuracy": round(last["train_accuracy"], 4),
               "lr": cfg.lr_head, "epochs": cfg.epochs}
    if ddp.is_main():
        write_json(metrics_out, metrics)
    return metrics


# --------------------------------------------------------------------------- glm-saga_5


def glm5(params: Params, features_path: Path, out_layer: Path, out_table: Path,
         max_per_class: float = 5.0) -> dict[str, float]:
    """The glm-saga_5 baseline: the path on all dense features (no selection, no fine-tuning),
    taking the densest solution with at most ``max_per_class`` nonzeros per class on average."""
    X, y, _ = read_features(features_path, "train")
    raw = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64))
    labels = torch.from_numpy(y.astype(np.int64))
    Xs, mean, std = standardize(raw)
    budget = int(max_per_class * params.n_classes)
    result = regularization_path(params, Xs, labels, max_nonzeros=budget)
    write_csv(out_table, path_table(result))
    allowed = [p for p in result.points if p.nonzeros <= budget]
    if not allowed:
        raise DataError(f"{features_path}: no path point has at most {max_per_class:g} "
                        "weights per class; lower sparse.lambda_min_ratio's start")
    point = max(allowed, key=lambda p: (p.nonzeros, -p.lam))
    weight = point.weight.float()
    layer = SparseLayer(torch.arange(X.shape[1]), weight, point.bias, mean, std,
                        alpha=float(weight.abs().max()))
    save_sparse_layer(out_layer, layer)
    log.info("glm5: lambda %.4g, %d nonzeros (%.2f per class)", point.lam, point.nonzeros,
             point.nonzeros / params.n_classes)
    return {"lam": point.lam, "nonzeros": point.nonzeros}
