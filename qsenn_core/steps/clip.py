"""Stages ``clip_pretrain``, ``clip_embed`` and ``align``: feature concepts without annotations.

Paper, "Alignment Without Annotations" (eq. 11-16, Table 6, Figure 6):

- ``clip_pretrain`` writes the CLIP weights the other two use (``models/clip.pt``). With
  ``clip.pretrained: scratch`` it trains ``clip.model`` from scratch on the training images paired
  with captions written from each image's attributes (the synthetic default: no CLIP weights can be
  downloaded); otherwise it stores the weights ``clip.pretrained`` names (an open_clip tag found in
  the local cache, or a checkpoint file) as they are, so the DAG is the same for every dataset and
  the weights are content-hashed and shared through the DVC cache like any model.
- ``clip_embed``: D_clip, the L2-normalized embeddings of the training images (eq. 11), to Parquet.
- ``align``: P_clip of the prompts, S = D P^T (eq. 11), V (eq. 12), A^clip = V^T S (eq. 13) on
  the final model's training features; ``reports/alignment.csv`` (top concepts and classes per
  feature) and, when the dataset has attributes, the validation of Table 6 against A^gt (eq. 9,
  14-16) in ``metrics/alignment.json`` and Figure 6a.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from qsenn_core import alignment as al
from qsenn_core import clip_model as cm
from qsenn_core.data import DatasetIndex, load_dataset
from qsenn_core.errors import DataError
from qsenn_core.extract import read_features
from qsenn_core.io import atomic_path, write_json
from qsenn_core.params import CLIP_SCRATCH, Params
from qsenn_core.sparse_layer import SparseLayer
from qsenn_core.steps.common import device_of, trained_model

log = logging.getLogger(__name__)

#: Prefix of the embedding columns of ``clip_embed``'s Parquet file (``e0`` ... ``e{d-1}``).
EMBEDDING_PREFIX = "e"


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads (0: leave torch's setting)."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_positions(index: DatasetIndex) -> np.ndarray:
    positions = index.split("train")
    if len(positions) == 0:
        raise DataError(f"{index.root}: the train split of {index.name} is empty")
    return positions


def _weights_tag(params: Params) -> str:
    """``clip.pretrained`` when it is an open_clip tag (its preprocessing applies), else ``""``."""
    c = params.clip
    if c.pretrained == CLIP_SCRATCH:
        return ""
    return c.pretrained if cm.is_pretrained_tag(c.model, c.pretrained) else ""


def load_clip(params: Params, weights: Path) -> tuple[torch.nn.Module, cm.Preprocess, cm.Tokenizer]:
    """``clip.model`` with the weights ``clip_pretrain`` wrote (a tag keeps its preprocessing)."""
    return cm.create_clip(params.clip.model, _weights_tag(params), device=device_of(params),
                          weights=weights)


# ---------------------------------------------------------------------------------- clip_pretrain


def clip_pretrain(params: Params, out: Path) -> dict[str, float]:
    """Write the CLIP weights of the alignment to ``out`` (a state dict, ``torch.save``).

    ``clip.pretrained: scratch``: contrastive pre-training of ``clip.model`` with open_clip's
    ``ClipLoss`` on the training images, each paired with ``clip.pretrain.n_captions`` captions
    from its present attributes (:func:`qsenn_core.clip_model.caption_variants`); deterministic for
    ``seed`` on CPU. Otherwise the named tag or checkpoint is loaded (nothing is downloaded) and
    stored unchanged. Returns a few facts for the log.
    """
    c = params.clip
    if c.pretrained != CLIP_SCRATCH:
        model, _, _ = cm.create_clip(c.model, c.pretrained)
        cm.save_clip_weights(model.state_dict(), out)
        return {"trained": 0.0}
    index = load_dataset(params.data.name, params.data.root)
    if index.attributes is None or index.attribute_names is None:
        raise DataError(f"{params.data.root}: the {params.data.name} dataset has no attributes to "
                        f"write captions from, so clip.pretrained: {CLIP_SCRATCH} cannot train; "
                        "set clip.pretrained to an open_clip tag (openai) or a checkpoint path")
    train = _train_positions(index)
    p = c.pretrain
    captions = cm.caption_variants(
        index.attribute_names, index.attributes[train], al.object_noun(params.data.name),
        n_variants=p.n_captions, seed=params.seed, max_attributes=p.max_attributes,
        non_adjectives=c.non_adjectives)
    with torch_threads(p.threads):
        result = cm.pretrain_clip(
            [index.image_paths[i] for i in train], captions, model_name=c.model, epochs=p.epochs,
            batch_size=min(p.batch_size, len(train)), lr=p.lr, weight_decay=p.weight_decay,
            seed=params.seed, device=device_of(params))
    cm.save_clip_weights(result.state_dict, out)
    log.info("clip_pretrain: %d images, loss %.4f -> %.4f, %.1f s/epoch", len(train),
             result.epoch_losses[0], result.epoch_losses[-1], result.seconds_per_epoch)
    return {"trained": 1.0, "first_loss": result.epoch_losses[0],
            "final_loss": result.epoch_losses[-1], "seconds_per_epoch": result.seconds_per_epoch}


# ---------------------------------------------------------------------------------- clip_embed


def write_embeddings(path: Path, image_ids: np.ndarray, labels: np.ndarray,
                     embeddings: np.ndarray) -> None:
    """Parquet ``image_id``, ``label``, then ``e0 ... e{d-1}`` (float32), written atomically."""
    emb = np.asarray(embeddings, dtype=np.float32)
    columns: dict[str, pa.Array] = {
        "image_id": pa.array(np.asarray(image_ids, dtype=np.int64)),
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
    }
    for j in range(emb.shape[1]):
        columns[f"{EMBEDDING_PREFIX}{j}"] = pa.array(np.ascontiguousarray(emb[:, j]))
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp, compression="zstd")
    log.info("wrote %d x %d CLIP embeddings to %s", *emb.shape, path)


def read_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(image_ids, D_clip)`` of a file written by :func:`write_embeddings`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: CLIP embeddings file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({' '.join(str(err).split())})") \
            from None
    names = [n for n in table.column_names if n.startswith(EMBEDDING_PREFIX)
             and n[len(EMBEDDING_PREFIX):].isdigit()]
    if "image_id" not in table.column_names or not names:
        raise DataError(f"{path}: not a CLIP embeddings file (needs image_id and e0, e1, ...)")
    names.sort(key=lambda n: int(n[len(EMBEDDING_PREFIX):]))
    emb = np.stack([table.column(n).to_numpy() for n in names], axis=1).astype(np.float32)
    return table.column("image_id").to_numpy().astype(np.int64), emb


def clip_embed(params: Params, weights: Path, out: Path) -> np.ndarray:
    """D_clip (eq. 11): L2-normalized CLIP embeddings of the training images, to ``out``.

    Every image goes through the CLIP model's own preprocess (not the classifier's transform).
    """
    index = load_dataset(params.data.name, params.data.root)
    train = _train_positions(index)
    model, preprocess, _ = load_clip(params, weights)
    emb = cm.embed_images(model, preprocess, [index.image_paths[i] for i in train],
                          batch_size=params.clip.batch_size, device=device_of(params),
                          num_workers=params.data.num_workers, dataset_name=params.data.name)
    write_embeddings(out, index.image_ids[train], index.labels[train], emb)
    return emb


# ---------------------------------------------------------------------------------- align


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
    p_clip = cm.embed_texts(clip, tokenizer, [p.text for p in prompts], device=device_of(params))
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


def read_concept_names(path: Path) -> dict[int, str]:
    """Feature index -> its best concept, from ``reports/alignment.csv`` (explain report)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: alignment table not found")
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable CSV ({' '.join(str(err).split())})") from None
    if not {"feature", "concept_1"} <= set(table.columns):
        raise DataError(f"{path}: not an alignment table (needs columns feature, concept_1)")
    return {int(f): str(c) for f, c in zip(table["feature"], table["concept_1"], strict=True)}


def alignment_rows(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, object]]:
    """Rows of ``reports/alignment.csv`` for the HTML report (all columns unless given)."""
    table = pd.read_csv(path, keep_default_na=False)
    if columns is not None:
        table = table[[c for c in columns if c in table.columns]]
    return table.to_dict(orient="records")

