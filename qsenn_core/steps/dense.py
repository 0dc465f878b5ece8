"""Stages ``train_dense`` and ``extract``: the dense model and the features of any model."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from qsenn_core import distributed as ddp
from qsenn_core.extract import extract_features, write_features
from qsenn_core.io import write_json
from qsenn_core.params import Params
from qsenn_core.sparse_layer import SparseLayer
from qsenn_core.steps.common import device_of, load_splits, new_model, trained_model
from qsenn_core.training import dense_config, fit, scratch_dir, seed_everything

log = logging.getLogger(__name__)


def train_dense(params: Params, model_out: Path, history_out: Path, metrics_out: Path) -> dict:
    """Train the dense model with L_CE + beta * L_div (eq. 2); write model, history and metrics.

    A killed run resumes from its last finished epoch (scratch folder keyed by the params and
    the dataset); the outputs appear only after the last epoch.
    """
    splits = load_splits(params, train_augment=True)
    seed_everything(params.seed)
    model = new_model(params)
    cfg = dense_config(params)
    resume = scratch_dir("train_dense", params.seed, params.data, params.model, params.train,
                         Path(params.data.root))
    result = fit(model, splits.train, splits.test, cfg, device=device_of(params),
                 model_path=model_out, history_path=history_out, resume_dir=resume)
    last = result.history[-1]
    metrics = {
        "test_accuracy": round(last["test_accuracy"], 4),
        "train_accuracy": round(last["train_accuracy"], 4),
        "train_loss": round(last["train_loss"], 6),
        "epochs": cfg.epochs,
    }
    if ddp.is_main():
        write_json(metrics_out, metrics)
    log.info("dense model: test accuracy %.2f%%", metrics["test_accuracy"])
    return metrics


def extract(params: Params, model_path: Path, out: Path, batch_size: int = 256) -> None:
    """Features of ``model_path`` for both splits (test transform, eval mode) to Parquet.

    A fine-tuned model's file holds its sparse layer: then only the n_f* selected features are
    written, in selection order.
    """
    splits = load_splits(params, train_augment=False)
    model = trained_model(params, model_path)
    head = model.head
    selection = head.selection.cpu() if isinstance(head, SparseLayer) else None
    device = device_of(params)
    kwargs = dict(batch_size=batch_size, device=device, num_workers=params.data.num_workers,
                  selection=selection)
    with torch.inference_mode():
        train = extract_features(model, splits.train, desc="extract train", **kwargs)
        test = extract_features(model, splits.test, desc="extract test", **kwargs)
    write_features(out, splits.index.image_ids, train=train, test=test)
