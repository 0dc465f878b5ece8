"""The one config path: ``params.yaml`` -> a typed, validated :class:`Params` object.

Every stage reads its settings through :func:`load_params`. Types are checked from the dataclass
annotations, ranges and cross-field rules in ``_check``; every problem is one
:class:`~qsenn_core.errors.ParamsError` line that names the key, raised before any long work.

``params.yaml`` is the one source of values: the dataclasses hold no defaults, so a params file
must set every key (a missing one is an error naming it). The only exception is the optional
lr schedule of an iteration, whose absence means "no schedule". The paper's settings are
presets under ``params/`` that :mod:`qsenn_core.presets` applies on top of ``params.yaml``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from qsenn_core.dataset_registry import DATASETS
from qsenn_core.errors import ParamsError

#: Width n_f of the feature vector f of each backbone (``small_cnn`` is set by ``model.width``).
ARCH_WIDTHS: dict[str, int | None] = {
    "resnet50": 2048,
    "resnet18": 512,
    "densenet121": 1024,
    "inception_v3": 2048,
    "small_cnn": None,
}

#: Number of classes of each dataset of the dataset table (``synth*`` is set by
#: ``synth.n_classes``).
DATASET_CLASSES: dict[str, int | None] = {name: spec.n_classes for name, spec in DATASETS.items()}

@dataclass(frozen=True)
class SynthParams:
    """The generated CUB-format benchmark (``prepare_data`` stage)."""

    n_classes: int
    image_size: int
    train_per_class: int
    test_per_class: int
    spurious: float  # P(train background tied to the class) in the TravelingBirds variant
    attribute_noise: float  # P(an image deviates from its prototype per attribute type)
    hide_prob: float  # P(a part is hidden, its attributes then get certainty 1)
    guess_prob: float  # P(an annotation is a "guessing" (certainty 2) noisy label)
    seed: int


@dataclass(frozen=True)
class DataParams:
    """Which dataset the model trains on and how images are prepared."""

    name: str
    root: str
    image_size: int
    crop_to_bbox: bool
    num_workers: int


@dataclass(frozen=True)
class ModelParams:
    """Backbone choice; ``weights`` is ``none``, a torchvision weights name or a local file."""

    arch: str
    weights: str
    width: int  # n_f of small_cnn; ignored for torchvision backbones
    dropout: float
    reduced_strides: bool


@dataclass(frozen=True)
class TrainParams:
    """Dense training with CE + beta * Feature Diversity Loss (eq. 2)."""

    epochs: int
    batch_size: int
    lr_backbone: float
    lr_head: float
    lr_step: int
    lr_gamma: float
    momentum: float
    weight_decay: float
    beta: float
    nproc: int  # processes for torchrun/DDP; 1 = plain single process


@dataclass(frozen=True)
class SelectParams:
    """SLDD-Model feature selection: first n_f* features on a group-sparse path."""

    n_features: int
    alpha: float
    start_ratio: float  # first point of the downward walk, x lambda_max (fewer than n_f* active)
    decay: float  # lambda_{k+1} = decay * lambda_k
    max_steps: int


@dataclass(frozen=True)
class SparseParams:
    """Elastic-net multinomial regularization path on the selected features."""

    solver: Literal["exact", "glm-saga"]
    alpha: float
    n_lambdas: int
    lambda_min_ratio: float
    tol: float
    max_epochs: int
    lr: float
    lookbehind: int
    batch_size: int
    val_frac: float


@dataclass(frozen=True)
class QuantParams:
    """Quantization of W^sp (eq. 3-5)."""

    enabled: bool
    n_per_class: int
    levels: int


@dataclass(frozen=True)
class FinetuneParams:
    """Fine-tuning with the sparse layer frozen."""

    lr_factor: float  # lr = lr_factor * final dense lr
    lr_decay_per_iter: float
    dropout: float
    momentum: float
    weight_decay: float
    batch_size: int
    train_standardization: bool


@dataclass(frozen=True)
class IterationParams:
    """One unrolled Q-SENN iteration: which model it starts from and how long it trains."""

    prev: str
    epochs: int
    # The only optional keys: absent, the lr stays constant within the iteration.
    # A schedule sets both, e.g. the paper's last round: lr_step 10, lr_gamma 0.4.
    lr_step: int = 0
    lr_gamma: float = 1.0


@dataclass(frozen=True)
class ExplainParams:
    """Explanation pictures of the final model (supplement, Visualization Techniques)."""

    n_classes: int  # classes with a global explanation, evenly spaced over the classes
    n_images: int  # training images per global explanation
    n_local: int  # test images with a local explanation, evenly spaced over the test split
    threshold: float  # local explanation: share of a feature's maximum (paper: 70%)
    gamma: float  # gamma correction of the overlaid maps


#: ``clip.pretrained`` value that trains ``clip.model`` from scratch (stage ``clip_pretrain``).
CLIP_SCRATCH = "scratch"

#: Nouns among CUB's attribute expressions: prompts say "<expression>-like <type>" for them
#: (supplement, "Prompts"). The default argument of :mod:`qsenn_core.alignment`'s prompt
#: builders; the pipeline reads ``clip.non_adjectives`` from params.yaml (the same list).
CLIP_NON_ADJECTIVES: tuple[str, ...] = (
    "dagger", "needle", "cone", "hooked seabird", "eyebrow", "eyering", "eyeline",
)


@dataclass(frozen=True)
class ClipPretrainParams:
    """From-scratch contrastive pre-training of ``clip.model`` (``clip.pretrained: scratch``)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    n_captions: int  # caption variants per image; one is drawn per epoch
    max_attributes: int  # a caption names 1..max_attributes present attributes
    threads: int  # torch CPU threads (0 = torch's default); 1 is fastest on a shared CPU


@dataclass(frozen=True)
class ClipParams:
    """CLIP alignment of the learned features with text concepts (eq. 11-16)."""

    model: str  # open_clip model name; the paper's ViT-B-32, or QSENN-Tiny
    pretrained: str  # open_clip tag (local cache) | checkpoint path | scratch
    batch_size: int  # images per batch when embedding
    non_adjectives: tuple[str, ...]
    top_k: int  # concepts per feature in reports/alignment.csv
    pretrain: ClipPretrainParams


@dataclass(frozen=True)
class Params:
    """All of params.yaml."""

    seed: int
    device: Literal["auto", "cpu", "cuda"]
    data: DataParams
    synth: SynthParams
    model: ModelParams
    train: TrainParams
    select: SelectParams
    sparse: SparseParams
    quant: QuantParams
    finetune: FinetuneParams
    iterations: dict[str, IterationParams]
    final: str
    explain: ExplainParams
    clip: ClipParams

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
    for unknown in sorted(raw.keys() - names, key=str):
        where = f"{prefix}.{unknown}" if prefix else str(unknown)
        raise ParamsError(f"{where}: unknown key")
    kwargs = {}
    for f in dataclasses.fields(cls):
        where = f"{prefix}.{f.name}" if prefix else f.name
        if f.name in raw:
            kwargs[f.name] = _coerce(raw[f.name], hints[f.name], where)
        elif f.default is dataclasses.MISSING:
            raise ParamsError(f"{where}: missing key (params.yaml sets every key, see the "
                              "repo's params.yaml)")
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
        # lr_gamma has no default of its own (1.0 = no decay): a step needs a factor below 1
        _require(it.lr_step == 0 or it.lr_gamma < 1, f"{where}.lr_gamma",
                 f"must be < 1 with lr_step {it.lr_step} (the lr is multiplied by it every "
                 "lr_step epochs); set it")
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
