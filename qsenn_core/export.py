"""Export a trained Q-SENN to a folder of safetensors + JSON, and :func:`load` it back.

An export folder holds two files:

- ``model.safetensors``: the model's state dict (backbone, and for a Q-SENN the sparse layer
  ``head.selection``, ``head.weight`` = W^Q, ``head.bias``, ``head.mean``, ``head.std``);
- ``config.json``: the model's metadata (:class:`qsenn_core.model_file.ModelMetadata`: arch,
  width, image size, normalisation mean/std, class names, ...) plus the selected features, the
  quantization level alpha (W^Q in {-alpha, 0, alpha}, eq. 5) and the features' CLIP concept
  names.

:func:`load` reads them without unpickling anything (safetensors and JSON only) and returns a
:class:`qsenn_core.inference.QsennPredictor`, an ``nn.Module`` whose ``forward`` gives the same
logits as the pipeline's model (bit for bit on CPU) and which has ``.predict`` and ``.explain``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from qsenn_core.errors import DataError, QsennError
from qsenn_core.inference import QsennPredictor, model_from_state
from qsenn_core.io import atomic_path
from qsenn_core.model_file import metadata_from_dict

log = logging.getLogger(__name__)

#: File names inside an export folder.
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: ``config.json``'s ``export_format`` value and version.
EXPORT_FORMAT = "qsenn-export"
EXPORT_VERSION = 1


def export_config(predictor: QsennPredictor) -> dict[str, Any]:
    """The ``config.json`` of ``predictor``: its metadata and what its sparse layer holds."""
    layer = predictor.sparse_layer
    config: dict[str, Any] = {
        "export_format": EXPORT_FORMAT,
        "export_version": EXPORT_VERSION,
        **predictor.metadata.to_json(),
        "selected_features": [int(j) for j in layer.selection.cpu()] if layer else None,
        "alpha": layer.alpha if layer else None,
        "concept_names": {str(f): c for f, c in sorted(predictor.concept_names.items())},
    }
    return config


def export_model(predictor: QsennPredictor, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/config.json`` (the folder atomically).

    ``out_dir`` must be new, empty or an earlier export (which is replaced); a folder holding
    anything else is refused, so no user file is ever deleted.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise QsennError(f"{out}: exists and is not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in (WEIGHTS_FILE, CONFIG_FILE))
        if foreign:
            raise QsennError(f"{out}: holds other files ({', '.join(foreign[:3])}); "
                             "export into a new or empty folder")
    state = {k: v.detach().cpu().contiguous().clone()
             for k, v in predictor.net.state_dict().items()}
    config = export_config(predictor)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True,
                                                  ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("exported %s to %s (%d tensors)", predictor.source, out, len(state))
    return out


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({' '.join(str(err).split())})") \
            from None
    if not isinstance(config, dict) or config.get("export_format") != EXPORT_FORMAT:
        raise DataError(f"{path}: not a qsenn export config (export_format is not "
                        f"{EXPORT_FORMAT!r})")
    version = config.get("export_version")
    if not isinstance(version, int) or version > EXPORT_VERSION:
        raise DataError(f"{path}: export version {version!r} is newer than this qsenn "
                        f"(reads <= {EXPORT_VERSION}); upgrade qsenn")
    return config


def _concept_names(config: dict[str, Any], source: Path) -> dict[int, str]:
    raw = config.get("concept_names") or {}
    if not isinstance(raw, dict):
        raise DataError(f"{source}: concept_names must map feature indices to names")
    try:
        return {int(f): str(c) for f, c in raw.items()}
    except ValueError:
        raise DataError(f"{source}: concept_names keys must be feature indices") from None


def load(path: str | os.PathLike[str]) -> QsennPredictor:
    """The model exported to folder ``path`` (by ``qsenn export``), ready in eval mode on CPU.

    Reads ``config.json`` and ``model.safetensors`` only (no pickle). A folder without them, a
    config of another format or weights that do not fit the config are one :class:`DataError`
    line naming the file.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: export folder not found")
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    missing = [p.name for p in (config_path, weights_path) if not p.is_file()]
    if missing:
        raise DataError(f"{folder}: no exported model here (missing {', '.join(missing)}; "
                        "write one with `qsenn export MODEL --out DIR`)")
    config = _read_config(config_path)
    metadata = metadata_from_dict(config, str(config_path))
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(f"{weights_path}: not a readable safetensors file "
                        f"({' '.join(str(err).split())})") from None
    net = model_from_state(metadata, state, str(weights_path))
    predictor = QsennPredictor(net, metadata, _concept_names(config, config_path),
                               source=str(folder))
    layer = predictor.sparse_layer
    selected = [int(j) for j in layer.selection] if layer is not None else None
    if config.get("selected_features") != selected:
        raise DataError(f"{config_path}: selected_features {config.get('selected_features')} "
                        f"do not match the weights' selection {selected}")
    return predictor
