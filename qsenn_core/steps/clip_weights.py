"""What the three CLIP stages share: the training images and the CLIP model with its weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from qsenn_core import clip_model as cm
from qsenn_core.data import DatasetIndex
from qsenn_core.device import resolve_device
from qsenn_core.errors import DataError
from qsenn_core.params import CLIP_SCRATCH, Params


def train_positions(index: DatasetIndex) -> np.ndarray:
    positions = index.split("train")
    if len(positions) == 0:
        raise DataError(f"{index.root}: the train split of {index.name} is empty")
    return positions


def weights_tag(params: Params) -> str:
    """``clip.pretrained`` when it is an open_clip tag (its preprocessing applies), else ``""``."""
    c = params.clip
    if c.pretrained == CLIP_SCRATCH:
        return ""
    return c.pretrained if cm.is_pretrained_tag(c.model, c.pretrained) else ""


def load_clip(params: Params, weights: Path) -> tuple[torch.nn.Module, cm.Preprocess, cm.Tokenizer]:
    """``clip.model`` with the weights ``clip_pretrain`` wrote (a tag keeps its preprocessing)."""
    return cm.create_clip(params.clip.model, weights_tag(params),
                          device=resolve_device(params.device),
                          weights=weights)
