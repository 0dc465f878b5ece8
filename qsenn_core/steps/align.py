"""Stage ``align``: A^clip (eq. 11-13) of the final model's features and its validation.

P_clip of the prompts, S = D P^T (eq. 11), V (eq. 12), A^clip = V^T S (eq. 13) on the final
model's training features; ``reports/alignment.csv`` (top concepts and classes per feature) and,
when the dataset has attributes, the validation of Table 6 against A^gt (eq. 9, 14-16) in
``metrics/alignment.json`` and Figure 6a.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from qsenn_core import alignment as al
from qsenn_core import clip_model as cm
from qsenn_core.data import DatasetIndex, load_dataset
from qsenn_core.device import resolve_device
from qsenn_core.embedding_files import read_embeddings
from qsenn_core.errors import DataError
from qsenn_core.feature_files import read_features
from qsenn_core.io import atomic_path, write_json
from qsenn_core.params import Params
from qsenn_core.sparse_layer import SparseLayer
from qsenn_core.steps.clip_weights import load_clip
from qsenn_core.steps.common import trained_model

log = logging.getLogger(__name__)


def concept_prompts(params: Params, index: DatasetIndex) -> list[al.Prompt]:
    """The prompts: one per attribute (supplement, "Prompts"), else one per class name.

    A dataset without attribute annotations (Cars, FGVC-Aircraft, ImageNet) gets its class names
    as concepts ("This is a photo of a <class> of a car."); nothing is validated then.
    """
    noun = al.object_noun(params.data.name)
    if index.attribute_names:
        return al.attribute_prompts(index.attribute_names, noun, params.clip.non_adjectives)
    names = [" ".join(n.replace("_", " ").split()) for n in index.class_names]
    return [al.Prompt(name=n, type="", expression=n, phrase=n, text=al.prompt_text(n, noun))
            for n in names]


def _rows_by_id(ids: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    """Positions in ``ids`` of every id of ``wanted`` (all must be there)."""
    where = {int(v): i for i, v in enumerate(ids)}
    missing = [int(v) for v in wanted if int(v) not in where]
    if missing:
        raise DataError(f"{what} has no row for image id {missing[0]} "
                        f"({len(missing)} of {len(wanted)} training images missing)")
    return np.array([where[int(v)] for v in wanted], dtype=np.int64)


def _no_validation_png(text: str) -> bytes:
    """A small PNG saying why Figure 6a is absent (datasets without attributes)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 1.2), dpi=100)
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _rounded(metrics: dict[str, float | int]) -> dict[str, float | int]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}


def align(params: Params, features: Path, model_path: Path, embeddings: Path, weights: Path,
          table_out: Path, metrics_out: Path, figure_out: Path) -> dict[str, float | int]:
    """A^clip (eq. 13) of the final model's features, its table, and Table 6 / Figure 6a.

    Args:
        features: the final model's features (``features/<final>.parquet``); its training rows
            are F^train (selected features, in selection order).
        model_path: the final model (``models/<final>.pt``): its sparse layer gives the
            features' backbone indices and the classes each feature is assigned to.
        embeddings: D_clip of ``clip_embed``; weights: the CLIP weights of ``clip_pretrain``.
        table_out, metrics_out, figure_out: ``reports/alignment.csv``,
            ``metrics/alignment.json``, ``reports/figure_6a.png``.

    Returns the metrics written: pos_full, pos_pred, pos_rel_pred (percent) of the method and
    of the ``random_`` and optimal ``static_`` baselines (Table 6), when the dataset has
    attributes; always ``n_features`` and ``n_concepts``.
    """
    index = load_dataset(params.data.name, params.data.root)
    f_train, _, f_ids = read_features(features, "train")
    e_ids, d_clip = read_embeddings(embeddings)
    d_clip = d_clip[_rows_by_id(e_ids, f_ids, str(embeddings))]
    model = trained_model(params, model_path)
    head = model.head
    if not isinstance(head, SparseLayer):
        raise DataError(f"{model_path}: not a Q-SENN model (it has no sparse layer)")
    weight = head.weight.detach().cpu().numpy()
    selection = [int(j) for j in head.selection.cpu()]
    if f_train.shape[1] != len(selection):
        raise DataError(f"{features}: {f_train.shape[1]} features, but {model_path} uses "
                        f"{len(selection)}; both must be of the final model")

    prompts = concept_prompts(params, index)
    clip, _, tokenizer = load_clip(params, weights)
    p_clip = cm.embed_texts(clip, tokenizer, [p.text for p in prompts],
                            device=resolve_device(params.device))
    a_clip = al.clip_alignment(f_train, d_clip, p_clip)  # eq. 11-13

    table = al.alignment_table(a_clip, prompts, weight, index.class_names, selection,
                               k=min(params.clip.top_k, len(prompts)))
    metrics: dict[str, float | int]
    if index.attributes is not None and index.attribute_names:
        rows = _rows_by_id(index.image_ids, f_ids, f"{params.data.root} ({params.data.name})")
        a_gt = al.ground_truth_alignment(f_train, index.attributes[rows])  # eq. 9
        types = [p.type for p in prompts]
        metrics = al.alignment_metrics(a_gt, a_clip, types)  # eq. 14-16, Table 6
        pos = al.feature_positions(a_gt, a_clip, types)
        table["pos_rel_pred"] = np.round(100.0 * pos.pos_rel_pred, 2)
        png = al.figure_6a(a_clip, pos.pos_rel_pred)
        metrics.pop("n_attributes", None)
    else:
        metrics = {"n_features": int(a_clip.shape[0])}
        png = _no_validation_png(f"{params.data.name} has no attribute annotations:\n"
                                 "no validation against A^gt (Table 6, Figure 6a)")
    metrics["n_concepts"] = len(prompts)
    metrics = _rounded(metrics)

    with atomic_path(table_out) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")
    with atomic_path(figure_out) as tmp:
        tmp.write_bytes(png)
    write_json(metrics_out, metrics)
    if "pos_rel_pred" in metrics:
        log.info("alignment: pos_rel_pred %.1f%% (random %.1f%%, static %.1f%%)",
                 metrics["pos_rel_pred"], metrics["random_pos_rel_pred"],
                 metrics["static_pos_rel_pred"])
    return metrics
