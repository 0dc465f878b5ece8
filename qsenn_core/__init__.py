"""qsenn_core: the compute library behind the Q-SENN DVC pipeline.

``qsenn_core.load(DIR)`` returns a model exported with ``qsenn export`` (see
:func:`qsenn_core.export.load`). It is resolved lazily (PEP 562), so ``import qsenn_core``, which
every DVC stage does, imports neither torch nor the export code.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public names resolved on first access: name -> the module that defines it.
_LAZY: dict[str, str] = {"load": "qsenn_core.export"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
