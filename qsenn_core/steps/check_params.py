"""Stage ``check_params``: the first stage of the DAG validates the whole params file.

Loading the params (:func:`qsenn_core.params.load_params`, done by every stage on entry) checks
types, ranges and the cross-field rules; this stage adds what needs the backbone code (the
architecture can take the image size). Its output is the same line whatever the params, so
later stages that depend on it never rerun because of it: it only orders the DAG so that a
wrong value stops ``dvc repro`` / ``dvc exp run`` before any training.
"""

from __future__ import annotations

from pathlib import Path

from qsenn_core.backbones import check_image_size
from qsenn_core.io import write_text
from qsenn_core.params import Params

CHECKED = "params.yaml passed validation\n"


def check_params(params: Params, out: Path) -> None:
    """Raise on the first problem; write :data:`CHECKED` to ``out``."""
    check_image_size(params.model.arch, params.data.image_size)
    write_text(out, CHECKED)
