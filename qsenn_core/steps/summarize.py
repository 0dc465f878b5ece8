"""Stage ``summarize``: ``metrics/final.json``, the metrics of the final iteration.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from qsenn_core.errors import DataError
from qsenn_core.io import write_json
from qsenn_core.params import Params

log = logging.getLogger(__name__)


def summarize(params: Params, metrics_dir: Path, out: Path) -> dict[str, dict]:
    """``metrics/final.json``: the metrics of the iteration named by ``final`` in params."""
    path = Path(metrics_dir) / f"{params.final}.json"
    try:
        final = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the final model's metrics ({err})") from None
    write_json(out, final)
    return final
