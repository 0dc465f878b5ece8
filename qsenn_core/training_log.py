"""Training curves and end-of-training metrics of ``train_dense`` and ``finetune@i``, via DVCLive.

Each training stage logs into its own directory (``logs/dense``, ``logs/iter_<i>``), in DVCLive's
layout, which DVC and its editor integrations read:

- ``metrics.json``: the latest epoch's readings plus ``step`` (the epoch), rewritten after every
  epoch, so ``dvc exp show`` shows a queued experiment's progress while it trains; after the last
  epoch it also holds the stage's summary (``epochs``).
- ``plots/metrics/<reading>.tsv``: one curve per reading (``train_loss``, ``train_ce``,
  ``train_fdl``, ``train_accuracy``, ``test_accuracy``, ``lr``), with ``step`` = epoch (1-based).

The pipeline's ``dvc.yaml`` declares these files, so DVCLive writes no ``dvc.yaml`` of its own and
saves no experiment of its own. Nothing time-dependent is written (no timestamps, no system
monitor, no report), so a rerun with the same seed gives the same bytes and DVC's cache hits.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)


class TrainingLog:
    """A DVCLive logger for one training run; only the main process may create one."""

    def __init__(self, directory: str | Path) -> None:
        from dvclive import Live  # imports dvc: only paid by a run that logs

        # DVCLive draws a random experiment name with the global `random` generator; keep the
        # training's random stream independent of whether a logger is attached.
        state = random.getstate()
        try:
            self._live = Live(str(directory), dvcyaml=None, save_dvc_exp=False, report=None,
                              monitor_system=False)
        finally:
            random.setstate(state)
        self.directory = Path(directory)

    def log_epoch(self, record: Mapping[str, float]) -> None:
        """Log one epoch's readings (``record["epoch"]``, 1-based, becomes DVCLive's step)."""
        self._live.step = int(record["epoch"])
        for name, value in record.items():
            if name != "epoch":
                self._live.log_metric(name, float(value))
        self._live.next_step()

    def close(self, summary: Mapping[str, float | int]) -> None:
        """Add ``summary`` to ``metrics.json`` next to the last epoch's readings and finish."""
        self._live.summary.update(summary)
        self._live.end()
        log.info("training log: %s", self.directory)
