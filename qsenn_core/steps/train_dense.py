"""Stage ``train_dense``: the dense model, trained with L_CE + beta * L_div (eq. 2).
"""

from __future__ import annotations

import logging
from pathlib import Path

from qsenn_core import distributed as ddp
from qsenn_core.device import resolve_device
from qsenn_core.io import write_json
from qsenn_core.model_file import metadata_from_params
from qsenn_core.params import Params
from qsenn_core.steps.common import load_splits, new_model
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
    result = fit(model, splits.train, splits.test, cfg, device=resolve_device(params.device),
                 model_path=model_out, history_path=history_out, resume_dir=resume,
                 model_metadata=metadata_from_params(params, splits.index))
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
