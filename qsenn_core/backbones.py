"""Backbones of the Q-SENN model: image -> feature maps M -> features f -> logits.

Every architecture is wrapped in :class:`QSENN`, which exposes the quantities the method needs
(paper, Method): the last feature maps ``M`` (``n_f x h x w``, after ReLU), the feature vector
``f`` (global average of ``M``) and the logits ``y = W f + b`` of the final layer, with dropout on
``f`` before the final layer (supplement, Implementation Details: dropout 0.2 on the features).

Architectures: torchvision ``resnet50`` (the paper's main model), ``densenet121``,
``inception_v3`` (299 px in the paper), ``resnet18`` and ``small_cnn``, a compact residual CNN
sized for 64 px images on a 2-core CPU.

``reduced_strides`` sets the stride of the last two stages to 1 (supplement: "we set the strides
of the final 2 blocks to 1, following PIP-Net", used for the comparison with prototype models).

``model.weights`` is ``none`` (random init, deterministic given ``torch.manual_seed``), a
torchvision weights name (the paper uses ResNet50 ``IMAGENET1K_V1``, not V2: the V2 features are
already class detectors, section Grounding) or a local state-dict file.

Trunks keep torchvision's module names (``trunk.layer4...``), so a bare torchvision state dict
loads by prefixing ``trunk.``; its classifier (``fc``/``classifier``/``AuxLogits``) is dropped.
DenseNet's final ReLU (``F.relu`` in torchvision's forward) is an explicit module here.
Inception-v3 is built with ``aux_logits=False, transform_input=False`` and ends before its
avgpool; its trunk starts with an :class:`InputTransform` that is the identity, except when
torchvision's weights are loaded: those expect [-1, 1] inputs, and torchvision then sets
``transform_input=True`` (ImageNet-normalized input -> [-1, 1]). The transform is a pair of
buffers, so it is saved and restored with every checkpoint.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

from qsenn_core.errors import QsennError
from qsenn_core.io import looks_like_path
from qsenn_core.model_file import METADATA_KEY
from qsenn_core.params import ARCH_WIDTHS

log = logging.getLogger(__name__)

#: Architectures built from torchvision; everything else in ``ARCH_WIDTHS`` is defined here.
TORCHVISION_ARCHS: tuple[str, ...] = ("resnet50", "resnet18", "densenet121", "inception_v3")

#: Top-level torchvision children that are not part of the trunk (pooling and classifiers).
_DROPPED_CHILDREN: dict[str, frozenset[str]] = {
    "resnet50": frozenset({"avgpool", "fc"}),
    "resnet18": frozenset({"avgpool", "fc"}),
    "densenet121": frozenset({"classifier"}),
    "inception_v3": frozenset({"AuxLogits", "avgpool", "dropout", "fc"}),
}

#: Key prefixes of a bare torchvision state dict that belong to the dropped classifiers.
_CLASSIFIER_PREFIXES: tuple[str, ...] = ("fc.", "classifier.", "AuxLogits.")

#: torchvision's Inception-v3 weights expect inputs in [-1, 1]; this maps ImageNet-normalized
#: inputs there (what torchvision's ``transform_input=True`` does for its pretrained weights).
_IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
_IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Old torchvision DenseNet checkpoints name layers ``norm.1`` instead of ``norm1``.
_DENSENET_LEGACY_KEY = re.compile(r"\.(norm|relu|conv)\.([12])\.")

#: How many offending keys a shape/key error message lists before summarising the rest.
_KEYS_SHOWN = 3


class ModelOutput(NamedTuple):
    """What every :class:`QSENN` forward returns."""

    logits: Tensor  #: (B, n_classes)
    feature_maps: Tensor  #: M, (B, n_f, h, w), after ReLU
    features: Tensor  #: f, (B, n_f), global average of M (before dropout)


# --------------------------------------------------------------------------- the model


class QSENN(nn.Module):
    """Backbone trunk + dropout + final layer: ``y = head(dropout(mean_hw(trunk(x))))``.

    ``head`` is an ``nn.Linear`` for the dense model; the sparse stages replace it by a frozen
    module with the same call signature that exposes ``.weight`` (used by eq. 2).
    """

    def __init__(
        self, trunk: nn.Module, n_features: int, n_classes: int, dropout: float, arch: str
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.dropout = nn.Dropout(dropout)
        self.head: nn.Module = nn.Linear(n_features, n_classes)
        self.n_features = n_features
        self.n_classes = n_classes
        self.arch = arch

    def forward(self, x: Tensor) -> ModelOutput:
        """Return logits, feature maps M and the feature vector f for a batch of images."""
        feature_maps = self.trunk(x)
        features = feature_maps.mean(dim=(2, 3))
        logits = self.head(self.dropout(features))
        return ModelOutput(logits=logits, feature_maps=feature_maps, features=features)

    def head_weight(self) -> Tensor:
        """The ``(n_classes, n_f)`` final-layer weight W that the Feature Diversity Loss reads."""
        weight = self.head.weight
        if not isinstance(weight, Tensor):
            raise TypeError(f"{type(self.head).__name__} has no tensor .weight")
        return weight

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters of the trunk (trained with ``lr_backbone``)."""
        return list(self.trunk.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the final layer (trained with ``lr_head``)."""
        return list(self.head.parameters())


# --------------------------------------------------------------------------- small_cnn


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers, an identity or 1x1-projection shortcut, ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride)
        self.conv2 = _conv_bn(c_out, c_out, 3, 1)
        self.shortcut: nn.Module = (
            nn.Identity() if c_in == c_out and stride == 1 else _conv_bn(c_in, c_out, 1, stride)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """conv-BN-ReLU, conv-BN, add the shortcut, ReLU."""
        out = self.conv2(self.relu(self.conv1(x)))
        return self.relu(out + self.shortcut(x))


def small_cnn_trunk(width: int = 128, reduced_strides: bool = False) -> nn.Sequential:
    """A compact ResNet-style trunk for 64 px images on CPU: 64x64 -> ``width`` x 8x8 maps.

    stem (3->16, /2) -> stage1 (16->32, /2) -> stage2 (32->64, /2, + one 64->64 block)
    -> stage3 (64->width, /1). With ``reduced_strides`` the last two stages (stage2, stage3)
    run at stride 1, so 64 px gives 16x16 maps.
    """
    stride = 1 if reduced_strides else 2
    trunk = nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(_conv_bn(3, 16, 3, 2), nn.ReLU(inplace=True)),
            stage1=ResidualBlock(16, 32, stride=2),
            stage2=nn.Sequential(ResidualBlock(32, 64, stride=stride), ResidualBlock(64, 64)),
            stage3=ResidualBlock(64, width, stride=1),
        )
    )
    for module in trunk.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return trunk


# --------------------------------------------------------------------------- torchvision trunks


class InputTransform(nn.Module):
    """Per-channel ``x * scale + shift``; identity unless torchvision Inception weights are used.

    The values are buffers, so they travel with every checkpoint of the model.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(3))
        self.register_buffer("shift", torch.zeros(3))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the per-channel affine map."""
        return x * self.scale[:, None, None] + self.shift[:, None, None]


def inception_input_transform() -> dict[str, Tensor]:
    """``scale``/``shift`` that map ImageNet-normalized images to the [-1, 1] inputs of
    torchvision's Inception-v3 weights (torchvision's ``transform_input=True``)."""
    std = torch.tensor(_IMAGENET_STD)
    mean = torch.tensor(_IMAGENET_MEAN)
    return {"scale": std / 0.5, "shift": (mean - 0.5) / 0.5}


def _torchvision_trunk(arch: str) -> nn.Sequential:
    """The torchvision model up to its last ReLU'd feature maps, keeping torchvision's names."""
    kwargs: dict[str, object] = {"num_classes": 1}  # the classifier is dropped: keep it tiny
    if arch == "inception_v3":
        kwargs.update(aux_logits=False, transform_input=False, init_weights=True)
    net = torchvision.models.get_model(arch, weights=None, **kwargs)
    drop = _DROPPED_CHILDREN[arch]
    children: OrderedDict[str, nn.Module] = OrderedDict()
    if arch == "inception_v3":
        children["input_transform"] = InputTransform()
    for name, child in net.named_children():
        if name not in drop:
            children[name] = child
    if arch == "densenet121":
        # torchvision applies F.relu after ``features`` (ending in norm5) inside forward()
        children["relu"] = nn.ReLU(inplace=True)
    return nn.Sequential(children)


def _reduce_strides(arch: str, trunk: nn.Module) -> None:
    """Set the stride of the last two stages to 1 (supplement, prototype comparison)."""
    if arch in ("resnet50", "resnet18"):
        for stage in (trunk.layer3, trunk.layer4):
            for module in stage[0].modules():  # the strided conv and the downsample projection
                if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                    module.stride = (1, 1)
    elif arch == "densenet121":  # the last two transitions' 2x2 average pools
        trunk.features.transition2.pool = nn.Identity()
        trunk.features.transition3.pool = nn.Identity()
    else:
        raise QsennError(f"model.reduced_strides: not supported for {arch}")


def _build_trunk(arch: str, width: int, reduced_strides: bool) -> nn.Module:
    if arch == "small_cnn":
        return small_cnn_trunk(width, reduced_strides)
    if reduced_strides and arch == "inception_v3":
        # Mixed_6a/Mixed_7a downsample with a max-pool whose stride is fixed inside torchvision's
        # forward(); their stride cannot be changed without rewriting those blocks.
        raise QsennError("model.reduced_strides: not supported for inception_v3")
    trunk = _torchvision_trunk(arch)
    if reduced_strides:
        _reduce_strides(arch, trunk)
    return trunk


# --------------------------------------------------------------------------- public helpers


def _check_arch(arch: str) -> None:
    if arch not in ARCH_WIDTHS:
        raise QsennError(
            f"model.arch: unknown architecture {arch!r} (known: {', '.join(ARCH_WIDTHS)})"
        )


def feature_width(arch: str, width: int) -> int:
    """n_f of ``arch``: fixed for torchvision backbones, ``width`` for ``small_cnn``."""
    _check_arch(arch)
    known = ARCH_WIDTHS[arch]
    return width if known is None else known


@functools.lru_cache(maxsize=64)
def feature_map_size(arch: str, image_size: int, reduced_strides: bool = False) -> tuple[int, int]:
    """(h, w) of the feature maps M for square ``image_size`` inputs (shape-only, no compute).

    Raises :class:`QsennError` when the architecture cannot take the size.
    """
    _check_arch(arch)
    with torch.device("meta"):
        trunk = _build_trunk(arch, 8, reduced_strides)
        trunk.eval()
        try:
            with torch.no_grad():
                out = trunk(torch.empty(1, 3, image_size, image_size))
        except (RuntimeError, ValueError):
            out = None
    if out is None or out.shape[-1] < 1 or out.shape[-2] < 1:
        raise QsennError(
            f"data.image_size: {arch} cannot take {image_size} px images "
            "(its feature maps would be smaller than 1x1)"
        )
    return int(out.shape[-2]), int(out.shape[-1])


def check_image_size(arch: str, image_size: int) -> None:
    """Raise :class:`QsennError` if ``arch`` cannot take ``image_size`` px (e.g. Inception < 75)."""
    if image_size < 1:
        raise QsennError(f"data.image_size: must be >= 1, got {image_size}")
    feature_map_size(arch, image_size)


# --------------------------------------------------------------------------- state dicts


def _summarise(keys: list[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    more = len(keys) - _KEYS_SHOWN
    return shown + (f" (+{more} more)" if more > 0 else "")


def _is_bare(state: Mapping[str, Tensor]) -> bool:
    return not any(key.startswith(("trunk.", "head.")) for key in state)


def _from_bare(model: QSENN, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A bare backbone state dict (torchvision naming) -> QSENN naming; the head keeps its init."""
    full: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(_CLASSIFIER_PREFIXES):
            continue
        if model.arch == "densenet121":
            key = _DENSENET_LEGACY_KEY.sub(r".\1\2.", key)
        full[f"trunk.{key}"] = value
    current = model.state_dict()
    if model.arch == "inception_v3" and "trunk.input_transform.scale" not in full:
        for name, value in inception_input_transform().items():
            full[f"trunk.input_transform.{name}"] = value
    for key, value in current.items():
        if key.startswith("head.") and key not in full:
            full[key] = value
    return full


def load_state_dict_checked(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load ``state`` into ``model``; one :class:`QsennError` line naming ``source`` if it misfits.

    For a :class:`QSENN`, ``state`` may be a full QSENN state dict or a bare backbone state dict
    in torchvision naming (its ``fc``/``classifier``/``AuxLogits`` entries are dropped and the
    head keeps its current values). Missing ``num_batches_tracked`` counters (old checkpoints)
    are filled in; every other missing, unexpected or mis-shaped key is an error.
    """
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and (isinstance(v, Tensor) or k.endswith("_extra_state"))
        for k, v in state.items()
    ):
        raise QsennError(f"{source}: not a state dict (a mapping of names to tensors)")
    if isinstance(model, QSENN) and _is_bare(state):
        state = _from_bare(model, state)
    state = dict(state)
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value.clone()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    misshaped = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and isinstance(value, Tensor) and state[key].shape != value.shape
    ]
    problems = [
        f"{label}: {_summarise(keys)}"
        for label, keys in (
            ("wrong shapes (file vs model)", misshaped),
            ("missing keys", missing),
            ("unexpected keys", unexpected),
        )
        if keys
    ]
    if problems:
        what = getattr(model, "arch", type(model).__name__)
        raise QsennError(f"{source}: does not fit the {what} model; " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def read_state_file(path: str | os.PathLike[str], source: str) -> dict[str, Tensor]:
    """Read a state dict (``torch.save`` file or ``.safetensors``) without executing code."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise QsennError(f"{source}: {path} is not a readable state dict ({first})") from None
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping):
        raise QsennError(f"{source}: {path} holds a {type(raw).__name__}, not a state dict")
    state = dict(raw)
    state.pop(METADATA_KEY, None)  # a qsenn model file's own metadata is no weight
    if state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DDP
    return state


# --------------------------------------------------------------------------- weights


def _torchvision_weights(arch: str, name: str) -> torchvision.models.WeightsEnum | None:
    """The torchvision weights enum member called ``name`` (or ``Class.NAME``), else None."""
    if arch not in TORCHVISION_ARCHS:
        return None
    enum = torchvision.models.get_model_weights(arch)
    short = name.split(".", 1)[1] if name.startswith(enum.__name__ + ".") else name
    return enum[short] if short in enum.__members__ else None


def _hub_checkpoints() -> Path:
    """torch.hub's weights folder: ``$TORCH_HOME/hub/checkpoints`` (default ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _weights_filename(weights: torchvision.models.WeightsEnum) -> str:
    """The file name torch.hub caches ``weights`` under (the last part of its URL)."""
    return os.path.basename(urlparse(weights.url).path)


def _download_hint(arch: str, name: str, weights: torchvision.models.WeightsEnum) -> str:
    return (
        f"model.weights: {name} for {arch} is not on this machine and cannot be downloaded; "
        f"put {_weights_filename(weights)} into {_hub_checkpoints()}/"
    )


def load_torchvision_weights(arch: str, name: str) -> dict[str, Tensor]:
    """Fetch torchvision's ``name`` weights for ``arch`` through torchvision's own code path.

    ``WeightsEnum.get_state_dict`` looks in ``$TORCH_HOME/hub/checkpoints`` (default
    ``~/.cache/torch``) and downloads only if the file is absent. ``check_hash=True`` is safe
    offline: torch.hub checks the sha256 prefix in the file name only while downloading, a file
    already in the folder is loaded as is.
    """
    weights = _torchvision_weights(arch, name)
    if weights is None:
        raise QsennError(f"model.weights: {name!r} is not a torchvision weights name for {arch}")
    cached = _hub_checkpoints() / _weights_filename(weights)
    present = cached.is_file()
    log.info("loading torchvision weights %s for %s from %s", name, arch, cached)
    try:
        state = weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except Exception as err:  # download (URLError, socket, hash) or unpickling failures
        if not present:
            raise QsennError(_download_hint(arch, name, weights)) from None
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise QsennError(
            f"model.weights: {cached} could not be read ({first}); replace it with a good copy"
        ) from None
    return dict(state)


def load_weights(model: QSENN, weights: str) -> None:
    """Initialise ``model`` from ``weights``: ``none``, a torchvision weights name or a file."""
    if weights.lower() == "none":
        return
    if Path(weights).is_file():
        state = read_state_file(weights, "model.weights")
        load_state_dict_checked(model, state, f"model.weights: {weights}")
        log.info("loaded %s weights from %s", model.arch, weights)
        return
    if _torchvision_weights(model.arch, weights) is not None:
        state = load_torchvision_weights(model.arch, weights)
        load_state_dict_checked(model, state, f"model.weights: {weights} for {model.arch}")
        return
    if looks_like_path(weights):
        raise QsennError(f"model.weights: file {weights} not found")
    known = ["none", "a state-dict file"]
    if model.arch in TORCHVISION_ARCHS:
        enum = torchvision.models.get_model_weights(model.arch)
        known[1:1] = list(enum.__members__)
    raise QsennError(
        f"model.weights: {weights!r} is neither a file nor a weights name for {model.arch} "
        f"(known: {', '.join(known)})"
    )


# --------------------------------------------------------------------------- entry point


def build_model(
    arch: str,
    n_classes: int,
    *,
    width: int = 128,
    dropout: float = 0.2,
    reduced_strides: bool = False,
    weights: str = "none",
) -> QSENN:
    """Build the dense Q-SENN model for ``arch`` with an ``n_classes``-way linear head.

    Random parts are drawn from torch's global RNG: seed it first for a deterministic init.
    """
    _check_arch(arch)
    if n_classes < 1:
        raise QsennError(f"n_classes: must be >= 1, got {n_classes}")
    if width < 1:
        raise QsennError(f"model.width: must be >= 1, got {width}")
    if not 0.0 <= dropout < 1.0:
        raise QsennError(f"model.dropout: must be in [0, 1), got {dropout}")
    n_features = feature_width(arch, width)
    trunk = _build_trunk(arch, width, reduced_strides)
    model = QSENN(trunk, n_features, n_classes, dropout, arch)
    load_weights(model, weights)
    log.info(
        "built %s: n_f=%d, %d classes, %d parameters, weights=%s",
        arch, n_features, n_classes, sum(p.numel() for p in model.parameters()), weights,
    )
    return model
