"""Stages ``extract_dense`` and ``extract@i``: the features of a trained model to Parquet.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from qsenn_core.device import resolve_device
from qsenn_core.extract import extract_features
from qsenn_core.feature_files import write_features
from qsenn_core.params import Params
from qsenn_core.sparse_layer import SparseLayer
from qsenn_core.steps.common import load_splits, trained_model

log = logging.getLogger(__name__)


def extract(params: Params, model_path: Path, out: Path, batch_size: int = 256) -> None:
    """Features of ``model_path`` for both splits (test transform, eval mode) to Parquet.

    A fine-tuned model's file holds its sparse layer: then only the n_f* selected features are
    written, in selection order.
    """
    splits = load_splits(params, train_augment=False)
    model = trained_model(params, model_path)
    head = model.head
    selection = head.selection.cpu() if isinstance(head, SparseLayer) else None
    device = resolve_device(params.device)
    kwargs = dict(batch_size=batch_size, device=device, num_workers=params.data.num_workers,
                  selection=selection)
    with torch.inference_mode():
        train = extract_features(model, splits.train, desc="extract train", **kwargs)
        test = extract_features(model, splits.test, desc="extract test", **kwargs)
    write_features(out, splits.index.image_ids, train=train, test=test)
