"""What a model file must say about itself so that it can be used alone: :class:`ModelMetadata`.

A model file (``models/*.pt``) is the state dict that :func:`save_model`
writes. To predict or explain a new image without the pipeline around it, one also needs the
architecture the weights belong to, the preprocessing (image size, normalisation) and the class
names. These travel inside the file under the reserved key :data:`METADATA_KEY`, as a 1-D uint8
tensor that holds UTF-8 JSON, so the file still loads with ``torch.load(..., weights_only=True)``
and nothing is ever unpickled. :func:`load_model` drops the key before it
loads the weights into a module.

Files written before the key existed carry no metadata; :func:`metadata_from_params` then
rebuilds it from the params file of the run and the dataset's class names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from qsenn_core import distributed as ddp
from qsenn_core.data import DATASET_STATS, DatasetIndex
from qsenn_core.errors import DataError, QsennError
from qsenn_core.io import atomic_path
from qsenn_core.params import ARCH_WIDTHS, Params
from qsenn_core.sparse_layer import SparseLayer, attach_sparse_layer, sparse_layer_from_state

#: Reserved state-dict key of the metadata tensor (no module has a parameter of this name).
METADATA_KEY = "_qsenn_metadata"
#: Version of the metadata layout; a reader refuses a newer one instead of misreading it.
METADATA_FORMAT = 1
#: How many offending keys a mismatch message names before it summarises the rest.
_KEYS_SHOWN = 3


@dataclass(frozen=True)
class ModelMetadata:
    """Everything besides the weights that turns a model file into a usable classifier.

    Attributes:
        arch, width, dropout, reduced_strides: the arguments of
            :func:`qsenn_core.backbones.build_model` (``width`` matters for ``small_cnn`` only).
        n_features: n_f, the width of the feature vector f (a consistency check of the file).
        image_size, mean, std: the test transform, Resize(s) -> CenterCrop(s) -> ToTensor ->
            Normalize(mean, std) (supplement, Implementation Details).
        dataset: ``data.name`` of the training run (informative; the preprocessing is above).
        class_names: one name per output, in label order.
    """

    arch: str
    width: int
    n_features: int
    dropout: float
    reduced_strides: bool
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dataset: str
    class_names: tuple[str, ...]
    metadata_format: int = METADATA_FORMAT

    @property
    def n_classes(self) -> int:
        """n_c, the number of outputs of the final layer."""
        return len(self.class_names)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field (lists for the tuples)."""
        raw = asdict(self)
        for key in ("mean", "std", "class_names"):
            raw[key] = list(raw[key])
        return raw


def _as_triple(value: object, key: str, source: str) -> tuple[float, float, float]:
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise DataError(f"{source}: metadata {key} must be three numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def metadata_from_dict(raw: Mapping[str, Any], source: str) -> ModelMetadata:
    """Validate a metadata mapping (from a model file or an export's config.json).

    Raises a one-line :class:`DataError` naming ``source`` when a field is missing, of the wrong
    type or out of range, or when the layout is newer than this library.
    """
    if not isinstance(raw, Mapping):
        raise DataError(f"{source}: metadata must be a JSON object")
    version = raw.get("metadata_format", METADATA_FORMAT)
    if not isinstance(version, int) or version > METADATA_FORMAT:
        raise DataError(f"{source}: metadata format {version!r} is newer than this qsenn "
                        f"(reads format <= {METADATA_FORMAT}); upgrade qsenn")
    names = [f.name for f in fields(ModelMetadata)]
    missing = [n for n in names if n not in raw and n != "metadata_format"]
    if missing:
        raise DataError(f"{source}: metadata lacks {', '.join(missing)}")
    checks: dict[str, tuple[type, ...]] = {
        "arch": (str,), "width": (int,), "n_features": (int,), "dropout": (int, float),
        "reduced_strides": (bool,), "image_size": (int,), "dataset": (str,),
    }
    for key, types in checks.items():
        value = raw[key]
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            raise DataError(f"{source}: metadata {key} has the wrong type ({value!r})")
    class_names = raw["class_names"]
    if (not isinstance(class_names, Sequence) or isinstance(class_names, str) or not class_names
            or not all(isinstance(c, str) for c in class_names)):
        raise DataError(f"{source}: metadata class_names must be a non-empty list of strings")
    if raw["arch"] not in ARCH_WIDTHS:
        raise DataError(f"{source}: metadata arch {raw['arch']!r} is not a known architecture "
                        f"(known: {', '.join(ARCH_WIDTHS)})")
    if raw["image_size"] < 1 or raw["width"] < 1 or raw["n_features"] < 1:
        raise DataError(f"{source}: metadata image_size, width and n_features must be >= 1")
    known_width = ARCH_WIDTHS[raw["arch"]]
    if raw["n_features"] != (raw["width"] if known_width is None else known_width):
        raise DataError(f"{source}: metadata n_features {raw['n_features']} does not match "
                        f"{raw['arch']} (width {raw['width']})")
    std = _as_triple(raw["std"], "std", source)
    if any(s <= 0 for s in std):
        raise DataError(f"{source}: metadata std must be positive, got {list(std)}")
    return ModelMetadata(
        arch=raw["arch"], width=raw["width"], n_features=raw["n_features"],
        dropout=float(raw["dropout"]), reduced_strides=raw["reduced_strides"],
        image_size=raw["image_size"], mean=_as_triple(raw["mean"], "mean", source), std=std,
        dataset=raw["dataset"], class_names=tuple(class_names),
    )


def metadata_from_params(params: Params, index: DatasetIndex) -> ModelMetadata:
    """The metadata of a model trained with ``params`` on the dataset ``index``.

    ``index`` is ``qsenn_core.data.load_dataset(params.data.name, params.data.root)``; its class
    names must be as many as the classes params imply.
    """
    if index.n_classes != params.n_classes:
        raise DataError(f"{index.root}: the {index.name} dataset has {index.n_classes} classes, "
                        f"but the params imply {params.n_classes}")
    mean, std = DATASET_STATS[params.data.name]
    m = params.model
    return ModelMetadata(
        arch=m.arch, width=m.width, n_features=params.feature_width, dropout=m.dropout,
        reduced_strides=m.reduced_strides, image_size=params.data.image_size, mean=tuple(mean),
        std=tuple(std), dataset=params.data.name, class_names=tuple(index.class_names),
    )


def metadata_tensor(metadata: ModelMetadata) -> Tensor:
    """``metadata`` as key-sorted UTF-8 JSON in a uint8 tensor (same metadata -> same bytes)."""
    text = json.dumps(metadata.to_json(), sort_keys=True, ensure_ascii=False)
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


def metadata_from_tensor(value: object, source: str) -> ModelMetadata:
    """Decode the tensor written by :func:`metadata_tensor`; one-line :class:`DataError` if bad."""
    if not isinstance(value, Tensor) or value.dtype != torch.uint8 or value.ndim != 1:
        raise DataError(f"{source}: {METADATA_KEY} is not a uint8 vector of JSON")
    try:
        raw = json.loads(bytes(value.tolist()).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{source}: {METADATA_KEY} is not valid UTF-8 JSON ({err})") from None
    return metadata_from_dict(raw, source)


def read_model_file(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], ModelMetadata | None]:
    """The state dict of a model file (metadata key removed) and its metadata, if it has any.

    Loads with ``weights_only=True``. A missing, unreadable or non-state-dict file, or a state
    dict that is no Q-SENN model (no ``trunk.``/``head.`` keys: e.g. a sparse layer file), is a
    one-line :class:`DataError`.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a model file")
    if not path.is_file():
        raise DataError(f"{path}: model file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file (zip, pickle, EOF) is one user-facing line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: not a readable model file ({first})") from None
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        raise DataError(f"{path}: not a model file (expected a state dict of tensors)")
    state = dict(raw)
    encoded = state.pop(METADATA_KEY, None)
    if not any(k.startswith(("trunk.", "head.")) for k in state):
        raise DataError(f"{path}: not a qsenn model file (no trunk./head. weights)")
    metadata = metadata_from_tensor(encoded, str(path)) if encoded is not None else None
    return state, metadata


def _summary(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    more = len(keys) - _KEYS_SHOWN
    return shown + (f" (+{more} more)" if more > 0 else "")


def state_mismatch(expected: Mapping[str, Tensor], state: Mapping[str, object]) -> str | None:
    """Why ``state`` does not load into a module whose state dict is ``expected`` (None: it fits).

    One line: the wrong shapes, missing and unexpected keys, a few of each named. A file of
    another architecture (or width, or class count) shows up here.
    """
    misshaped = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and isinstance(v, Tensor) and v.shape != expected[k].shape
    ]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = [
        f"{label}: {_summary(keys)}"
        for label, keys in (("wrong shapes (file vs model)", misshaped),
                            ("missing keys", missing), ("unexpected keys", unexpected))
        if keys
    ]
    return "; ".join(problems) or None



def load_state_into(model: nn.Module, state: Mapping[str, object], source: str) -> nn.Module:
    """Load a model state dict (as :func:`save_model` writes it) into ``model``.

    The metadata key is skipped. A fine-tuned model's state holds its sparse layer
    (``head.selection`` ...): when ``model`` still has a dense head, that layer is attached
    first (dropout unchanged). Any misfit (another architecture, width or class count) is one
    :class:`DataError` line naming ``source``. Returns ``model``.
    """
    what = getattr(model, "arch", type(model).__name__)
    if not isinstance(state, Mapping):
        raise DataError(f"{source}: cannot load into the {what} model (not a state dict)")
    weights = {k: v for k, v in state.items() if k != METADATA_KEY}
    try:
        layer = sparse_layer_from_state(weights)  # type: ignore[arg-type]
        if layer is not None and not isinstance(getattr(model, "head", None), SparseLayer):
            attach_sparse_layer(model, layer, dropout=model.dropout.p)  # type: ignore[arg-type]
    except QsennError as err:
        raise DataError(f"{source}: cannot load into the {what} model ({err})") from None
    mismatch = state_mismatch(model.state_dict(), weights)
    if mismatch is not None:
        raise DataError(f"{source}: cannot load into the {what} model ({mismatch})")
    model.load_state_dict(weights)
    return model


# --------------------------------------------------------------------------- model files


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """The state dict of ``model`` (DDP unwrapped) as contiguous CPU tensors."""
    return {k: v.detach().cpu().contiguous() for k, v in ddp.unwrap(model).state_dict().items()}


def save_model(model: nn.Module, path: str | os.PathLike[str],
               metadata: ModelMetadata | None = None) -> None:
    """Write the model's state dict atomically (identical tensors -> identical bytes).

    With ``metadata`` (:func:`qsenn_core.model_file.metadata_from_params`) the file also holds
    the architecture, preprocessing and class names under ``METADATA_KEY``, so it can be used
    alone (``qsenn predict``); it still loads with ``weights_only=True``.
    """
    state = model_state(model)
    if metadata is not None:
        state[METADATA_KEY] = metadata_tensor(metadata)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_model(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load a state dict written by :func:`save_model` into ``model`` (weights only).

    A fine-tuned model's file also holds its sparse layer (``head.selection`` ...): when
    ``model`` still has a dense head, that layer is attached first (dropout unchanged), so
    ``load_model(build_model(...), "models/iter_1.pt")`` gives the fine-tuned model. The
    metadata a file may carry (:mod:`qsenn_core.model_file`) is skipped; a file of another
    architecture is one :class:`DataError` line listing the misfitting keys.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: cannot load into the model ({first})") from None
    load_state_into(ddp.unwrap(model), state, str(path))
    return model
