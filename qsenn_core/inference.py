"""Predict and explain new images with a trained Q-SENN: :class:`QsennPredictor`.

The predictor wraps the pipeline's model (:class:`qsenn_core.backbones.QSENN` with its sparse
layer, :mod:`qsenn_core.sparse_layer`) with what a model file says about itself
(:class:`qsenn_core.model_file.ModelMetadata`: preprocessing and class names) and the features'
CLIP concept names. It is what ``qsenn predict`` / ``qsenn explain`` run and what
``qsenn_core.load(DIR)`` returns for an exported model.

The decision of a Q-SENN is linear in its standardized selected features (paper eq. 1 with the
sparse layer's standardization): for the predicted class c,

    logit_c = b_c + sum_j W^Q[c, j] * (f_j - mean_j) / std_j,

so each used feature j (``W^Q[c, j] != 0``, about 5 per class) contributes
``W^Q[c, j] * (f_j - mean_j) / std_j`` and the contributions plus the bias are the logit
(:class:`Decision`). The local explanation draws the pixels where one of these features exceeds
70 % of its maximum on the image (paper Figures 1 and 4, supplement "Visualization Techniques").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor, nn
from torchvision import transforms as T

from qsenn_core.backbones import QSENN, build_model
from qsenn_core.data import DatasetIndex, load_dataset
from qsenn_core.data.base import one_line
from qsenn_core.errors import DataError, QsennError
from qsenn_core.explain import DEFAULT_THRESHOLD, assigned_features, local_explanation
from qsenn_core.model_file import (
    ModelMetadata,
    load_state_into,
    metadata_from_params,
    read_model_file,
)
from qsenn_core.params import Params
from qsenn_core.sparse_layer import STD_FLOOR, SparseLayer

log = logging.getLogger(__name__)

#: An image is a path to an image file or a decoded PIL image.
ImageLike = str | os.PathLike[str] | Image.Image

#: PIL modes that convert to 8-bit RGB without losing what the image shows (alpha is dropped).
#: 16-bit, 32-bit integer and float images ("I;16", "I", "F") would be clipped to 255.
RGB_MODES: frozenset[str] = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)
#: Shortest side an input image may have: below it there is nothing to explain.
MIN_IMAGE_SIDE = 16
#: Longest / shortest side at most: the centre crop of the test transform keeps only
#: 1 / ratio of a more elongated image.
MAX_ASPECT_RATIO = 10.0
#: The image in a local explanation is drawn with at least this many pixels a side (the model's
#: input can be as small as 64 px; the feature maps are upsampled to the drawn size anyway).
DISPLAY_SIDE = 256
#: Number of classes ranked by default (``qsenn predict``, the decision JSON).
DEFAULT_TOP_K = 5


# ----------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------


def read_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open, check and fully decode an image file as 8-bit RGB.

    EXIF orientation is applied (phone photos). One-line :class:`DataError` naming the file when
    it is missing, not an image, truncated, of a mode without an 8-bit RGB meaning
    (:data:`RGB_MODES`), smaller than :data:`MIN_IMAGE_SIDE` or more elongated than
    :data:`MAX_ASPECT_RATIO`.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an image file")
    try:
        with Image.open(path) as img:
            check_image(img, str(path))
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({one_line(exc)})") from None


def check_image(image: Image.Image, source: str) -> None:
    """Raise a one-line :class:`DataError` when ``image`` cannot be explained (mode or size)."""
    if image.mode not in RGB_MODES:
        raise DataError(f"{source}: image mode {image.mode} (16-bit, 32-bit or float pixels) is "
                        "not supported; save it as an 8-bit RGB or grayscale image")
    width, height = image.size
    if min(width, height) < MIN_IMAGE_SIDE:
        raise DataError(f"{source}: {width}x{height} px is too small (the shorter side must be "
                        f"at least {MIN_IMAGE_SIDE} px)")
    ratio = max(width, height) / min(width, height)
    if ratio > MAX_ASPECT_RATIO:
        raise DataError(f"{source}: {width}x{height} px is too elongated (aspect ratio "
                        f"{ratio:.0f}:1, at most {MAX_ASPECT_RATIO:.0f}:1; the centre crop would "
                        f"keep {100 / ratio:.0f}% of it); crop it first")


def as_rgb_image(image: ImageLike, source: str = "image") -> Image.Image:
    """A path is read with :func:`read_image`; a PIL image is checked and converted to RGB."""
    if isinstance(image, Image.Image):
        check_image(image, source)
        return image.convert("RGB")
    return read_image(image)


def inference_transform(image_size: int, mean: Sequence[float],
                        std: Sequence[float]) -> T.Compose:
    """The test transform of the pipeline: Resize(s) (shorter side) -> CenterCrop(s) -> ToTensor
    -> Normalize(mean, std) (supplement, Implementation Details); built from the model's
    metadata so that it needs no dataset name."""
    return T.Compose([T.Resize(image_size), T.CenterCrop(image_size), T.ToTensor(),
                      T.Normalize(tuple(mean), tuple(std))])


def display_image(image: Image.Image, side: int) -> np.ndarray:
    """The region the test transform keeps (the centre square after the resize of the shorter
    side), as ``side`` x ``side`` uint8 RGB for drawing feature maps over it."""
    return np.asarray(T.CenterCrop(side)(T.Resize(side)(image)))


# ----------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassScore:
    """One ranked class of a prediction."""

    rank: int
    index: int
    name: str
    probability: float
    logit: float

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object (``class`` is the 0-based index)."""
        return {"rank": self.rank, "class": self.index, "name": self.name,
                "probability": self.probability, "logit": self.logit}


@dataclass(frozen=True)
class FeatureContribution:
    """How one used feature j enters the predicted class's logit (eq. 1).

    ``activation`` is f_j, the global average of the feature map; ``standardized`` is
    (f_j - mean_j) / std_j, what W^Q multiplies; ``contribution`` = ``weight`` * ``standardized``.
    """

    feature: int
    concept: str | None
    activation: float
    mean: float
    std: float
    standardized: float
    weight: float
    contribution: float

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object."""
        return {"feature": self.feature, "concept": self.concept, "activation": self.activation,
                "mean": self.mean, "std": self.std, "standardized": self.standardized,
                "weight": self.weight, "contribution": self.contribution}


@dataclass(frozen=True)
class Decision:
    """The decision for the predicted class: logit = bias + sum of the contributions (eq. 1)."""

    predicted: ClassScore
    bias: float
    features: tuple[FeatureContribution, ...]
    top_k: tuple[ClassScore, ...]

    @property
    def total(self) -> float:
        """bias + sum of the contributions, in float64: equals the logit up to float32 rounding."""
        return self.bias + float(np.sum([f.contribution for f in self.features], dtype=np.float64))

    def to_json(self) -> dict[str, Any]:
        """The decision as a JSON object (see ``qsenn explain``)."""
        return {
            "predicted": self.predicted.to_json(),
            "bias": self.bias,
            "features": [f.to_json() for f in self.features],
            "bias_plus_contributions": self.total,
            "equation": "logit = bias + sum(contribution), contribution = weight * standardized, "
                        "standardized = (activation - mean) / std",
            "top_k": [c.to_json() for c in self.top_k],
        }


@dataclass
class LocalExplanation:
    """The local explanation of one image: the decision and what the figure needs."""

    decision: Decision
    image: np.ndarray  #: the region the model saw, uint8 RGB (drawn in the figure)
    feature_maps: np.ndarray  #: (k, h, w) maps of the used features, in ``decision`` order
    threshold: float
    concept_names: Mapping[int, str] = field(default_factory=dict)

    def figure(self) -> Figure:
        """Paper Figures 1/4: pixels above ``threshold`` of a feature's maximum, coloured by the
        strongest feature, and the contributions with each feature's sign and concept name."""
        d = self.decision
        return local_explanation(
            self.image, self.feature_maps, [f.feature for f in d.features],
            [f.contribution for f in d.features], d.predicted.name, None,
            threshold=self.threshold, concept_names=dict(self.concept_names),
            signs=[f.weight for f in d.features])

    def to_json(self) -> dict[str, Any]:
        """The decision JSON plus the threshold of the picture."""
        return {**self.decision.to_json(), "threshold": self.threshold}


# ----------------------------------------------------------------------------------------------
# the predictor
# ----------------------------------------------------------------------------------------------


def _ranked(logits: Tensor, class_names: Sequence[str], k: int) -> tuple[ClassScore, ...]:
    """The ``k`` most probable classes of one logit vector (ties: lower index first)."""
    logits64 = logits.detach().double().cpu()
    probs = torch.softmax(logits64, dim=0)
    order = sorted(range(len(class_names)), key=lambda c: (-float(probs[c]), c))[:k]
    return tuple(ClassScore(rank=r, index=c, name=class_names[c], probability=float(probs[c]),
                            logit=float(logits[c])) for r, c in enumerate(order, start=1))


def model_from_state(metadata: ModelMetadata, state: Mapping[str, Tensor], source: str) -> QSENN:
    """The model ``metadata`` describes, with the weights of ``state`` (dense or fine-tuned)."""
    try:
        model = build_model(metadata.arch, metadata.n_classes, width=metadata.width,
                            dropout=metadata.dropout, reduced_strides=metadata.reduced_strides)
    except QsennError as err:
        raise DataError(f"{source}: {err}") from None
    load_state_into(model, state, source)
    return model


class QsennPredictor(nn.Module):
    """A trained Q-SENN ready for new images: ``forward(x) -> logits``, :meth:`predict`,
    :meth:`explain`.

    Args:
        net: the pipeline's model (``models/*.pt`` loaded into :func:`build_model`), dense or
            with its sparse layer.
        metadata: architecture, preprocessing and class names of ``net``.
        concept_names: feature index -> CLIP concept (``reports/alignment.csv``), shown in the
            explanations.
        source: where the model came from, for error messages.
    """

    def __init__(self, net: QSENN, metadata: ModelMetadata,
                 concept_names: Mapping[int, str] | None = None, *, source: str = "model") -> None:
        super().__init__()
        if net.n_classes != metadata.n_classes:
            raise DataError(f"{source}: the model has {net.n_classes} outputs but "
                            f"{metadata.n_classes} class names")
        self.net = net
        self.metadata = metadata
        self.concept_names: dict[int, str] = dict(concept_names or {})
        self.source = source
        self.transform = inference_transform(metadata.image_size, metadata.mean, metadata.std)
        self.eval()  # ready for inference: dropout off, BatchNorm on its running statistics

    @property
    def class_names(self) -> tuple[str, ...]:
        """One name per class, in label order."""
        return self.metadata.class_names

    @property
    def sparse_layer(self) -> SparseLayer | None:
        """The sparse final layer W^Q (None for a dense model)."""
        head = self.net.head
        return head if isinstance(head, SparseLayer) else None

    @property
    def device(self) -> torch.device:
        """The device the weights are on."""
        return next(self.net.parameters()).device

    def forward(self, images: Tensor) -> Tensor:
        """Logits (B, n_classes) of a batch of preprocessed images (B, 3, s, s)."""
        return self.net(images).logits

    def preprocess(self, image: ImageLike) -> Tensor:
        """One image as the model's input tensor (3, s, s), on CPU."""
        return self.transform(as_rgb_image(image))

    @torch.no_grad()
    def predict(self, image: ImageLike, k: int = DEFAULT_TOP_K) -> tuple[ClassScore, ...]:
        """The ``k`` most probable classes of ``image`` (softmax over the logits)."""
        if k < 1:
            raise QsennError(f"top-k: must be >= 1, got {k}")
        logits = self(self.preprocess(image)[None].to(self.device))[0]
        return _ranked(logits.float(), self.class_names, k)

    @torch.no_grad()
    def explain(self, image: ImageLike, *, threshold: float = DEFAULT_THRESHOLD,
                k: int = DEFAULT_TOP_K) -> LocalExplanation:
        """The local explanation of ``image`` for its predicted class.

        Raises :class:`QsennError` for a dense model: only a Q-SENN's sparse layer has the few
        used features per class this explanation shows.
        """
        head = self.sparse_layer
        if head is None:
            raise QsennError(f"{self.source}: a dense model has no sparse layer to explain; "
                             "use a fine-tuned Q-SENN model (models/iter_<i>.pt)")
        if not 0.0 <= threshold < 1.0:
            raise QsennError(f"threshold: must be in [0, 1), got {threshold}")
        rgb = as_rgb_image(image)
        out = self.net(self.transform(rgb)[None].to(self.device))
        logits = out.logits[0].float().cpu()
        ranked = _ranked(logits, self.class_names, max(1, k))
        predicted = ranked[0]
        c = predicted.index
        standardized = head.standardize(out.features).float().cpu()[0]
        features = out.features.float().cpu()[0]
        weight = head.weight.detach().float().cpu()
        selection = [int(j) for j in head.selection.cpu()]
        mean = head.mean.detach().float().cpu()
        std = head.std.detach().abs().clamp_min(STD_FLOOR).float().cpu()
        used = assigned_features(weight[c].numpy())
        contributions = tuple(
            FeatureContribution(
                feature=selection[j], concept=self.concept_names.get(selection[j]),
                activation=float(features[selection[j]]), mean=float(mean[j]),
                std=float(std[j]), standardized=float(standardized[j]),
                weight=float(weight[c, j]),
                contribution=float(np.float64(weight[c, j]) * np.float64(standardized[j])))
            for j in used)
        decision = Decision(predicted=predicted, bias=float(head.bias[c]),
                            features=contributions, top_k=ranked)
        maps = out.feature_maps[0, head.selection].float().cpu().numpy()[used]
        return LocalExplanation(decision=decision,
                                image=display_image(rgb, max(self.metadata.image_size,
                                                             DISPLAY_SIDE)),
                                feature_maps=maps, threshold=threshold,
                                concept_names=self.concept_names)


def predictor_from_model_file(path: str | os.PathLike[str], *, params: Params | None = None,
                              index: DatasetIndex | None = None,
                              concept_names: Mapping[int, str] | None = None) -> QsennPredictor:
    """A :class:`QsennPredictor` of a pipeline model file (``models/*.pt``), on CPU.

    The file's own metadata is used when it has any; otherwise ``params`` (the run's
    params.yaml) gives the architecture and preprocessing and its dataset (``index``, read from
    ``params.data`` when not given) the class names. Neither: one :class:`QsennError` line
    saying what to pass.
    """
    state, metadata = read_model_file(path)
    if metadata is None:
        if params is None:
            raise QsennError(f"{path}: the model file carries no metadata (architecture, "
                             "classes, preprocessing); pass --params with the params.yaml of "
                             "the run that trained it")
        if index is None:
            index = load_dataset(params.data.name, params.data.root)
        metadata = metadata_from_params(params, index)
        log.info("%s: no metadata in the file; using the params and %s's class names",
                 path, params.data.name)
    net = model_from_state(metadata, state, str(path))
    return QsennPredictor(net, metadata, concept_names, source=str(path))
