"""The feature atlas: a static, browsable page of every feature a Q-SENN uses.

``reports/atlas/index.html`` (no server, no scripts) holds one card per used feature (a selected
feature with at least one nonzero weight in W^Q) and one card per class, linked both ways:

- feature card: its CLIP concepts (``reports/alignment.csv``), the classes it is assigned to with
  the sign of the weight, its top-activating training images with the feature map overlaid
  (supplement, "Visualization Techniques") and the histogram of its activations over the
  training set with the mean-shift clusters that define a binary feature (supplement
  "Clustering", Figure 7; :func:`qsenn_core.metrics.mean_shift_1d`);
- class card: the global explanation of the class (paper Figure 1: its assigned features on a
  few of its training images, :func:`qsenn_core.explain.global_explanation`) and links to the
  cards of those features.

Activations are the final model's training features (``features/<final>.parquet``, selected
features in selection order); feature maps are recomputed for the images shown only. How many
images a card shows and the gamma of the overlays come from ``explain.n_images`` and
``explain.gamma``. Same inputs -> same bytes (PNG without metadata, HTML from sorted data).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from qsenn_core.concepts import alignment_rows, read_concept_names
from qsenn_core.data import DatasetIndex, ImageDataset, load_dataset
from qsenn_core.data.base import crop_box, load_rgb
from qsenn_core.device import prepare_model, resolve_device, to_device
from qsenn_core.errors import DataError
from qsenn_core.explain import (
    DEFAULT_DPI,
    assigned_features,
    feature_colours,
    global_explanation,
    overlay_heatmap,
    png_bytes,
)
from qsenn_core.feature_files import read_features
from qsenn_core.inference import QsennPredictor, display_image, predictor_from_model_file
from qsenn_core.io import atomic_path
from qsenn_core.metrics import MeanShift1D, mean_shift_1d
from qsenn_core.params import Params

log = logging.getLogger(__name__)

#: Bins of a feature's activation histogram.
HISTOGRAM_BINS = 40
#: Side in pixels of the images drawn in the atlas (thumbnails; the maps are upsampled to it).
THUMBNAIL_SIDE = 160
#: Images per forward pass when the feature maps of the shown images are computed.
BATCH_SIZE = 32
#: Legends list the clusters only up to this many (a dense feature can have dozens).
MAX_LEGEND_CLUSTERS = 6

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1f2328; background: #f6f8fa; line-height: 1.45; }
main { max-width: 1280px; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin: .4rem 0 .2rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de;
     padding-bottom: .3rem; }
h3 { font-size: 1.05rem; margin: 0 0 .4rem; }
nav a, .links a { color: #0969da; text-decoration: none; }
nav a { margin-right: 1rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1rem; }
.card { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: .8rem 1rem; }
.card:target { outline: 3px solid #0969da; }
.card img { max-width: 100%; height: auto; display: block; margin: .4rem 0; }
.pos { color: #b2182b; font-weight: 600; } .neg { color: #2166ac; font-weight: 600; }
.muted { color: #57606a; font-size: .88rem; }
ol.concepts { margin: .2rem 0 .4rem 1.2rem; padding: 0; font-size: .92rem; }
.links { font-size: .92rem; }
.links a { margin-right: .6rem; white-space: nowrap; }
dl.info { display: grid; grid-template-columns: max-content auto; gap: .1rem 1rem;
          font-size: .9rem; }
dl.info dt { color: #57606a; } dl.info dd { margin: 0; }
"""


# ----------------------------------------------------------------------------------------------
# what the cards show
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureCard:
    """One used feature: ``feature`` is its index in the backbone's feature vector, ``position``
    its column j in the sparse layer; ``classes`` are ``(class, weight)`` with weight != 0."""

    feature: int
    position: int
    concepts: tuple[tuple[str, float | None], ...]
    classes: tuple[tuple[int, float], ...]
    top_positions: tuple[int, ...]  #: index rows of the top-activating training images
    top_activations: tuple[float, ...]
    clusters: MeanShift1D


def used_positions(weight: np.ndarray) -> list[int]:
    """Columns j of W^Q with at least one nonzero weight (the features the model uses)."""
    return [int(j) for j in np.flatnonzero(np.any(np.asarray(weight) != 0, axis=0))]


def top_rows(values: np.ndarray, k: int) -> np.ndarray:
    """Rows of the ``k`` largest ``values``, largest first (ties: lower row first)."""
    v = np.asarray(values, dtype=np.float64)
    return np.lexsort((np.arange(len(v)), -v))[:k]


def concept_table(path: Path) -> dict[int, tuple[tuple[str, float | None], ...]]:
    """Feature index -> its ranked ``(concept, alignment)`` pairs from ``reports/alignment.csv``
    (the ``align`` stage's ``concept_k`` / ``alignment_k`` columns, eq. 13)."""
    read_concept_names(path)  # a missing or malformed table is one DataError line
    table: dict[int, tuple[tuple[str, float | None], ...]] = {}
    for row in alignment_rows(path):
        ranked = []
        k = 1
        while f"concept_{k}" in row:
            value = row.get(f"alignment_{k}")
            score = float(value) if isinstance(value, (int, float)) else None
            if str(row[f"concept_{k}"]):
                ranked.append((str(row[f"concept_{k}"]), score))
            k += 1
        table[int(row["feature"])] = tuple(ranked)
    return table


# ----------------------------------------------------------------------------------------------
# pictures
# ----------------------------------------------------------------------------------------------


def _figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DEFAULT_DPI)
    FigureCanvasAgg(fig)
    return fig


def histogram_figure(values: np.ndarray, clusters: MeanShift1D, title: str,
                     bins: int = HISTOGRAM_BINS) -> Figure:
    """Histogram of one feature over the training images, stacked by mean-shift cluster, with
    the cluster centres as dashed lines (supplement Figure 7: a binary feature has 2 clusters)."""
    v = np.asarray(values, dtype=np.float64)
    centers = np.asarray(clusters.centers, dtype=np.float64)
    nearest = np.abs(v[:, None] - centers[None, :]).argmin(axis=1)  # ties: earlier centre
    order = np.argsort(centers, kind="stable")  # colour the clusters from left to right
    colours = feature_colours(len(centers))
    edges = np.histogram_bin_edges(v, bins=bins)
    fig = _figure(4.6, 2.5)
    ax = fig.add_axes((0.12, 0.2, 0.84, 0.64))
    groups = [v[nearest == i] for i in order]
    labels = [f"centre {centers[i]:.2f}: {int(clusters.sizes[i])} images" for i in order]
    ax.hist(groups, bins=edges, stacked=True, color=[colours[r] for r in range(len(order))],
            label=labels, edgecolor="white", linewidth=0.3)
    for r, i in enumerate(order):
        ax.axvline(centers[i], color=colours[r], linestyle="--", linewidth=1.2)
    n = clusters.n_clusters
    ax.set_title(f"{title}: {n} mean-shift cluster{'s' if n != 1 else ''}"
                 + (" (binary)" if n == 2 else ""), fontsize=10)
    ax.set_xlabel("activation f on the training images", fontsize=8)
    ax.set_ylabel("images", fontsize=8)
    ax.tick_params(labelsize=7)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    if n <= MAX_LEGEND_CLUSTERS:
        ax.legend(fontsize=7, frameon=False)
    return fig


def top_images_figure(images: Sequence[np.ndarray], maps: np.ndarray, captions: Sequence[str],
                      *, gamma: float) -> Figure:
    """A row of training images with one feature's map overlaid (jet on grayscale, one scale
    for the row: the feature's maximum over these images)."""
    n = len(images)
    cell = 1.6
    fig = _figure(n * cell + 0.1, cell + 0.55)
    vmax = float(np.clip(np.asarray(maps, dtype=np.float64), 0.0, None).max()) if n else 0.0
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        ax = fig.add_axes(((0.05 + i * cell) / fig.get_figwidth(), 0.05 / fig.get_figheight(),
                           (cell - 0.08) / fig.get_figwidth(), (cell - 0.08) / fig.get_figheight()))
        ax.imshow(overlay_heatmap(image, maps[i], gamma=gamma, vmax=vmax or None),
                  interpolation="bilinear")
        ax.set_axis_off()
        ax.set_title(caption, fontsize=7, pad=2)
    return fig


# ----------------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _img(rel: str, alt: str) -> str:
    return f'<img src="{quote(rel)}" alt="{_esc(alt)}">'


def _signed(weight: float) -> tuple[str, str]:
    return ("+", "pos") if weight > 0 else ("−", "neg")


def feature_card_html(card: FeatureCard, class_names: Sequence[str], top_png: str,
                      hist_png: str) -> str:
    """The HTML card of one feature (anchor ``f<index>``), linking to its classes' cards."""
    if card.concepts:
        items = "".join(
            f"<li>{_esc(name)}" + (f' <span class="muted">({score:.3g})</span>'
                                   if score is not None else "") + "</li>"
            for name, score in card.concepts)
        concepts = f'<ol class="concepts">{items}</ol>'
    else:
        concepts = '<p class="muted">no CLIP concept (run the align stage)</p>'
    links = " ".join(
        f'<a class="{cls}" href="#class-{c}">{sign}{_esc(class_names[c])}</a>'
        for c, w in card.classes for sign, cls in [_signed(w)])
    n_pos = sum(1 for _, w in card.classes if w > 0)
    return (
        f'<section class="card" id="f{card.feature}">\n'
        f"<h3>feature f{card.feature}</h3>\n{concepts}\n"
        f'<div class="links">assigned to {len(card.classes)} classes ({n_pos} +, '
        f"{len(card.classes) - n_pos} −): {links}</div>\n"
        f'<p class="muted">top-activating training images</p>\n'
        f"{_img(top_png, f'top-activating images of f{card.feature}')}\n"
        f"{_img(hist_png, f'activation histogram of f{card.feature}')}\n"
        "</section>"
    )


def class_card_html(c: int, name: str, features: Sequence[tuple[int, float]],
                    concept_names: Mapping[int, str], global_png: str | None) -> str:
    """The HTML card of one class (anchor ``class-<c>``), linking to its features' cards."""
    links = " ".join(
        f'<a class="{cls}" href="#f{f}">{sign}f{f}'
        + (f" ({_esc(concept_names[f])})" if f in concept_names else "") + "</a>"
        for f, w in features for sign, cls in [_signed(w)])
    picture = (_img(global_png, f"global explanation of {name}") if global_png
               else '<p class="muted">no training image of this class</p>')
    return (f'<section class="card" id="class-{c}">\n<h3>{_esc(name)}</h3>\n'
            f'<div class="links">{len(features)} features: {links or "none"}</div>\n'
            f"{picture}\n</section>")


def atlas_html(title: str, info: Mapping[str, object], feature_cards: Sequence[str],
               class_cards: Sequence[str]) -> str:
    """The whole page: facts, then the feature cards, then the class cards."""
    facts = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in info.items())
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request: the page loads without errors
        f"<title>{_esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body><main>",
        f"<h1>{_esc(title)}</h1>", f'<dl class="info">{facts}</dl>',
        '<nav><a href="#features">Features</a><a href="#classes">Classes</a></nav>',
        f'<h2 id="features">Features ({len(feature_cards)})</h2>',
        '<p class="muted">Each used feature: its CLIP concepts, the classes it is assigned to '
        "(+ / − weight), the training images where it is strongest (feature map in jet over "
        "the grayscale image) and the histogram of its activations with the mean-shift "
        "clusters (2 clusters: a binary feature).</p>",
        '<div class="grid">', *feature_cards, "</div>",
        f'<h2 id="classes">Classes ({len(class_cards)})</h2>',
        '<p class="muted">Each class: the global explanation (its assigned features on some of '
        "its training images).</p>",
        '<div class="grid">', *class_cards, "</div>",
        "<footer class=\"muted\">Generated by the qsenn pipeline (Q-SENN, AAAI 2024).</footer>",
        "</main></body></html>",
    ]) + "\n"


# ----------------------------------------------------------------------------------------------
# building it
# ----------------------------------------------------------------------------------------------


def _thumbnail(index: DatasetIndex, position: int, crop: bool) -> np.ndarray:
    image: Image.Image = load_rgb(index.image_paths[position], index.name)
    if crop and index.bboxes is not None:
        image = crop_box(image, index.bboxes[position])
    return display_image(image, THUMBNAIL_SIDE)


@torch.no_grad()
def selected_maps(predictor: QsennPredictor, index: DatasetIndex, positions: Sequence[int], *,
                  crop: bool, num_workers: int, device: torch.device) -> dict[int, np.ndarray]:
    """Index row -> the (n_f*, h, w) maps of the selected features on that training image."""
    dataset = ImageDataset(index, "train", predictor.transform, crop_to_bbox=crop)
    row_of = {int(p): i for i, p in enumerate(dataset.positions)}
    subset = Subset(dataset, [row_of[int(p)] for p in positions])
    loader = DataLoader(subset, batch_size=BATCH_SIZE, shuffle=False, num_workers=num_workers)
    net = prepare_model(predictor.net, device).eval()
    selection = predictor.sparse_layer.selection.to(device)  # type: ignore[union-attr]
    maps: dict[int, np.ndarray] = {}
    for images, _, rows in tqdm(loader, desc="atlas: feature maps", unit="batch", leave=False):
        out = net(to_device(images, device)).feature_maps[:, selection].float().cpu().numpy()
        maps.update({int(r): m for r, m in zip(rows.tolist(), out, strict=True)})
    return maps


def build_atlas(params: Params, model_path: Path, features_path: Path, out_dir: Path,
                concepts: Path | None = None) -> Path:
    """Write the atlas of the final model to ``out_dir`` (atomically) and return its index.html.

    Args:
        model_path: the final model (``models/<final>.pt``); its own metadata is used when the
            file has some, otherwise ``params``.
        features_path: its features (``features/<final>.parquet``, training rows used).
        concepts: the ``align`` stage's ``reports/alignment.csv`` (None: no concept names).
    """
    index = load_dataset(params.data.name, params.data.root)
    table = concept_table(Path(concepts)) if concepts is not None else {}
    best = {f: ranked[0][0] for f, ranked in table.items() if ranked}
    predictor = predictor_from_model_file(model_path, params=params, index=index,
                                          concept_names=best)
    head = predictor.sparse_layer
    if head is None:
        raise DataError(f"{model_path}: not a Q-SENN model (it has no sparse layer)")
    if predictor.metadata.n_classes != index.n_classes:
        raise DataError(f"{model_path}: {predictor.metadata.n_classes} classes, but the "
                        f"{index.name} dataset has {index.n_classes}")
    f_train, _, image_ids = read_features(features_path, "train")
    if f_train.shape[1] != head.n_selected:
        raise DataError(f"{features_path}: {f_train.shape[1]} features, but {model_path} uses "
                        f"{head.n_selected}; both must be of the final model")
    row_of_id = {int(i): p for p, i in enumerate(index.image_ids)}
    missing = [int(i) for i in image_ids if int(i) not in row_of_id]
    if missing:
        raise DataError(f"{features_path}: image id {missing[0]} is not in the {index.name} "
                        f"dataset ({len(missing)} unknown ids)")
    rows = np.array([row_of_id[int(i)] for i in image_ids], dtype=np.int64)
    weight = head.weight.detach().cpu().numpy()
    selection = [int(j) for j in head.selection.cpu()]
    n_show, gamma, crop = params.explain.n_images, params.explain.gamma, params.data.crop_to_bbox

    cards = []
    for j in tqdm(used_positions(weight), desc="atlas: clusters", unit="feature"):
        top = top_rows(f_train[:, j], n_show)
        cards.append(FeatureCard(
            feature=selection[j], position=j, concepts=table.get(selection[j], ()),
            classes=tuple((int(c), float(weight[c, j])) for c in np.flatnonzero(weight[:, j])),
            top_positions=tuple(int(rows[r]) for r in top),
            top_activations=tuple(float(f_train[r, j]) for r in top),
            clusters=mean_shift_1d(f_train[:, j])))
    train_rows = index.split("train")
    members = {c: [int(p) for p in train_rows if index.labels[p] == c][:n_show]
               for c in range(index.n_classes)}
    needed = sorted({p for card in cards for p in card.top_positions}
                    | {p for ps in members.values() for p in ps})
    maps = selected_maps(predictor, index, needed, crop=crop,
                         num_workers=params.data.num_workers,
                         device=resolve_device(params.device))
    thumbs = {p: _thumbnail(index, p, crop)
              for p in tqdm(needed, desc="atlas: images", unit="img", leave=False)}

    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        (tmp / "features").mkdir(parents=True)
        (tmp / "classes").mkdir()
        feature_html = []
        for card in tqdm(cards, desc="atlas: features", unit="feature"):
            name = f"features/f{card.feature:04d}"
            captions = [f"{index.class_names[int(index.labels[p])][:22]}\nf = {a:.3g}"
                        for p, a in zip(card.top_positions, card.top_activations, strict=True)]
            top_fig = top_images_figure([thumbs[p] for p in card.top_positions],
                                        np.stack([maps[p][card.position]
                                                  for p in card.top_positions]),
                                        captions, gamma=gamma)
            (tmp / f"{name}_top.png").write_bytes(png_bytes(top_fig))
            hist_fig = histogram_figure(f_train[:, card.position], card.clusters,
                                        f"f{card.feature}")
            (tmp / f"{name}_hist.png").write_bytes(png_bytes(hist_fig))
            feature_html.append(feature_card_html(card, index.class_names, f"{name}_top.png",
                                                  f"{name}_hist.png"))
        class_html = []
        for c in tqdm(range(index.n_classes), desc="atlas: classes", unit="class"):
            assigned = assigned_features(weight[c])
            png = None
            if assigned and members[c]:
                png = f"classes/class_{c:03d}.png"
                figure = global_explanation(
                    [thumbs[p] for p in members[c]],
                    np.stack([maps[p][assigned] for p in members[c]]),
                    [selection[j] for j in assigned], [float(weight[c, j]) for j in assigned],
                    index.class_names[c], gamma=gamma, concept_names=best)
                (tmp / png).write_bytes(png_bytes(figure))
            class_html.append(class_card_html(
                c, index.class_names[c], [(selection[j], float(weight[c, j])) for j in assigned],
                best, png))
        info = {"model": str(model_path), "dataset": index.name,
                "backbone": predictor.metadata.arch, "classes": index.n_classes,
                "used features": len(cards), "selected features": head.n_selected,
                "binary features (2 clusters)": sum(c.clusters.n_clusters == 2 for c in cards)}
        (tmp / "index.html").write_text(
            atlas_html("Q-SENN feature atlas", info, feature_html, class_html), encoding="utf-8")
    log.info("wrote the atlas of %d features and %d classes to %s", len(cards),
             index.n_classes, out_dir)
    return out_dir / "index.html"

