"""The one config path: ``params.yaml`` -> a typed, validated :class:`Params` object.

Every stage reads its settings through :func:`load_params`. Types are checked from the dataclass
annotations, ranges and cross-field rules in ``_check_*``; every problem is one
:class:`~qsenn_core.errors.ParamsError` line that names the key, raised before any long work.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from qsenn_core.errors import ParamsError

#: Width n_f of the feature vector f of each backbone (``small_cnn`` is set by ``model.width``).
ARCH_WIDTHS: dict[str, int | None] = {
    "resnet50": 2048,
    "resnet18": 512,
    "densenet121": 1024,
    "inception_v3": 2048,
    "small_cnn": None,
}

#: Number of classes of each published dataset (``synth*`` is set by ``synth.n_classes``).
DATASET_CLASSES: dict[str, int | None] = {
    "synth": None,
    "synth_travelingbirds": None,
    "cub": 200,
    "travelingbirds": 200,
    "cars": 196,
    "aircraft": 100,
    "imagenet": 1000,
}

#: Feature Diversity Loss weight beta per backbone (supplement, Implementation Details).
PAPER_BETA: dict[str, float] = {"resnet50": 0.196, "densenet121": 0.098, "inception_v3": 0.049}


@dataclass(frozen=True)
class SynthParams:
    """The generated CUB-format benchmark (``prepare_data`` stage)."""

    n_classes: int = 50
    image_size: int = 64
    train_per_class: int = 50
    test_per_class: int = 30
    spurious: float = 1.0  # P(train background tied to the class) in the TravelingBirds variant
    attribute_noise: float = 0.05  # P(an image deviates from its prototype per attribute type)
    hide_prob: float = 0.05  # P(a part is hidden, its attributes then get certainty 1)
    guess_prob: float = 0.05  # P(an annotation is a "guessing" (certainty 2) noisy label)
    seed: int = 0


@dataclass(frozen=True)
class DataParams:
    """Which dataset the model trains on and how images are prepared."""

    name: str = "synth"
    root: str = "data/synth"
    image_size: int = 64
    crop_to_bbox: bool = False
    num_workers: int = 0


@dataclass(frozen=True)
class ModelParams:
    """Backbone choice; ``weights`` is ``none``, a torchvision weights name or a local file."""

    arch: str = "small_cnn"
    weights: str = "none"
    width: int = 128  # n_f of small_cnn; ignored for torchvision backbones
    dropout: float = 0.2
    reduced_strides: bool = False


@dataclass(frozen=True)
class TrainParams:
    """Dense training with CE + beta * Feature Diversity Loss (eq. 2)."""

    epochs: int = 150
    batch_size: int = 16
    lr_backbone: float = 5e-3
    lr_head: float = 0.01
    lr_step: int = 30
    lr_gamma: float = 0.4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    beta: float = 0.196
    nproc: int = 1  # processes for torchrun/DDP; 1 = plain single process


@dataclass(frozen=True)
class SelectParams:
    """SLDD-Model feature selection: first n_f* features on a group-sparse path."""

    n_features: int = 50
    alpha: float = 0.8
    start_ratio: float = 0.1  # the path starts at lambda_max * start_ratio
    decay: float = 0.9  # lambda_{k+1} = decay * lambda_k
    max_steps: int = 200


@dataclass(frozen=True)
class SparseParams:
    """Elastic-net multinomial regularization path on the selected features."""

    solver: Literal["exact", "glm-saga"] = "exact"
    alpha: float = 0.99
    n_lambdas: int = 100
    lambda_min_ratio: float = 1e-3
    tol: float = 1e-4
    max_epochs: int = 2000
    lr: float = 0.1
    lookbehind: int = 5
    batch_size: int = 256
    val_frac: float = 0.1


@dataclass(frozen=True)
class QuantParams:
    """Quantization of W^sp (eq. 3-5)."""

    enabled: bool = True
    n_per_class: int = 5
    levels: int = 3


@dataclass(frozen=True)
class FinetuneParams:
    """Fine-tuning with the sparse layer frozen."""

    lr_factor: float = 100.0  # lr = lr_factor * final dense lr
    lr_decay_per_iter: float = 0.9
    dropout: float = 0.1
    momentum: float = 0.95
    weight_decay: float = 5e-4
    batch_size: int = 16
    train_standardization: bool = True


@dataclass(frozen=True)
class IterationParams:
    """One unrolled Q-SENN iteration: which model it starts from and how long it trains."""

    prev: str = "dense"
    epochs: int = 10
    lr_step: int = 0  # 0 = constant lr within the iteration
    lr_gamma: float = 0.4


@dataclass(frozen=True)
class ExplainParams:
    """Explanation pictures of the final model (supplement, Visualization Techniques)."""

    n_classes: int = 3  # classes with a global explanation, evenly spaced over the classes
    n_images: int = 4  # training images per global explanation
    n_local: int = 4  # test images with a local explanation, evenly spaced over the test split
    threshold: float = 0.7  # local explanation: share of a feature's maximum (paper: 70%)
    gamma: float = 1.5  # gamma correction of the overlaid maps


#: ``clip.pretrained`` value that trains ``clip.model`` from scratch (stage ``clip_pretrain``).
CLIP_SCRATCH = "scratch"

#: Nouns among the attribute expressions: prompts say "<expression>-like <type>" for them
#: (supplement, "Prompts"); the default of ``clip.non_adjectives``.
CLIP_NON_ADJECTIVES: tuple[str, ...] = (
    "dagger", "needle", "cone", "hooked seabird", "eyebrow", "eyering", "eyeline",
)


@dataclass(frozen=True)
class ClipPretrainParams:
    """From-scratch contrastive pre-training of ``clip.model`` (``clip.pretrained: scratch``)."""

    epochs: int = 16
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1
    n_captions: int = 8  # caption variants per image; one is drawn per epoch
    max_attributes: int = 5  # a caption names 1..max_attributes present attributes
    threads: int = 1  # torch CPU threads (0 = torch's default); 1 is fastest on a shared CPU


@dataclass(frozen=True)
class ClipParams:
    """CLIP alignment of the learned features with text concepts (eq. 11-16)."""

    model: str = "ViT-B-32"  # open_clip model name; the paper's ViT-B-32, or QSENN-Tiny
    pretrained: str = "openai"  # open_clip tag (local cache) | checkpoint path | scratch
    batch_size: int = 64  # images per batch when embedding
    non_adjectives: tuple[str, ...] = CLIP_NON_ADJECTIVES
    top_k: int = 3  # concepts per feature in reports/alignment.csv
    pretrain: ClipPretrainParams = field(default_factory=ClipPretrainParams)


@dataclass(frozen=True)
class Params:
    """All of params.yaml."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataParams = field(default_factory=DataParams)
    synth: SynthParams = field(default_factory=SynthParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    select: SelectParams = field(default_factory=SelectParams)
    sparse: SparseParams = field(default_factory=SparseParams)
    quant: QuantParams = field(default_factory=QuantParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    iterations: dict[str, IterationParams] = field(
        default_factory=lambda: {"1": IterationParams()}
    )
    final: str = "iter_1"
    explain: ExplainParams = field(default_factory=ExplainParams)
    clip: ClipParams = field(default_factory=ClipParams)

    @property
    def n_classes(self) -> int:
        """Number of classes of the configured dataset."""
        known = DATASET_CLASSES[self.data.name]
        return self.synth.n_classes if known is None else known

    @property
    def feature_width(self) -> int:
        """n_f, the width of the backbone's feature vector."""
        known = ARCH_WIDTHS[self.model.arch]
        return self.model.width if known is None else known

    def iteration_models(self) -> list[str]:
        """Model names of the iterations in chain order (``iter_1``, ``iter_2``, ...)."""
        return [f"iter_{key}" for key in self.iterations]


# --------------------------------------------------------------------------- type coercion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` and build nested dataclasses."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ParamsError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin is tuple:
        (item_tp, _) = typing.get_args(tp)  # only tuple[X, ...] is used
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict) or not value:
            raise ParamsError(f"{key}: expected a non-empty mapping")
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation {tp}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads "1e-3" (no dot) as a string; accept numeric strings
            try:
                return float(value) if isinstance(value, str) else _fail(key, value, tp)
            except ValueError:
                _fail(key, value, tp)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp}")


def _fail(key: str, value: Any, tp: Any) -> Any:
    raise ParamsError(f"{key}: expected a number ({_type_name(tp)}), got {value!r}")


def _build(cls: Any, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for unknown in raw.keys() - names:
        where = f"{prefix}.{unknown}" if prefix else str(unknown)
        raise ParamsError(f"{where}: unknown key")
    kwargs = {}
    for name in names & raw.keys():
        where = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(raw[name], hints[name], where)
    return cls(**kwargs)


# --------------------------------------------------------------------------- range checks


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ParamsError(f"{key}: {message}")


def _check(p: Params) -> None:
    _require(p.seed >= 0, "seed", "must be >= 0")
    _require(p.data.name in DATASET_CLASSES, "data.name",
             f"unknown dataset {p.data.name!r} (known: {', '.join(DATASET_CLASSES)})")
    _require(p.model.arch in ARCH_WIDTHS, "model.arch",
             f"unknown architecture {p.model.arch!r} (known: {', '.join(ARCH_WIDTHS)})")
    _require(p.data.image_size >= 16, "data.image_size", "must be >= 16")
    if p.model.arch == "inception_v3":
        _require(p.data.image_size >= 75, "data.image_size", "inception_v3 needs at least 75 px")
    _require(p.data.num_workers >= 0, "data.num_workers", "must be >= 0")

    s = p.synth
    _require(2 <= s.n_classes <= 999, "synth.n_classes", "must be in [2, 999]")
    _require(s.image_size >= 32, "synth.image_size", "must be >= 32")
    _require(s.train_per_class >= 1, "synth.train_per_class", "must be >= 1")
    _require(s.test_per_class >= 1, "synth.test_per_class", "must be >= 1")
    for name in ("spurious", "attribute_noise", "hide_prob", "guess_prob"):
        value = getattr(s, name)
        _require(0.0 <= value <= 1.0, f"synth.{name}", f"must be in [0, 1], got {value}")

    m = p.model
    _require(m.width >= 1, "model.width", "must be >= 1")
    _require(0.0 <= m.dropout < 1.0, "model.dropout", "must be in [0, 1)")

    t = p.train
    _require(t.epochs >= 1, "train.epochs", "must be >= 1")
    _require(t.batch_size >= 1, "train.batch_size", "must be >= 1")
    _require(t.lr_backbone > 0, "train.lr_backbone", f"must be > 0, got {t.lr_backbone}")
    _require(t.lr_head > 0, "train.lr_head", f"must be > 0, got {t.lr_head}")
    _require(t.lr_step >= 1, "train.lr_step", "must be >= 1")
    _require(0 < t.lr_gamma <= 1, "train.lr_gamma", "must be in (0, 1]")
    _require(0 <= t.momentum < 1, "train.momentum", "must be in [0, 1)")
    _require(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    _require(t.beta >= 0, "train.beta", "must be >= 0")
    _require(t.nproc >= 1, "train.nproc", "must be >= 1")

    sel = p.select
    _require(sel.n_features >= 1, "select.n_features", "must be >= 1")
    _require(sel.n_features <= p.feature_width, "select.n_features",
             f"{sel.n_features} is larger than the width {p.feature_width} of {m.arch}")
    _require(0 < sel.alpha <= 1, "select.alpha", "must be in (0, 1]")
    _require(0 < sel.start_ratio <= 1, "select.start_ratio", "must be in (0, 1]")
    _require(0 < sel.decay < 1, "select.decay", "must be in (0, 1)")
    _require(sel.max_steps >= 1, "select.max_steps", "must be >= 1")

    sp = p.sparse
    _require(0 < sp.alpha <= 1, "sparse.alpha", "must be in (0, 1]")
    _require(sp.n_lambdas >= 1, "sparse.n_lambdas", "must be >= 1")
    _require(0 < sp.lambda_min_ratio < 1, "sparse.lambda_min_ratio", "must be in (0, 1)")
    _require(sp.tol > 0, "sparse.tol", "must be > 0")
    _require(sp.max_epochs >= 1, "sparse.max_epochs", "must be >= 1")
    _require(sp.lr > 0, "sparse.lr", "must be > 0")
    _require(sp.lookbehind >= 1, "sparse.lookbehind", "must be >= 1")
    _require(sp.batch_size >= 1, "sparse.batch_size", "must be >= 1")
    _require(0 < sp.val_frac < 1, "sparse.val_frac", "must be in (0, 1)")

    q = p.quant
    _require(q.n_per_class >= 1, "quant.n_per_class", "must be >= 1")
    _require(q.n_per_class <= sel.n_features, "quant.n_per_class",
             f"n_per_class * n_classes = {q.n_per_class * p.n_classes} is larger than the "
             f"sparse layer ({p.n_classes} x {sel.n_features} = {p.n_classes * sel.n_features})")
    _require(q.levels >= 3 and q.levels % 2 == 1, "quant.levels", "must be an odd number >= 3")

    ft = p.finetune
    _require(ft.lr_factor > 0, "finetune.lr_factor", "must be > 0")
    _require(0 < ft.lr_decay_per_iter <= 1, "finetune.lr_decay_per_iter", "must be in (0, 1]")
    _require(0 <= ft.dropout < 1, "finetune.dropout", "must be in [0, 1)")
    _require(0 <= ft.momentum < 1, "finetune.momentum", "must be in [0, 1)")
    _require(ft.weight_decay >= 0, "finetune.weight_decay", "must be >= 0")
    _require(ft.batch_size >= 1, "finetune.batch_size", "must be >= 1")

    ex = p.explain
    _require(1 <= ex.n_classes <= p.n_classes, "explain.n_classes",
             f"must be in [1, {p.n_classes}] (the number of classes)")
    _require(ex.n_images >= 1, "explain.n_images", "must be >= 1")
    _require(ex.n_local >= 0, "explain.n_local", "must be >= 0")
    _require(0 <= ex.threshold < 1, "explain.threshold", "must be in [0, 1)")
    _require(ex.gamma > 0, "explain.gamma", "must be > 0")

    c = p.clip
    _require(bool(c.model.strip()), "clip.model", "must name an open_clip model (e.g. ViT-B-32)")
    _require(bool(c.pretrained.strip()), "clip.pretrained",
             f"must be an open_clip tag, a checkpoint path or {CLIP_SCRATCH!r}")
    _require(c.batch_size >= 1, "clip.batch_size", "must be >= 1")
    _require(c.top_k >= 1, "clip.top_k", "must be >= 1")
    for i, word in enumerate(c.non_adjectives):
        _require(bool(word.strip()), f"clip.non_adjectives[{i}]", "must not be empty")
    cp = c.pretrain
    _require(cp.epochs >= 1, "clip.pretrain.epochs", "must be >= 1")
    _require(cp.batch_size >= 2, "clip.pretrain.batch_size",
             "must be >= 2 (the contrastive loss needs negatives)")
    _require(cp.lr > 0, "clip.pretrain.lr", f"must be > 0, got {cp.lr}")
    _require(cp.weight_decay >= 0, "clip.pretrain.weight_decay", "must be >= 0")
    _require(cp.n_captions >= 1, "clip.pretrain.n_captions", "must be >= 1")
    _require(cp.max_attributes >= 1, "clip.pretrain.max_attributes", "must be >= 1")
    _require(cp.threads >= 0, "clip.pretrain.threads", "must be >= 0 (0: torch's default)")

    known = {"dense"}
    for key, it in p.iterations.items():
        where = f"iterations.{key}"
        _require(key.isdigit() and int(key) >= 1, where, "iteration keys must be 1, 2, 3, ...")
        _require(it.prev in known, f"{where}.prev",
                 f"{it.prev!r} names no earlier model (known: {', '.join(sorted(known))})")
        _require(it.epochs >= 1, f"{where}.epochs", "must be >= 1")
        _require(it.lr_step >= 0, f"{where}.lr_step", "must be >= 0")
        _require(0 < it.lr_gamma <= 1, f"{where}.lr_gamma", "must be in (0, 1]")
        known.add(f"iter_{key}")
    _require(p.final in p.iteration_models(), "final",
             f"{p.final!r} is not an iteration (known: {', '.join(p.iteration_models())})")


def params_from_dict(raw: dict[str, Any]) -> Params:
    """Build and validate :class:`Params` from a parsed params.yaml mapping."""
    if not isinstance(raw, dict):
        raise ParamsError("params.yaml: expected a mapping at the top level")
    params = _build(Params, raw, "")
    _check(params)
    return params


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read, type-check and validate ``path``; raise :class:`ParamsError` on the first problem."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    try:
        return params_from_dict(raw or {})
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
