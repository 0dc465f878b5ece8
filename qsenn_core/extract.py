"""Feature extraction: the feature vector f (or the selected f*) of every image.

The features are the global-average-pooled feature maps M of the backbone before dropout (paper,
Method: "Phi extracts feature maps M ... and aggregates them into a feature vector f"), computed
with the model in eval mode and the test transform for both splits. They feed the feature
selection, the sparse solve (glm-saga) and the evaluation metrics; the file format is in
:mod:`qsenn_core.feature_files`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from qsenn_core.device import prepare_model, to_device
from qsenn_core.errors import DataError
from qsenn_core.feature_files import SplitFeatures


@torch.no_grad()
def extract_features(model: nn.Module, dataset: Dataset[Any], *, batch_size: int,
                     device: torch.device, num_workers: int = 0,
                     selection: Tensor | None = None, desc: str = "extract") -> SplitFeatures:
    """Features f (B, n_f) of every image of ``dataset``, in dataset order, model in eval mode.

    ``dataset`` yields ``(image, label, position)`` (``position`` = row in the dataset index;
    without it the running index is used). With ``selection`` only those feature columns are
    kept (later iterations extract only the n_f* selected features). Computed in float32 (no
    autocast); on CUDA with channels_last, pinned memory and non-blocking copies.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise DataError(f"{desc}: the split is empty: no images to extract features from")
    model = prepare_model(model, device)
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    index = selection.to(device) if selection is not None else None
    feats, labels, positions = [], [], []
    seen = 0
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False):
        images = to_device(batch[0], device)
        f = model(images).features
        if index is not None:
            f = f[:, index]
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(batch[1]).long())
        count = images.shape[0]
        positions.append(torch.as_tensor(batch[2]).long() if len(batch) > 2
                         else torch.arange(seen, seen + count))
        seen += count
    return SplitFeatures(torch.cat(feats).numpy().astype(np.float32, copy=False),
                         torch.cat(labels).numpy(), torch.cat(positions).numpy())
