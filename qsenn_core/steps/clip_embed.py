"""Stage ``clip_embed``: D_clip, the L2-normalized CLIP embeddings of the training images
(eq. 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qsenn_core import clip_model as cm
from qsenn_core.data import load_dataset
from qsenn_core.device import resolve_device
from qsenn_core.embedding_files import write_embeddings
from qsenn_core.params import Params
from qsenn_core.steps.clip_weights import load_clip, train_positions


def clip_embed(params: Params, weights: Path, out: Path) -> np.ndarray:
    """D_clip (eq. 11): L2-normalized CLIP embeddings of the training images, to ``out``.

    Every image goes through the CLIP model's own preprocess (not the classifier's transform).
    """
    index = load_dataset(params.data.name, params.data.root)
    train = train_positions(index)
    model, preprocess, _ = load_clip(params, weights)
    emb = cm.embed_images(model, preprocess, [index.image_paths[i] for i in train],
                          batch_size=params.clip.batch_size, device=resolve_device(params.device),
                          num_workers=params.data.num_workers, dataset_name=params.data.name)
    write_embeddings(out, index.image_ids[train], index.labels[train], emb)
    return emb
