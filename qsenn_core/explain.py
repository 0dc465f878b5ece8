"""Explanation pictures of a Q-SENN: global and local explanations and the assignment matrix.

Pure functions on plain arrays (images, feature maps, weights), so they need no model: the explain
stage gathers the model outputs and calls them. Every picture is a :class:`matplotlib.figure.Figure`
drawn on the Agg canvas without pyplot's global state; :func:`png_bytes` / :func:`save_png` turn it
into PNG bytes that are identical for identical inputs (no software or date metadata).

==============================  =================================================================
function                        paper
==============================  =================================================================
:func:`overlay_heatmap`         supplement "Visualization Techniques": a feature map upsampled,
                                gamma-corrected and overlaid with colour map *jet* on the
                                grayscale image
:func:`global_explanation`      Figure 1 (global explanation), supplement Figures 13-36: the
                                features assigned to one class (+/-), overlaid on a few of its
                                training images
:func:`local_explanation`       Figures 1 and 4 (local explanation): pixels where any feature
                                exceeds 70 % of its maximum on the image, coloured by the
                                strongest feature, with the contributions w*f of the prediction
:func:`assignment_matrix`       the sparse (ternary, eq. 3-5) class-feature matrix W of the final
                                layer
==============================  =================================================================

Normalisation of the feature maps: the paper normalises per feature. In the global explanation a
feature's maps are divided by that feature's maximum over all the shown images (one shared scale
per column), so an image on which the feature is weak stays dark instead of being stretched to full
colour; ``normalize="map"`` divides each map by its own maximum instead. The local explanation
thresholds each map relative to its own maximum on the image, as the paper describes.
"""

from __future__ import annotations

import io
import logging
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap, ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from qsenn_core.errors import DataError
from qsenn_core.io import atomic_path

log = logging.getLogger(__name__)

#: Default gamma of the feature maps before the *jet* colour map: jet's cyan-yellow middle looks as
#: bright as its red end, so mid activations are pushed down to make only the peaks read as "hot".
DEFAULT_GAMMA = 1.5
#: Default opacity of the heat map over the grayscale image.
DEFAULT_ALPHA = 0.5
#: Paper ("Visualization Techniques"): only pixels above 70 % of a feature's maximum are shown.
DEFAULT_THRESHOLD = 0.7
#: Resolution of the written PNGs.
DEFAULT_DPI = 110
#: Luma weights (ITU-R BT.601) of the grayscale conversion.
_LUMA = np.array([0.299, 0.587, 0.114])
#: Negative / zero / positive weights (red = +, blue = -, as in the column titles).
_BLUE_WHITE_RED = ["#2166ac", "#ffffff", "#b2182b"]

FigureOrBytes = Figure | bytes


# ----------------------------------------------------------------------------------------------
# array helpers
# ----------------------------------------------------------------------------------------------


def as_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """``image`` as an ``(H, W, 3)`` uint8 array.

    Accepts ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped); float images
    are taken to be in [0, 1].
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name}: expected an (H, W, 3) image, got shape {tuple(np.shape(image))}")
    arr = arr[:, :, :3]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.clip(np.nan_to_num(arr) * 255.0 + 0.5, 0, 255)
    return arr.astype(np.uint8)


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Grayscale of an RGB image, still ``(H, W, 3)`` uint8 (paper: images shown in grayscale so
    that the feature maps are more visible)."""
    rgb = as_rgb_uint8(image)
    luma = rgb.astype(np.float64) @ _LUMA
    return np.repeat(np.clip(luma + 0.5, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def _source_coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index, upper index and weight of the upper one for bilinear resampling of an axis
    with pixel centres aligned (``align_corners=False``), clamped at the borders."""
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, pos - lo


def upsample_bilinear(fmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a ``(h, w)`` feature map to ``size = (H, W)`` (pixel centres
    aligned, like ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``)."""
    m = np.asarray(fmap, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise DataError(f"feature map: expected a 2-D (h, w) array, got shape {m.shape}")
    m = np.nan_to_num(m)
    height, width = int(size[0]), int(size[1])
    y0, y1, wy = _source_coords(height, m.shape[0])
    x0, x1, wx = _source_coords(width, m.shape[1])
    rows = m[y0] * (1.0 - wy)[:, None] + m[y1] * wy[:, None]
    return rows[:, x0] * (1.0 - wx)[None, :] + rows[:, x1] * wx[None, :]


def normalize_map(fmap: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """``fmap`` clipped at 0 and divided by ``vmax`` (default: its own maximum), in [0, 1].

    A map whose scale is not positive (a feature that never fires) becomes all zeros.
    """
    m = np.clip(np.nan_to_num(np.asarray(fmap, dtype=np.float64)), 0.0, None)
    scale = float(m.max()) if vmax is None else float(vmax)
    if not math.isfinite(scale) or scale <= 0.0:
        return np.zeros_like(m)
    return np.clip(m / scale, 0.0, 1.0)


def _check_maps(feature_maps: np.ndarray, ndim: int, name: str) -> np.ndarray:
    maps = np.asarray(feature_maps, dtype=np.float64)
    if maps.ndim != ndim:
        want = "(n_images, k, h, w)" if ndim == 4 else "(k, h, w)"
        raise DataError(f"{name}: expected shape {want}, got {maps.shape}")
    return maps


def _feature_label(
    feature_id: int, weight: float | None, concept_names: Mapping[int, str] | None, width: int
) -> str:
    """Column or legend label of a feature: ``+f17`` / ``-f3`` for a ternary weight, the value for
    any other weight, and the concept name (wrapped) on the next line when known."""
    if weight is None:
        head = f"f{feature_id}"
    elif abs(abs(float(weight)) - 1.0) < 1e-9 or float(weight) == 0.0:
        head = f"{'-' if float(weight) < 0 else '+'}f{feature_id}"
    else:
        head = f"f{feature_id} (w={float(weight):+.2g})"
    if concept_names and feature_id in concept_names:
        return head + "\n" + "\n".join(wrap_concept(concept_names[feature_id], width))
    return head


def wrap_concept(name: str, width: int, max_lines: int = 2) -> list[str]:
    """A concept name as at most ``max_lines`` lines of ``width`` characters; CUB attribute names
    (``has_crown_color::red``) are shown as words (``has crown color: red``)."""
    text = str(name).replace("::", ": ").replace("_", " ")
    return textwrap.wrap(text, width=width, max_lines=max_lines, placeholder="...") or [""]


# ----------------------------------------------------------------------------------------------
# overlays and masks
# ----------------------------------------------------------------------------------------------


def overlay_heatmap(
    image: np.ndarray,
    fmap: np.ndarray,
    *,
    gamma: float = DEFAULT_GAMMA,
    alpha: float = DEFAULT_ALPHA,
    vmax: float | None = None,
    grayscale: bool = True,
) -> np.ndarray:
    """A feature map overlaid on an image (supplement, "Visualization Techniques").

    The ``(h, w)`` map is upsampled bilinearly to the image size, normalised to [0, 1] by ``vmax``
    (default: the map's own maximum, see :func:`normalize_map`), gamma-corrected (``v ** gamma``),
    coloured with *jet* and alpha-blended over the (grayscale, as in Figure 1) image.

    Returns an ``(H, W, 3)`` uint8 array.
    """
    if gamma <= 0 or not 0.0 <= alpha <= 1.0:
        raise DataError(f"overlay_heatmap: need gamma > 0, alpha in [0, 1]; got {gamma}, {alpha}")
    rgb = to_grayscale(image) if grayscale else as_rgb_uint8(image)
    heat = normalize_map(upsample_bilinear(fmap, rgb.shape[:2]), vmax) ** gamma
    colour = colormaps["jet"](heat)[:, :, :3] * 255.0
    out = (1.0 - alpha) * rgb.astype(np.float64) + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def local_mask(
    feature_maps: np.ndarray, size: tuple[int, int], threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    """Which feature explains each pixel of the local explanation (paper, Figures 1 and 4).

    Each of the ``k`` maps is upsampled to ``size`` and divided by its own maximum on this image; a
    pixel is shown where any feature is above ``threshold`` (70 % in the paper) and gets the
    feature with the highest relative activation ("only the maximum feature per pixel").

    Returns an ``(H, W)`` int array of feature positions ``0..k-1``, ``-1`` where none is shown.
    """
    if not 0.0 <= threshold < 1.0:
        raise DataError(f"local_mask: threshold must be in [0, 1), got {threshold}")
    maps = _check_maps(feature_maps, 3, "feature_maps")
    labels = np.full((int(size[0]), int(size[1])), -1, dtype=np.int64)
    if maps.shape[0] == 0:
        return labels
    rel = np.stack([normalize_map(upsample_bilinear(m, size)) for m in maps])
    best = rel.argmax(axis=0)
    shown = rel.max(axis=0) > threshold
    labels[shown] = best[shown]
    return labels


def feature_colours(k: int) -> np.ndarray:
    """``k`` distinct RGB colours in [0, 1] (tab10, tab20 beyond 10 features)."""
    cmap = colormaps["tab10"] if k <= 10 else colormaps["tab20"]
    n = 10 if k <= 10 else 20
    return np.array([cmap(i % n)[:3] for i in range(k)])


def colour_mask(
    image: np.ndarray, labels: np.ndarray, colours: np.ndarray, *, alpha: float = 0.65
) -> np.ndarray:
    """The grayscale image with each labelled pixel blended towards its feature's colour."""
    grey = to_grayscale(image).astype(np.float64)
    if labels.shape != grey.shape[:2]:
        raise DataError(f"colour_mask: labels {labels.shape} do not match image {grey.shape[:2]}")
    out = grey.copy()
    shown = labels >= 0
    if shown.any():
        out[shown] = (1.0 - alpha) * grey[shown] + alpha * 255.0 * colours[labels[shown]]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DEFAULT_DPI)
    FigureCanvasAgg(fig)
    return fig


def _hide_axes(ax) -> None:  # noqa: ANN001 - matplotlib Axes
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def global_explanation(
    images: Sequence[np.ndarray],
    feature_maps: np.ndarray,
    feature_ids: Sequence[int],
    signs: Sequence[float],
    class_name: str,
    *,
    concept_names: Mapping[int, str] | None = None,
    gamma: float = DEFAULT_GAMMA,
    alpha: float = DEFAULT_ALPHA,
    normalize: Literal["feature", "map"] = "feature",
    cell_inches: float = 1.55,
) -> Figure:
    """Global explanation of one class (paper Figure 1; supplement Figures 13-36).

    A grid with one row per training image of the class: first the image itself, then one column
    per assigned feature, titled with the sign of its weight (``+f17`` / ``-f3``; the value when the
    weight is not ternary) and its concept name when known, showing the feature's map overlaid on
    the grayscale image (:func:`overlay_heatmap`).

    Args:
        images: ``n_images`` RGB images ``(H, W, 3)`` of the class.
        feature_maps: ``(n_images, k, h, w)`` maps of the ``k`` assigned features.
        feature_ids: the ``k`` feature indices (of the final layer's features).
        signs: the ``k`` weights W[c, j] (or just their signs).
        class_name: shown in the title.
        normalize: ``"feature"`` divides each feature's maps by its maximum over the shown images,
            ``"map"`` each map by its own maximum.
    """
    maps = _check_maps(feature_maps, 4, "feature_maps")
    n_images, k = maps.shape[:2]
    if len(images) != n_images or len(feature_ids) != k or len(signs) != k:
        raise DataError(
            f"global_explanation: {len(images)} images, {len(feature_ids)} feature ids and "
            f"{len(signs)} signs do not match feature_maps of shape {maps.shape}"
        )
    if n_images == 0:
        raise DataError(f"global_explanation: no images for class {class_name!r}")
    if normalize not in ("feature", "map"):
        raise DataError(f"global_explanation: normalize must be feature or map, not {normalize}")
    scales = np.clip(maps.reshape(n_images, k, -1).max(axis=(0, 2)), 0.0, None) if k else []
    n_cols = 1 + k
    has_concepts = bool(concept_names) and any(int(f) in concept_names for f in feature_ids)
    # vertical layout in inches: title, column titles, the grid, the colour bar with its label
    title_in, head_in, bar_in = 0.45, (0.75 if has_concepts else 0.3), 0.6
    grid_h = n_images * cell_inches
    fig = _new_figure(max(n_cols * cell_inches + 0.2, 4.6), title_in + head_in + grid_h + bar_in)
    height = fig.get_figheight()
    grid = fig.add_gridspec(
        n_images,
        n_cols,
        left=0.1 / fig.get_figwidth(),
        right=1.0 - 0.1 / fig.get_figwidth(),
        top=1.0 - (title_in + head_in) / height,
        bottom=bar_in / height,
        wspace=0.04,
        hspace=0.04,
    )
    n_pos = sum(1 for s in signs if float(s) > 0)
    n_neg = sum(1 for s in signs if float(s) < 0)
    fig.suptitle(
        f"{class_name}: {k} assigned features ({n_pos} +, {n_neg} -)",
        fontsize=12,
        fontweight="bold",
        y=1.0 - 0.1 / height,
        va="top",
    )
    for i, image in enumerate(images):
        rgb = as_rgb_uint8(image, f"images[{i}]")
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(rgb, interpolation="bilinear")
        _hide_axes(ax)
        if i == 0:
            ax.set_title("image", fontsize=10)
        for j in range(k):
            vmax = float(scales[j]) if normalize == "feature" else None
            over = overlay_heatmap(rgb, maps[i, j], gamma=gamma, alpha=alpha, vmax=vmax)
            ax = fig.add_subplot(grid[i, j + 1])
            ax.imshow(over, interpolation="bilinear")
            _hide_axes(ax)
            if i == 0:
                label = _feature_label(int(feature_ids[j]), float(signs[j]), concept_names, 16)
                colour = "#b2182b" if float(signs[j]) > 0 else "#2166ac"
                ax.set_title(label, fontsize=10, color=colour, fontweight="bold")
    if k == 0:
        fig.text(0.5, 0.5, "no feature is assigned to this class", ha="center", fontsize=10)
    # one colour bar for every overlay: what the jet colours mean after the gamma correction
    cax = fig.add_axes((0.25, 0.32 / height, 0.5, 0.1 / height))
    ramp = np.linspace(0.0, 1.0, 256)[None, :]
    cax.imshow(ramp**gamma, cmap="jet", aspect="auto", extent=(0, 1, 0, 1), vmin=0, vmax=1)
    cax.set_yticks([])
    cax.set_xticks([0, 0.25, 0.5, 0.75, 1])
    cax.tick_params(length=2, pad=1, labelsize=7)
    scale_word = "its max over these images" if normalize == "feature" else "its max on the image"
    cax.set_xlabel(f"feature activation / {scale_word}", fontsize=8, labelpad=2)
    return fig


def local_explanation(
    image: np.ndarray,
    feature_maps: np.ndarray,
    feature_ids: Sequence[int],
    contributions: Sequence[float],
    predicted_name: str,
    true_name: str | None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    concept_names: Mapping[int, str] | None = None,
    signs: Sequence[float] | None = None,
) -> Figure:
    """Local explanation of one test image (paper Figures 1 and 4).

    Three panels: the image; the grayscale image with every pixel where any feature exceeds
    ``threshold`` of its maximum on this image coloured by the strongest feature
    (:func:`local_mask`); and the contributions ``w_j * f_j`` of these features to the predicted
    class, as bars in the same colours, with the prediction and the true class in the title.

    Args:
        feature_maps: ``(k, h, w)`` maps of the features explained (e.g. those of the predicted
            class).
        contributions: the ``k`` values ``W[pred, j] * f_j`` (standardised feature times weight).
        signs: weights of the features, for the ``+``/``-`` labels; default: signs of the
            contributions.
        true_name: ``None`` for an image whose class is unknown (``qsenn explain``): the title
            then shows the prediction alone.
    """
    rgb = as_rgb_uint8(image)
    maps = _check_maps(feature_maps, 3, "feature_maps")
    k = maps.shape[0]
    contrib = np.asarray(contributions, dtype=np.float64).reshape(-1)
    if len(feature_ids) != k or contrib.shape[0] != k or (signs is not None and len(signs) != k):
        raise DataError(
            f"local_explanation: {len(feature_ids)} feature ids / {contrib.shape[0]} contributions"
            f" do not match feature_maps of shape {maps.shape}"
        )
    weights = (
        [float(s) for s in signs]
        if signs is not None
        else [1.0 if c >= 0 else -1.0 for c in contrib]
    )
    labels = local_mask(maps, rgb.shape[:2], threshold)
    colours = feature_colours(k)
    shown = colour_mask(rgb, labels, colours)
    names = [
        _feature_label(int(f), w, concept_names, 26)
        for f, w in zip(feature_ids, weights, strict=True)
    ]

    # layout in inches: two square image panels, then the bar chart with its labels on the left
    side, pad, title_in, legend_in = 3.0, 0.2, 0.75, 0.55
    label_in = 0.25 + 0.075 * max((len(line) for n in names for line in n.split("\n")), default=3)
    bars_in = 2.6
    bars_h = max(side, 0.5 * k)
    height = title_in + bars_h + legend_in
    fig = _new_figure(2 * side + 3 * pad + label_in + bars_in + 0.5, height)
    fw, fh = fig.get_figwidth(), fig.get_figheight()
    img_bottom = (height - title_in - side) / fh
    correct = predicted_name == true_name
    verdict = f"   |   true: {true_name}   ({'correct' if correct else 'wrong'})"
    fig.suptitle(
        f"predicted: {predicted_name}" + (verdict if true_name is not None else ""),
        fontsize=12,
        fontweight="bold",
        color="#1f2328" if true_name is None else "#1a7f37" if correct else "#b2182b",
        y=1.0 - 0.08 / fh,
        va="top",
    )
    ax = fig.add_axes((pad / fw, img_bottom, side / fw, side / fh))
    ax.imshow(rgb, interpolation="bilinear")
    ax.set_title("image", fontsize=10)
    _hide_axes(ax)
    ax = fig.add_axes(((side + 2 * pad) / fw, img_bottom, side / fw, side / fh))
    ax.imshow(shown, interpolation="bilinear")
    ax.set_title(f"pixels where a feature > {threshold:.0%} of its max", fontsize=10)
    _hide_axes(ax)
    present = set(np.unique(labels[labels >= 0]).tolist())
    handles = [
        Patch(facecolor=colours[j], edgecolor="none", label=f"f{int(feature_ids[j])}")
        for j in range(k)
        if j in present
    ]
    if handles:
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.01),
            ncol=min(5, k),
            fontsize=9,
            frameon=False,
            handlelength=1.0,
            columnspacing=0.8,
        )
    else:
        ax.text(
            0.5,
            -0.06,
            "no feature above the threshold",
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=9,
        )
    bar_left = 2 * side + 3 * pad + label_in
    ax = fig.add_axes((bar_left / fw, legend_in / fh, bars_in / fw, bars_h / fh))
    ypos = np.arange(k)[::-1]
    if k:
        ax.barh(ypos, contrib, color=colours, edgecolor="#333333", linewidth=0.5, height=0.7)
        ax.set_yticks(ypos)
        ax.set_yticklabels(names, fontsize=9)
        for tick, weight in zip(ax.get_yticklabels(), weights, strict=True):
            tick.set_color("#b2182b" if weight > 0 else "#2166ac")
        span = float(np.abs(contrib).max()) or 1.0
        lo, hi = min(0.0, float(contrib.min())), max(0.0, float(contrib.max()))
        ax.set_xlim(lo - 0.35 * span * (lo < 0), hi + 0.35 * span * (hi > 0 or lo == 0))
        for y, c in zip(ypos, contrib, strict=True):
            ax.text(
                c + (0.03 * span if c >= 0 else -0.03 * span),
                y,
                f"{c:+.2f}",
                va="center",
                ha="left" if c >= 0 else "right",
                fontsize=8,
            )
        ax.set_ylim(-0.6, k - 0.4)
    else:
        ax.set_yticks([])
    ax.axvline(0.0, color="#333333", linewidth=0.8)
    ax.set_title(f"contribution w·f to {predicted_name}\n(sum {contrib.sum():+.2f})", fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    return fig


def assignment_matrix(
    weight: np.ndarray,
    class_names: Sequence[str],
    feature_ids: Sequence[int],
    *,
    max_labels: int = 60,
) -> Figure:
    """The class-feature assignment matrix W of the final layer (ternary after eq. 3-5).

    Positive weights red, negative blue, zero white (diverging colour map, symmetric around 0).
    Tick labels name classes and features when there are at most ``max_labels`` of them on an
    axis; otherwise every n-th index is shown, so 200 x 50 stays readable.
    """
    w = np.nan_to_num(np.asarray(weight, dtype=np.float64))
    if w.ndim != 2:
        raise DataError(f"assignment_matrix: weight must be 2-D (n_c, n_f*), got {w.shape}")
    n_c, n_f = w.shape
    if len(class_names) != n_c or len(feature_ids) != n_f:
        raise DataError(
            f"assignment_matrix: {len(class_names)} class names and {len(feature_ids)} feature ids"
            f" do not match weight of shape {w.shape}"
        )
    vmax = float(np.abs(w).max()) or 1.0
    # cells of at most 0.16 in, the whole matrix at most ~10 in high and ~12 in wide
    cell = float(np.clip(min(0.16, 10.0 / max(n_c, 1), 12.0 / max(n_f, 1)), 0.03, 0.16))
    named_c = n_c <= max_labels and cell >= 0.1
    named_f = n_f <= max_labels and cell >= 0.1
    longest = max((len(str(c)) for c in class_names), default=4) if named_c else 4
    left_in = 0.45 + 0.05 * min(longest, 30)
    bottom_in = 0.45 + (0.35 if named_f else 0.15)
    width = left_in + n_f * cell + 1.2
    height = bottom_in + n_c * cell + 0.65
    fig = _new_figure(max(width, 4.5), max(height, 3.0))
    fw, fh = fig.get_figwidth(), fig.get_figheight()
    top_in = bottom_in + n_c * cell
    ax = fig.add_axes((left_in / fw, bottom_in / fh, n_f * cell / fw, n_c * cell / fh))
    blue_white_red = LinearSegmentedColormap.from_list("qsenn_bwr", _BLUE_WHITE_RED)
    ternary = bool(np.all(np.isin(np.round(w / vmax, 9), (-1.0, 0.0, 1.0))))
    if ternary:
        image = ax.imshow(
            np.sign(w),
            cmap=ListedColormap(_BLUE_WHITE_RED),
            vmin=-1.5,
            vmax=1.5,
            aspect="equal",
            interpolation="nearest",
        )
    else:
        image = ax.imshow(
            w,
            cmap=blue_white_red,
            norm=TwoSlopeNorm(0.0, -vmax, vmax),
            aspect="equal",
            interpolation="nearest",
        )
    # a thin grid between the cells keeps single assignments visible
    if cell >= 0.06:
        ax.set_xticks(np.arange(-0.5, n_f, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n_c, 1), minor=True)
        ax.grid(which="minor", color="#dddddd", linewidth=0.3)
        ax.tick_params(which="minor", length=0)

    def ticks(n: int, named: bool, labels: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        if named:
            return np.arange(n), [str(s) for s in labels]
        step = max(1, int(math.ceil(n / 20 / 5) * 5)) if n > 20 else 1
        idx = np.arange(0, n, step)
        return idx, [str(i) for i in idx]

    xt, xl = ticks(n_f, named_f, [f"f{int(f)}" for f in feature_ids])
    yt, yl = ticks(n_c, named_c, [str(c) for c in class_names])
    ax.set_xticks(xt)
    ax.set_xticklabels(xl, rotation=90 if named_f else 0, fontsize=6 if named_f else 7)
    ax.set_yticks(yt)
    ax.set_yticklabels(yl, fontsize=6 if named_c else 7)
    ax.tick_params(length=1.5, pad=1)
    ax.set_xlabel("feature" + ("" if named_f else " (position in the layer)"), fontsize=9)
    ax.set_ylabel("class" + ("" if named_c else " (index)"), fontsize=9)
    nnz = int(np.count_nonzero(w))
    fig.text(
        0.5,
        1.0 - 0.08 / fh,
        f"assignment matrix W: {n_c} classes x {n_f} features\n"
        f"{nnz} nonzero ({int((w > 0).sum())} +, {int((w < 0).sum())} -), "
        f"{nnz / max(n_c, 1):.2f} features/class",
        fontsize=9,
        ha="center",
        va="top",
    )
    bar_h = min(n_c * cell, 1.8)
    cax = fig.add_axes(
        ((left_in + n_f * cell + 0.2) / fw, (top_in - bar_h) / fh, 0.14 / fw, bar_h / fh)
    )
    bar = fig.colorbar(image, cax=cax)
    if ternary:
        bar.set_ticks([-1, 0, 1])
        bar.set_ticklabels([f"-{vmax:.2g}", "0", f"+{vmax:.2g}"])
    bar.ax.tick_params(labelsize=7)
    return fig


# ----------------------------------------------------------------------------------------------
# assignment helpers
# ----------------------------------------------------------------------------------------------


def assigned_features(weight_row: np.ndarray, max_features: int | None = None) -> list[int]:
    """Positions of the nonzero weights of one class, largest magnitude first (ties: lower
    position first), at most ``max_features`` of them (the "top features by magnitude" of the
    supplement's Figures 13-36)."""
    row = np.nan_to_num(np.asarray(weight_row, dtype=np.float64).reshape(-1))
    nonzero = np.flatnonzero(row)
    order = nonzero[np.lexsort((nonzero, -np.abs(row[nonzero])))]
    return [int(i) for i in order[:max_features]]


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


def png_bytes(fig: Figure, dpi: int = DEFAULT_DPI) -> bytes:
    """The figure as PNG bytes without metadata, so equal inputs give equal bytes."""
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="png",
        dpi=dpi,
        metadata={"Software": None},
        facecolor="white",
        bbox_inches="tight",
        pad_inches=0.12,
    )
    return buf.getvalue()


def save_png(
    fig_or_bytes: FigureOrBytes, path: str | os.PathLike[str], dpi: int = DEFAULT_DPI
) -> None:
    """Write a figure (or PNG bytes) to ``path`` atomically."""
    data = fig_or_bytes if isinstance(fig_or_bytes, bytes) else png_bytes(fig_or_bytes, dpi)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    log.info("wrote %s (%d bytes)", path, len(data))
