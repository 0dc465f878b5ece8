"""Feature alignment without annotations via CLIP (paper, "Alignment Without Annotations").

The learned features of the final model are related to human concepts given as text:

===============================  ================================================================
function                         paper
===============================  ================================================================
:func:`attribute_prompts`        supplement "Prompts": "This is a photo of a <expression> <type>
                                 of a bird." ("<expression>-like" for non-adjectives)
:func:`similarity`               S = D_clip P_clip^T (eq. 11)
:func:`standardize_features`     v_ij = (F_ij - mean_j) / std_j (eq. 12)
:func:`clip_alignment`           A^clip = V^T S (eq. 13)
:func:`positions`                pos^full (eq. 14), pos^pred, pos^pred_rel (eq. 15) of a feature
:func:`validate_alignment`       their averages over the features (Table 6, "Proposed Method")
:func:`random_baseline`          Table 6, "Random" (expected values of a random ordering)
:func:`optimal_static_baseline`  Table 6, "Static Sorting with minimal pos^full" (eq. 16)
:func:`figure_6a`                Figure 6a: pos^pred_rel per quartile of max(a_i^clip)
===============================  ================================================================

Conventions: ``A_gt`` and ``A_clip`` are both (n_f*, n_attributes) here, one row per feature
(:func:`ground_truth_alignment` transposes :func:`qsenn_core.metrics.alignment_matrix`, which is
(n_attributes, n_f*)). Positions are 1-based (1 = the ground truth's best attribute), as the
paper's random baseline (156.5 = (312 + 1) / 2 for CUB's 312 attributes) implies. Ties in an
ordering are broken by the lower attribute index. ``pos_rel_pred`` is a fraction in [0, 1]; the
metrics dict of :func:`alignment_metrics` reports it in percent, as the paper does.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from qsenn_core.dataset_registry import dataset_spec
from qsenn_core.errors import DataError, ParamsError
from qsenn_core.metrics import alignment_matrix
from qsenn_core.params import CLIP_NON_ADJECTIVES

log = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor

#: Expressions that are nouns rather than adjectives get "-like" (supplement, "Prompts": "e.g.
#: needle"). CUB's bill shapes and head patterns that are nouns, and the synthetic benchmark's;
#: the default of ``clip.non_adjectives`` in params.yaml.
DEFAULT_NON_ADJECTIVES: tuple[str, ...] = CLIP_NON_ADJECTIVES

#: Number of bins of Figure 6a ("4 evenly sized bins").
FIGURE_6A_BINS = 4


# ----------------------------------------------------------------------------------------------
# prompts (supplement, "Prompts")
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """One concept as CLIP sees it.

    Attributes:
        name: the attribute name as given (``has_wing_color::blue``).
        type: the attribute type (``wing color``); empty for a bare concept name.
        expression: the expression (``blue``).
        phrase: ``<expression> <type>`` or ``<expression>-like <type>`` (``blue wing color``).
        text: the full prompt (``This is a photo of a blue wing color of a bird.``).
    """

    name: str
    type: str
    expression: str
    phrase: str
    text: str

    @property
    def label(self) -> str:
        """Display name, the concept phrase (``blue wing color``, ``dagger-like bill shape``)."""
        return self.phrase


def _words(text: str) -> str:
    """Underscores to spaces, runs of whitespace collapsed."""
    return " ".join(text.replace("_", " ").split())


def parse_attribute_name(name: str) -> tuple[str, str]:
    """``(type, expression)`` of a CUB-style attribute name.

    ``has_bill_shape::dagger`` -> ``("bill shape", "dagger")``, ``has_size::small_(5_-_9_in)``
    -> ``("size", "small (5 - 9 in)")``. A name without ``::`` is a bare concept: type ``""``.
    """
    if "::" not in name:
        expression = _words(name)
        if not expression:
            raise DataError(f"attribute name {name!r} is empty")
        return "", expression
    kind, expression = name.split("::", 1)
    kind = kind[len("has_"):] if kind.startswith("has_") else kind
    kind, expression = _words(kind), _words(expression)
    if not kind or not expression:
        raise DataError(f"attribute name {name!r} is not of the form has_<type>::<expression>")
    return kind, expression


def concept_phrase(
    kind: str, expression: str, non_adjectives: Sequence[str] = DEFAULT_NON_ADJECTIVES
) -> str:
    """``"<expression> <type>"``, or ``"<expression>-like <type>"`` for a non-adjective."""
    nouns = {_words(n).lower() for n in non_adjectives}
    head = f"{expression}-like" if expression.lower() in nouns else expression
    return f"{head} {kind}".strip()


def prompt_text(phrase: str, object_noun: str) -> str:
    """The supplement's template: ``This is a photo of a <phrase> of a <object>.``"""
    return f"This is a photo of a {phrase} of a {object_noun}."


def attribute_prompts(
    attribute_names: Sequence[str],
    object_noun: str,
    non_adjectives: Sequence[str] = DEFAULT_NON_ADJECTIVES,
) -> list[Prompt]:
    """One :class:`Prompt` per attribute name (supplement, "Prompts").

    ``has_wing_color::blue`` -> "This is a photo of a blue wing color of a bird.";
    ``has_bill_shape::needle`` -> "This is a photo of a needle-like bill shape of a bird."
    (``needle`` is in ``non_adjectives``, compared case-insensitively with underscores as spaces).
    """
    if not object_noun.strip():
        raise ParamsError("clip prompts: the object noun is empty")
    prompts = []
    for name in attribute_names:
        kind, expression = parse_attribute_name(name)
        phrase = concept_phrase(kind, expression, non_adjectives)
        prompts.append(Prompt(name=name, type=kind, expression=expression, phrase=phrase,
                              text=prompt_text(phrase, object_noun.strip())))
    return prompts


def object_noun(dataset: str) -> str:
    """The prompts' object noun for ``data.name`` (``bird``, ``car``, ``aircraft``), from the
    dataset table; :class:`ParamsError` for an unknown dataset."""
    return dataset_spec(dataset).object_noun


# ----------------------------------------------------------------------------------------------
# eq. 11-13
# ----------------------------------------------------------------------------------------------


def _as_float(x: ArrayLike, name: str, ndim: int = 2) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != ndim:
        raise DataError(f"{name} must have {ndim} dimensions, got shape {tuple(arr.shape)}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} contains NaN or infinite values")
    return arr


def similarity(image_embeddings: ArrayLike, prompt_embeddings: ArrayLike) -> np.ndarray:
    """S = D_clip P_clip^T (eq. 11): (n_T, n_p) image-prompt similarities.

    Both inputs are L2-normalized CLIP embeddings, (n_T, d) and (n_p, d), so S holds cosines.
    """
    d = _as_float(image_embeddings, "image embeddings D_clip")
    p = _as_float(prompt_embeddings, "prompt embeddings P_clip")
    if d.shape[1] != p.shape[1]:
        raise DataError(f"image embeddings have dimension {d.shape[1]} but prompt embeddings "
                        f"{p.shape[1]}: they must come from the same CLIP model")
    return d @ p.T


def standardize_features(features: ArrayLike) -> np.ndarray:
    """V (eq. 12): every feature (column) minus its mean, divided by its std over the images.

    The population std (ddof 0) is used; a constant feature has std 0 and gets v = 0 (it carries
    no activation to weight the similarities with) instead of 0/0.
    """
    f = _as_float(features, "features F^train")
    if len(f) == 0:
        raise DataError("features F^train have no rows")
    centred = f - f.mean(axis=0, keepdims=True)
    std = f.std(axis=0, keepdims=True)
    constant = std[0] <= 1e-12 * np.maximum(1.0, np.abs(f).max(axis=0))
    if constant.any():
        log.warning("alignment: %d constant feature(s) get zero weights in eq. 12",
                    int(constant.sum()))
    std[:, constant] = 1.0
    v = centred / std
    v[:, constant] = 0.0
    return v


def clip_alignment(
    features: ArrayLike, image_embeddings: ArrayLike, prompt_embeddings: ArrayLike
) -> np.ndarray:
    """A^clip = V^T S (eq. 13): (n_f*, n_p) alignment of every feature with every prompt.

    Args:
        features: (n_T, n_f*) training features F^train of the final model.
        image_embeddings: (n_T, d) L2-normalized CLIP embeddings D_clip of the same images,
            in the same order.
        prompt_embeddings: (n_p, d) L2-normalized CLIP embeddings P_clip of the prompts.

    The paper's V^T S is a plain sum over the n_T images (not a mean); rankings do not depend on
    the scale, the alignment values of Figure 6a and the report do.
    """
    v = standardize_features(features)
    s = similarity(image_embeddings, prompt_embeddings)
    if len(v) != len(s):
        raise DataError(f"features have {len(v)} rows but the image embeddings {len(s)}: "
                        "both must cover the same training images")
    return v.T @ s


def ground_truth_alignment(features: ArrayLike, attributes_present: ArrayLike) -> np.ndarray:
    """A^gt (eq. 9) as (n_f*, n_attributes), the orientation used in this module."""
    return alignment_matrix(features, attributes_present).T


# ----------------------------------------------------------------------------------------------
# validation (eq. 14-16)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Positions:
    """Per-feature validation metrics (1-based positions; ``pos_rel_pred`` in [0, 1])."""

    pos_full: np.ndarray  # int64 (n_f*,), eq. 14
    pos_pred: np.ndarray  # int64 (n_f*,), eq. 14 within the predicted type
    pos_rel_pred: np.ndarray  # float64 (n_f*,), eq. 15; NaN where the type has one attribute
    predicted: np.ndarray  # int64 (n_f*,), argmax(a_i^clip)


def _type_codes(types: Sequence[str], n: int) -> np.ndarray:
    if len(types) != n:
        raise DataError(f"{len(types)} attribute types given for {n} attributes")
    _, codes = np.unique(np.asarray(list(types), dtype=object).astype(str), return_inverse=True)
    return codes.astype(np.int64)


def _check_pair(a_gt: ArrayLike, a_clip: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    gt = _as_float(a_gt, "A^gt")
    clip = _as_float(a_clip, "A^clip")
    if gt.shape != clip.shape:
        raise DataError(f"A^gt has shape {gt.shape} but A^clip {clip.shape}; both must be "
                        "(n_features, n_attributes) (transpose metrics.alignment_matrix)")
    if gt.shape[1] == 0 or gt.shape[0] == 0:
        raise DataError("alignment validation needs at least one feature and one attribute")
    return gt, clip


def _rank_of(a_gt: np.ndarray, mask: np.ndarray, attribute: int) -> int:
    """1-based position of ``attribute`` in argsort(-a_gt[mask]) (stable: lower index first)."""
    idx = np.flatnonzero(mask)
    order = idx[np.argsort(-a_gt[idx], kind="stable")]
    return int(np.flatnonzero(order == attribute)[0]) + 1


def positions(
    a_gt: ArrayLike, a_clip: ArrayLike, types: Sequence[str]
) -> tuple[int, int, float]:
    """``(pos_full, pos_pred, pos_rel_pred)`` of one feature (eq. 14-15).

    pos_full: where argmax(a^clip) stands in argsort(a^gt) descending (eq. 14), 1 = best;
    pos_pred: the same with both restricted to the attributes of the predicted type (the type of
    argmax(a^clip)); pos_rel_pred = (n_type - pos_pred) / (n_type - 1) (eq. 15), NaN if the type
    has a single attribute.
    """
    gt, clip = _check_pair(np.atleast_2d(a_gt), np.atleast_2d(a_clip))
    res = feature_positions(gt, clip, types)
    return int(res.pos_full[0]), int(res.pos_pred[0]), float(res.pos_rel_pred[0])


def feature_positions(a_gt: ArrayLike, a_clip: ArrayLike, types: Sequence[str]) -> Positions:
    """:func:`positions` for every feature (row) of A^gt / A^clip, both (n_f*, n_attributes)."""
    gt, clip = _check_pair(a_gt, a_clip)
    codes = _type_codes(types, gt.shape[1])
    everything = np.ones(gt.shape[1], dtype=bool)
    predicted = np.argmax(clip, axis=1)  # first maximum: lower index on ties
    pos_full = np.empty(len(gt), dtype=np.int64)
    pos_pred = np.empty(len(gt), dtype=np.int64)
    pos_rel = np.empty(len(gt), dtype=np.float64)
    for i, a in enumerate(predicted):
        same_type = codes == codes[a]
        pos_full[i] = _rank_of(gt[i], everything, a)  # eq. 14
        pos_pred[i] = _rank_of(gt[i], same_type, a)
        n_type = int(same_type.sum())
        pos_rel[i] = (n_type - pos_pred[i]) / (n_type - 1) if n_type > 1 else np.nan  # eq. 15
    return Positions(pos_full, pos_pred, pos_rel, predicted.astype(np.int64))


def _averages(pos: Positions) -> dict[str, float]:
    rel = pos.pos_rel_pred[np.isfinite(pos.pos_rel_pred)]
    return {
        "pos_full": float(pos.pos_full.mean()),
        "pos_pred": float(pos.pos_pred.mean()),
        "pos_rel_pred": float(rel.mean()) if len(rel) else float("nan"),
    }


def validate_alignment(
    a_gt: ArrayLike, a_clip: ArrayLike, types: Sequence[str]
) -> dict[str, float]:
    """Averages over the features of pos_full, pos_pred and pos_rel_pred (Table 6, proposed).

    ``pos_rel_pred`` is a fraction; features whose predicted type has one attribute are left out
    of its mean (eq. 15 is undefined for them).
    """
    return _averages(feature_positions(a_gt, a_clip, types))


def random_baseline(types: Sequence[str]) -> dict[str, float]:
    """Expected metrics of a random ordering (Table 6, "Random").

    argmax is then uniform over the n attributes and independent of A^gt: E[pos_full] =
    (n + 1) / 2, E[pos_pred] = sum_t (n_t / n) (n_t + 1) / 2 and E[pos_rel_pred] = 1/2 (over the
    types with more than one attribute).
    """
    codes = _type_codes(types, len(types))
    n = len(codes)
    if n == 0:
        raise DataError("random baseline: there are no attributes")
    sizes = np.bincount(codes).astype(np.float64)
    return {
        "pos_full": (n + 1) / 2,
        "pos_pred": float(np.sum(sizes / n * (sizes + 1) / 2)),
        "pos_rel_pred": 0.5 if np.any(sizes > 1) else float("nan"),
    }


def static_ordering(a_gt: ArrayLike) -> np.ndarray:
    """The optimal static list (eq. 16): attributes by ascending average position avg_j.

    pos_ij = position of attribute j in argsort(a_i^gt) descending (1-based); avg_j is its mean
    over the features. Ties: lower attribute index first.
    """
    gt = _as_float(a_gt, "A^gt")
    order = np.argsort(-gt, axis=1, kind="stable")
    pos = np.empty_like(order)
    rows = np.arange(gt.shape[0])[:, None]
    pos[rows, order] = np.arange(1, gt.shape[1] + 1)[None, :]
    avg = pos.mean(axis=0)  # eq. 16
    return np.argsort(avg, kind="stable")


def optimal_static_baseline(a_gt: ArrayLike, types: Sequence[str]) -> dict[str, float]:
    """Table 6, "Static Sorting with minimal pos^full": one ordering used for every feature.

    Every feature is aligned with the first attribute of :func:`static_ordering` (a constant
    A^clip that ranks the attributes by the list), which gives the minimal average pos_full of
    any constant choice.
    """
    gt = _as_float(a_gt, "A^gt")
    ranking = static_ordering(gt)
    score = np.empty(gt.shape[1], dtype=np.float64)
    score[ranking] = -np.arange(gt.shape[1], dtype=np.float64)
    return validate_alignment(gt, np.broadcast_to(score, gt.shape), types)


def alignment_metrics(
    a_gt: ArrayLike, a_clip: ArrayLike, types: Sequence[str]
) -> dict[str, float | int]:
    """Flat metrics dict of Table 6 (``metrics/alignment.json``): three rows, percent for rel.

    Keys: ``pos_full``, ``pos_pred``, ``pos_rel_pred`` (the proposed method) and the same with
    the prefixes ``random_`` and ``static_``; ``pos_rel_pred*`` are in percent. Plus
    ``n_features`` and ``n_attributes``.
    """
    gt, clip = _check_pair(a_gt, a_clip)
    rows = {
        "": validate_alignment(gt, clip, types),
        "random_": random_baseline(types),
        "static_": optimal_static_baseline(gt, types),
    }
    out: dict[str, float | int] = {"n_features": gt.shape[0], "n_attributes": gt.shape[1]}
    for prefix, row in rows.items():
        out[f"{prefix}pos_full"] = row["pos_full"]
        out[f"{prefix}pos_pred"] = row["pos_pred"]
        out[f"{prefix}pos_rel_pred"] = 100.0 * row["pos_rel_pred"]
    return out


# ----------------------------------------------------------------------------------------------
# report: top concepts and the alignment table
# ----------------------------------------------------------------------------------------------


def top_concepts(
    a_clip: ArrayLike, prompts: Sequence[Prompt], k: int = 3
) -> list[list[tuple[str, float]]]:
    """The k prompts most aligned with every feature: ``[[(label, value), ...], ...]``.

    Ordered by descending A^clip value (ties: lower prompt index first).
    """
    clip = _as_float(a_clip, "A^clip")
    if clip.shape[1] != len(prompts):
        raise DataError(f"A^clip has {clip.shape[1]} columns but there are {len(prompts)} prompts")
    if not 1 <= k <= len(prompts):
        raise ParamsError(f"top concepts: k must be in [1, {len(prompts)}], got {k}")
    order = np.argsort(-clip, axis=1, kind="stable")[:, :k]
    return [[(prompts[j].label, float(clip[i, j])) for j in row] for i, row in enumerate(order)]


def concept_names(a_clip: ArrayLike, prompts: Sequence[Prompt]) -> list[str]:
    """The best concept of every feature, as shown in the explanation report."""
    return [row[0][0] for row in top_concepts(a_clip, prompts, k=1)]


def alignment_table(
    a_clip: ArrayLike,
    prompts: Sequence[Prompt],
    weight: ArrayLike,
    class_names: Sequence[str],
    feature_ids: Sequence[int] | None = None,
    k: int = 3,
) -> pd.DataFrame:
    """``reports/alignment.csv``: per feature its top-k concepts and the classes it is assigned to.

    Args:
        a_clip: (n_f*, n_p) A^clip.
        prompts: the n_p prompts.
        weight: (n_c, n_f*) final layer W^Q; a feature is assigned to a class where its weight is
            nonzero (``classes_pos``: positive weights, ``classes_neg``: negative ones).
        class_names: n_c class names.
        feature_ids: the features' indices in the backbone's feature vector (the selection);
            default 0..n_f*-1.
        k: number of concepts per feature.

    Columns: ``feature``, ``concept_1``, ``alignment_1``, ..., ``concept_k``, ``alignment_k``,
    ``n_classes``, ``classes_pos``, ``classes_neg`` (class names joined by ``"; "``).
    """
    clip = _as_float(a_clip, "A^clip")
    w = _as_float(weight, "weight")
    n_f = clip.shape[0]
    if w.shape != (len(class_names), n_f):
        raise DataError(f"weight has shape {w.shape}, expected ({len(class_names)}, {n_f}) "
                        "(n_classes, n_features of A^clip)")
    ids = np.arange(n_f) if feature_ids is None else np.asarray(feature_ids, dtype=np.int64)
    if ids.shape != (n_f,):
        raise DataError(f"feature_ids has {ids.size} entries, A^clip has {n_f} features")
    tops = top_concepts(clip, prompts, k)
    rows = []
    for i in range(n_f):
        row: dict[str, object] = {"feature": int(ids[i])}
        for r, (label, value) in enumerate(tops[i], start=1):
            row[f"concept_{r}"] = label
            row[f"alignment_{r}"] = value
        pos = np.flatnonzero(w[:, i] > 0)
        neg = np.flatnonzero(w[:, i] < 0)
        row["n_classes"] = int(len(pos) + len(neg))
        row["classes_pos"] = "; ".join(class_names[c] for c in pos)
        row["classes_neg"] = "; ".join(class_names[c] for c in neg)
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# Figure 6a
# ----------------------------------------------------------------------------------------------


def quartile_bins(values: ArrayLike, n_bins: int = FIGURE_6A_BINS) -> list[np.ndarray]:
    """Indices of ``values`` split into ``n_bins`` evenly sized bins by ascending value.

    Sizes differ by at most one (earlier bins get the extra items); ties by lower index.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(v, kind="stable")
    return [b for b in np.array_split(order, min(n_bins, len(v))) if len(b)]


def figure_6a(a_clip: ArrayLike, pos_rel_pred: ArrayLike) -> bytes:
    """Figure 6a as PNG bytes: boxplots of pos_rel_pred per quartile bin of max(a_i^clip).

    Matplotlib's default boxplot parameters (supplement); features whose pos_rel_pred is NaN are
    left out. The PNG carries no software/date metadata, so equal inputs give equal bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    clip = _as_float(a_clip, "A^clip")
    rel = np.asarray(pos_rel_pred, dtype=np.float64).ravel()
    if rel.shape != (clip.shape[0],):
        raise DataError(f"pos_rel_pred has {rel.size} entries, A^clip has {clip.shape[0]} rows")
    keep = np.isfinite(rel)
    if not keep.any():
        raise DataError("figure 6a: no feature has a defined pos_rel_pred")
    value = clip.max(axis=1)[keep]
    rel = rel[keep]
    bins = quartile_bins(value)
    fig = Figure(figsize=(5.0, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.boxplot([100.0 * rel[b] for b in bins])
    ax.set_xticks(range(1, len(bins) + 1))
    ax.set_xticklabels([f"{value[b].min():.3g}-\n{value[b].max():.3g}" for b in bins])
    ax.set_xlabel(r"alignment value $\max(\mathbf{a}_i^{clip})$ (quartile bins)")
    ax.set_ylabel(r"$pos_{rel}^{pred}$ [%]")
    ax.set_ylim(-5, 105)
    ax.set_title(f"Figure 6a: {len(rel)} features, {len(bins)} bins", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
