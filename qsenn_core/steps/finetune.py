"""Stage ``finetune@i``: fine-tuning with the sparse layer W^Q frozen (L_CE + beta * L_div).
"""

from __future__ import annotations

import logging
from pathlib import Path

from qsenn_core.device import resolve_device
from qsenn_core.model_file import metadata_from_params
from qsenn_core.params import Params
from qsenn_core.sparse_layer import attach_sparse_layer, load_sparse_layer
from qsenn_core.steps.common import load_splits, trained_model
from qsenn_core.training import finetune_config, fit, scratch_dir, seed_everything

log = logging.getLogger(__name__)


def finetune(params: Params, key: str, prev_model: Path, layer_path: Path, model_out: Path,
             log_dir: Path) -> dict[str, float]:
    """Fine-tune the previous model with the sparse layer frozen (L_CE + beta * L_div).

    ``log_dir`` gets the DVCLive log: per-epoch curves and ``metrics.json``
    (:mod:`qsenn_core.training_log`). Returns the last epoch's readings.
    """
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
    result = fit(model, splits.train, splits.test, cfg, device=resolve_device(params.device),
                 model_path=model_out, log_dir=log_dir, resume_dir=resume,
                 model_metadata=metadata_from_params(params, splits.index))
    last = result.history[-1]
    log.info("iteration %s: test accuracy %.2f%%", key, last["test_accuracy"])
    return last
