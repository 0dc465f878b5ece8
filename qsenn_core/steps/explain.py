"""Stage ``explain``: explanation pictures of the final model and their ``index.html``.

The output folder is ``reports/explain/`` in the default dvc.yaml.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from qsenn_core.concepts import alignment_rows, read_concept_names
from qsenn_core.data import DatasetIndex
from qsenn_core.data.base import crop_box, load_rgb
from qsenn_core.device import prepare_model, resolve_device, to_device
from qsenn_core.errors import DataError
from qsenn_core.explain import (
    assigned_features,
    assignment_matrix,
    global_explanation,
    local_explanation,
    save_png,
)
from qsenn_core.params import Params
from qsenn_core.report import build_report
from qsenn_core.sparse_layer import SparseLayer
from qsenn_core.steps.common import load_splits, trained_model

log = logging.getLogger(__name__)


def evenly_spaced(n_items: int, count: int) -> list[int]:
    """``count`` distinct indices spread evenly over ``range(n_items)`` (deterministic)."""
    count = min(count, n_items)
    return sorted({int(i) for i in np.linspace(0, n_items - 1, count).round()})


def display_image(index: DatasetIndex, position: int, size: int, crop: bool) -> np.ndarray:
    """The image at ``position`` as the model sees it (square, ``size`` px), uint8 RGB."""
    image = load_rgb(index.image_paths[position], index.name)
    if crop and index.bboxes is not None:
        image = crop_box(image, index.bboxes[position])
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR))


@torch.no_grad()
def _forward(model: torch.nn.Module, dataset, positions: list[int],
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, selected feature maps, standardized selected features) of some images."""
    row_of = {int(p): i for i, p in enumerate(dataset.positions)}
    images = torch.stack([dataset[row_of[p]][0] for p in positions])
    out = model(to_device(images, device))
    head: SparseLayer = model.head
    maps = out.feature_maps[:, head.selection].float().cpu()
    return out.logits.float().cpu(), maps, head.standardize(out.features).float().cpu()


def explain(params: Params, model_path: Path, metrics_dir: Path, out_dir: Path,
            concepts: Path | None = None) -> Path:
    """Global and local explanations, the assignment matrix and the HTML report of the model.

    ``concepts``: the alignment table of the ``align`` stage (``reports/alignment.csv``); each
    feature's best CLIP concept is then shown beside its index and the table in the report.
    """
    concept_names = read_concept_names(concepts) if concepts is not None else None
    splits = load_splits(params, train_augment=False)
    index = splits.index
    model = trained_model(params, model_path)
    if not isinstance(model.head, SparseLayer):
        raise DataError(f"{model_path}: not a Q-SENN model (it has no sparse layer)")
    device = resolve_device(params.device)
    model = prepare_model(model, device).eval()
    head: SparseLayer = model.head
    weight = head.weight.detach().cpu().numpy()
    feature_ids = [int(j) for j in head.selection.cpu()]
    ex, size, crop = params.explain, params.data.image_size, params.data.crop_to_bbox
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    save_png(assignment_matrix(weight, index.class_names, feature_ids), out_dir / "assignment.png")

    global_pngs = []
    train_positions = index.split("train")
    for c in evenly_spaced(index.n_classes, ex.n_classes):
        assigned = assigned_features(weight[c])
        members = [int(p) for p in train_positions if index.labels[p] == c][: ex.n_images]
        if not assigned or not members:
            continue
        _, maps, _ = _forward(model, splits.train, members, device)
        figure = global_explanation(
            [display_image(index, p, size, crop) for p in members],
            maps[:, assigned].numpy(), [feature_ids[j] for j in assigned],
            [float(weight[c, j]) for j in assigned], index.class_names[c], gamma=ex.gamma,
            concept_names=concept_names)
        name = f"global_class_{c:03d}.png"
        save_png(figure, out_dir / name)
        global_pngs.append((index.class_names[c], name))

    local_pngs = []
    test_positions = index.split("test")
    for i in evenly_spaced(len(test_positions), ex.n_local):
        position = int(test_positions[i])
        logits, maps, standardized = _forward(model, splits.test, [position], device)
        predicted = int(logits[0].argmax())
        assigned = assigned_features(weight[predicted])
        contributions = [float(weight[predicted, j] * standardized[0, j]) for j in assigned]
        figure = local_explanation(
            display_image(index, position, size, crop), maps[0, assigned].numpy(),
            [feature_ids[j] for j in assigned], contributions, index.class_names[predicted],
            index.class_names[int(index.labels[position])], threshold=ex.threshold,
            signs=[float(weight[predicted, j]) for j in assigned], concept_names=concept_names)
        name = f"local_image_{int(index.image_ids[position])}.png"
        save_png(figure, out_dir / name)
        local_pngs.append((f"test image {int(index.image_ids[position])}", name))

    metrics = {}
    # the files the explain stage declares in dvc.yaml: an iteration's own metrics file is not
    # among them (a foreach chain has no dep list per iteration), the final one's copy is
    for model_name in ("dense", "glm5", "final"):
        path = Path(metrics_dir) / f"{model_name}.json"
        if path.is_file():
            metrics[model_name] = json.loads(path.read_text())
    info = {"dataset": params.data.name, "backbone": params.model.arch,
            "n_f*": params.select.n_features, "weights per class": params.quant.n_per_class,
            "iterations": len(params.iterations), "final model": params.final}
    return build_report(out_dir, metrics=metrics, assignment_png="assignment.png",
                        global_pngs=global_pngs, local_pngs=local_pngs, info=info,
                        alignment_rows=alignment_rows(concepts) if concepts is not None else None)
