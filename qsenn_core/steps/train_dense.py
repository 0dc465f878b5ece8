"""Stage ``train_dense``: the dense model, trained with L_CE + beta * L_div (eq. 2).
"""

from __future__ import annotations

import logging
from pathlib import Path

from qsenn_core.device import resolve_device
from qsenn_core.model_file import metadata_from_params
from qsenn_core.params import Params
from qsenn_core.steps.common import load_splits, new_model
from qsenn_core.training import dense_config, fit, scratch_dir, seed_everything

log = logging.getLogger(__name__)


def train_dense(params: Params, model_out: Path, log_dir: Path) -> dict[str, float]:
    """Train the dense model with L_CE + beta * L_div (eq. 2); write the model and its DVCLive log.

    ``log_dir`` gets the per-epoch curves and ``metrics.json`` (the last epoch's readings and
    ``epochs``), see :mod:`qsenn_core.training_log`.

    A killed run resumes from its last finished epoch (scratch folder keyed by the params and
    the dataset); the model file appears only after the last epoch, while the log is written
    after every epoch (``dvc exp show`` reads it during a run).
    """
    splits = load_splits(params, train_augment=True)
    seed_everything(params.seed)
    model = new_model(params)
    cfg = dense_config(params)
    resume = scratch_dir("train_dense", params.seed, params.data, params.model, params.train,
                         Path(params.data.root))
    result = fit(model, splits.train, splits.test, cfg, device=resolve_device(params.device),
                 model_path=model_out, log_dir=log_dir, resume_dir=resume,
                 model_metadata=metadata_from_params(params, splits.index))
    last = result.history[-1]
    log.info("dense model: test accuracy %.2f%%", last["test_accuracy"])
    return last
