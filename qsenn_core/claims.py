"""Claims report: the paper's directional claims, re-measured on the synthetic benchmark.

A queued ``dvc exp`` sweep trains, for each dataset (``synth`` and its TravelingBirds-style
variant ``synth_travelingbirds``) and each seed (default 0 1 2), five experiments named
``claims-<dataset>-<variant>-s<seed>``, all on the CPU budget of the default params (9
fine-tuning epochs in all):

- ``dense``: ``train.beta=0``. The paper's *Dense* and *glm-saga_5* rows are "a conventionally
  trained model" (Section 4, before Table 1), i.e. trained without the Feature Diversity Loss:
  this experiment's ``metrics/dense.json`` and ``metrics/glm5.json`` are those rows. Only the
  dense stages run (``evaluate_dense``, ``evaluate_glm5``).
- ``qsenn``: the default params. Its ``metrics/final.json`` is the *Q-SENN* row; its
  ``metrics/dense.json`` is the model SLDD and Q-SENN start from (trained with L_div, eq. 2),
  reported as the row *dense + L_div*.
- ``no-quant``: ``quant.enabled=false``, *w/o quantization* (Table 4).
- ``no-iter``: one ternary round of 9 epochs (lr x0.4 every 3 epochs), *w/o iteration*
  (Table 4).
- ``sldd``: ``no-iter`` without quantization, the *SLDD-Model* (Table 1).

``data.root`` stays ``data/synth`` for both datasets: ``prepare_data`` writes the CUB tree and
``TravelingBirds/CUB_fixed`` under it. Only the stages that write the metrics run
(:data:`TARGETS`: ``evaluate_dense``, ``evaluate_glm5``, the ``evaluate`` group and
``summarize``; the quantize stages are upstream of ``evaluate`` and the W^Q change is read from
``metrics/iter_<i>.json``), so CLIP, ``align``, ``explain`` and ``atlas`` are skipped. The
``qsenn`` and ``dense`` experiments are queued first: they train the dense models, and the
variants then hit DVC's run cache for ``train_dense`` and the other shared stages.

The report has, per dataset, the rows of the paper's Table 1 / Table 4 (dense, glm-saga_5,
dense + L_div, SLDD-Model, Q-SENN, w/o quantization, w/o iteration) with ``mean ± std``
(sample std) over the seeds, and one line per claim:

(a) synth: Q-SENN keeps >= 97% of the dense accuracy (Table 1's ImageNet statement; the ratio
    per seed, then mean ± std);
(b) diversity@5: Q-SENN > SLDD-Model > dense (Table 1, Table 4), two comparisons;
(c) dependence gamma: Q-SENN < SLDD-Model (Table 1);
(d) binary features: Q-SENN > dense (Table 4 and the Grounding section) and Q-SENN > w/o
    quantization (the ablation behind "the quantization leads to more binary features");
(e) synth_travelingbirds: the accuracy of Q-SENN and of the SLDD-Model well above dense
    (Table 1, column T: robustness to spurious correlations), and Q-SENN above the SLDD-Model
    (the Fidelity section: Q-SENN's robustness is the best of all compared models), and
    Q-SENN above w/o iteration (Table 4: "the iteration leads to more robustness");
(f) W^Q converges: the assignments changed from iteration 2 to 3 are fewer than from 1 to 2
    (supplement, Figure 8), on the ``qsenn`` experiments.

(b)-(d) and (f) are judged on each dataset.

**The rule.** An ordered comparison "a better than b" is PASS when the means are in the claimed
order and the gap exceeds twice the standard error of the difference,
``sqrt(s_a^2/n_a + s_b^2/n_b)`` (sample std s, n seeds); WEAK when the order holds (or ties)
within that noise; FAIL when the order is reversed. With a single seed on either side the std is
undefined: the line says ``n=1`` and the verdict is WEAK at best. The threshold claim (a) is
PASS when the mean ratio is >= 0.97 (with >= 2 seeds), WEAK when it is below but within two
standard errors of the mean (or n=1 and the ratio >= 0.97), FAIL otherwise. A comparison with
no data on one side is N/A. Beside the verdict each ordered line gives the paired reading, the
mean ± std of the per-seed gap over the seeds both sides share (variants of one seed start from
the same dense model, so the per-seed gap is often much less noisy); it does not change the
verdict.

Command line (run inside the project)::

    python -m qsenn_core.claims queue [--seeds 0 1 2] [--datasets synth synth_travelingbirds]
                                      [--variants qsenn dense ...] [--budget cpu|paper]
                                      [--set KEY=VALUE ...] [--dry-run]
    python -m qsenn_core.claims report [--input FILE|-] [--md PATH] [--csv PATH]
    python -m qsenn_core.claims run [--seeds ...] [--datasets ...] [--set ...] [-j 1]

``--budget paper`` swaps the CPU fine-tuning schedule for the paper's (:data:`BUDGETS`; names
end in ``-paper``, and ``report --budget paper`` reads only those); ``--variants`` picks a
subset of the five. ``--set KEY=VALUE`` adds one ``-S`` override to every experiment (the
report lists every param that differs from ``params.yaml`` with the variant's overrides, so
such a sweep says so).
``run`` queues the sweep, starts ``dvc queue start -j J``, polls ``dvc queue status`` until
nothing is queued or running and writes ``reports/claims.md`` and ``reports/claims.csv`` (from
the experiments of all commits, ``-A``).
``report`` exits 2 with one line when ``dvc exp show`` holds no ``claims-*`` experiment, 1 on
other errors; missing experiments are a warning in the report.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qsenn_core.compare import (
    Experiment,
    SeedGroup,
    experiments,
    flatten,
    load_exp_show,
    mean_std,
    number,
    seed_csv,
    seed_markdown,
    seed_table,
)
from qsenn_core.errors import ParamsError, QsennError
from qsenn_core.io import write_text
from qsenn_core.metric_columns import COMPARE_COLUMNS, HIGHER, LOWER, METRIC_COLUMNS, MetricColumn
from qsenn_core.params import params_from_dict

log = logging.getLogger(__name__)

#: Experiment names start with this.
PREFIX = "claims"
#: The datasets of the sweep (both drawn by ``prepare_data`` under ``data/synth``).
DATASETS: tuple[str, ...] = ("synth", "synth_travelingbirds")
#: The seeds of the sweep unless ``--seeds`` is given.
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
#: The stages ``dvc exp run`` is asked for: they (and their upstream) write every metrics file
#: the report reads; CLIP, align, explain and atlas are left out.
TARGETS: tuple[str, ...] = ("evaluate_dense", "evaluate_glm5", "evaluate", "summarize")
#: The conventional dense model needs only the dense stages.
DENSE_TARGETS: tuple[str, ...] = ("evaluate_dense", "evaluate_glm5")

FINAL = "metrics/final.json"
#: Where ``run`` writes the report.
REPORT_MD = Path("reports/claims.md")
REPORT_CSV = Path("reports/claims.csv")

#: One ternary round of the whole CPU fine-tuning budget (Table 4, "w/o iteration").
NO_ITER: tuple[str, ...] = ("~iterations.2", "~iterations.3", "iterations.1.epochs=9",
                            "+iterations.1.lr_step=3", "+iterations.1.lr_gamma=0.4",
                            "final=iter_1")
NO_QUANT: tuple[str, ...] = ("quant.enabled=false",)

#: The paper's fine-tuning schedule (supplement, "Implementation Details"): N = 4 rounds of
#: 10 + 10 + 10 + 40 epochs, the last with the lr x0.4 every 10 epochs. The same overrides as
#: ``params/synth-paper-finetune.yaml`` (a test keeps the two equal).
PAPER_CHAIN: tuple[str, ...] = (
    "iterations.1.epochs=10", "iterations.2.epochs=10", "iterations.3.epochs=10",
    "+iterations.4={prev: iter_3, epochs: 40, lr_step: 10, lr_gamma: 0.4}", "final=iter_4")
#: The paper's SLDD-Model schedule, one round of 40 epochs with the lr x0.4 every 10 ("training
#: for 70 instead of just 40 epochs"); as ``params/synth-paper-finetune-no-iter.yaml``.
PAPER_SINGLE_ROUND: tuple[str, ...] = (
    "iterations.1.epochs=40", "+iterations.1.lr_step=10", "+iterations.1.lr_gamma=0.4",
    "~iterations.2", "~iterations.3", "final=iter_1")


@dataclass(frozen=True)
class Budget:
    """A fine-tuning budget: the Q-SENN chain of rounds and the single round of the
    "w/o iteration" and SLDD-Model variants, as ``-S`` overrides on top of params.yaml."""

    chain: tuple[str, ...]
    single_round: tuple[str, ...]
    #: The preset files holding the same schedules (None: params.yaml's own chain).
    presets: tuple[str, str] | None = None


#: ``cpu``: params.yaml's 3 x 3 epochs (9 in one round without iteration); its experiment names
#: carry no suffix. ``paper``: the paper's 10 + 10 + 10 + 40 (40 in one round), names end in
#: ``-paper``; about 8x the fine-tuning time of ``cpu``.
BUDGETS: Mapping[str, Budget] = {
    "cpu": Budget((), NO_ITER),
    "paper": Budget(PAPER_CHAIN, PAPER_SINGLE_ROUND,
                    ("params/synth-paper-finetune.yaml",
                     "params/synth-paper-finetune-no-iter.yaml")),
}
DEFAULT_BUDGET = "cpu"


def budget_text(budget: str, base: str | Path = "params.yaml") -> str:
    """``paper: 10 + 10 + 10 + 40 fine-tuning epochs, 40 in one round without iteration``
    (``base`` with the budget's overrides; only the name when ``base`` does not exist)."""
    if not Path(base).is_file():
        return budget
    schedule = BUDGETS[budget]
    chain = applied_params(schedule.chain, base)["iterations"].values()
    (single,) = applied_params(schedule.single_round, base)["iterations"].values()
    epochs = " + ".join(str(it["epochs"]) for it in chain)
    return (f"{budget}: {epochs} fine-tuning epochs, {single['epochs']} in one round without "
            "iteration")


def variant_overrides(variant: str, budget: str = DEFAULT_BUDGET) -> tuple[str, ...]:
    """A variant's ``-S`` overrides on top of params.yaml under ``budget``."""
    schedule = BUDGETS[budget]
    return {
        "qsenn": schedule.chain,
        "dense": ("train.beta=0",),  # no fine-tuning: the same experiment under every budget
        "no-quant": schedule.chain + NO_QUANT,
        "no-iter": schedule.single_round,
        "sldd": schedule.single_round + NO_QUANT,
    }[variant]


#: The variants, qsenn first (it is queued first); :func:`variant_overrides` gives each one's
#: overrides.
VARIANTS: tuple[str, ...] = ("qsenn", "dense", "no-quant", "no-iter", "sldd")

PASS, WEAK, FAIL, NA = "PASS", "WEAK", "FAIL", "N/A"
#: Claim (a): Q-SENN keeps this fraction of the dense accuracy.
ACCURACY_RATIO = 0.97

_NAME = re.compile(rf"^{PREFIX}-(?P<dataset>[a-z0-9_]+)-(?P<variant>{'|'.join(VARIANTS)})"
                   rf"-s(?P<seed>\d+)(?:-(?P<budget>{'|'.join(BUDGETS)}))?$")


class ClaimsError(QsennError):
    """The sweep cannot be queued, watched or reported."""


class NoClaimsExperiments(ClaimsError):
    """``dvc exp show`` holds no ``claims-*`` experiment with results (exit code 2)."""


# --------------------------------------------------------------------------- the sweep


@dataclass(frozen=True)
class Setting:
    """One experiment of the sweep."""

    dataset: str
    variant: str
    seed: int
    #: ``--set`` overrides shared by the whole sweep (applied before the variant's own).
    extra: tuple[str, ...] = ()
    #: A key of :data:`BUDGETS`.
    budget: str = DEFAULT_BUDGET

    @property
    def name(self) -> str:
        """``claims-<dataset>-<variant>-s<seed>``, then ``-<budget>`` unless the budget is
        ``cpu``."""
        suffix = "" if self.budget == DEFAULT_BUDGET else f"-{self.budget}"
        return f"{PREFIX}-{self.dataset}-{self.variant}-s{self.seed}{suffix}"

    @property
    def targets(self) -> tuple[str, ...]:
        """The stages ``dvc exp run`` is asked for (with their upstream)."""
        return DENSE_TARGETS if self.variant == "dense" else TARGETS

    @property
    def overrides(self) -> tuple[str, ...]:
        """The Hydra ``-S`` overrides of ``dvc exp run`` (seed and dataset always explicit)."""
        return (f"seed={self.seed}", f"data.name={self.dataset}", *self.extra,
                *variant_overrides(self.variant, self.budget))


def sweep(seeds: Sequence[int] = DEFAULT_SEEDS, datasets: Sequence[str] = DATASETS,
          extra: Sequence[str] = (), budget: str = DEFAULT_BUDGET,
          variants: Sequence[str] = VARIANTS) -> list[Setting]:
    """Every setting in queue order: all ``qsenn`` and ``dense`` experiments (they train the
    dense models) first, then the Table 4 variants, which reuse the L_div-trained dense models
    through the run cache. ``variants`` picks a subset (in :data:`VARIANTS` order)."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or budget not in BUDGETS:
        what = f"variant(s) {', '.join(unknown)}" if unknown else f"budget {budget}"
        raise ClaimsError(f"unknown {what} (variants: {', '.join(VARIANTS)}; budgets: "
                          f"{', '.join(BUDGETS)})")
    trains = [v for v in ("qsenn", "dense") if v in variants]
    others = [v for v in VARIANTS if v in variants and v not in trains]
    extra = tuple(extra)
    first = [Setting(d, v, s, extra, budget) for v in trains for d in datasets for s in seeds]
    rest = [Setting(d, v, s, extra, budget) for d in datasets for s in seeds for v in others]
    return first + rest


def queue_command(setting: Setting) -> list[str]:
    """``dvc exp run --queue -n NAME -S ... TARGETS`` for one setting."""
    command = ["dvc", "exp", "run", "--queue", "-n", setting.name]
    for override in setting.overrides:
        command += ["-S", override]
    return [*command, *setting.targets]


def applied_params(overrides: Sequence[str], base: str | Path = "params.yaml") -> dict[str, Any]:
    """``base`` after DVC's own Hydra code applies ``overrides`` (on a temporary copy)."""
    from dvc.utils.hydra import apply_overrides  # dvc is a dependency of the project

    with tempfile.TemporaryDirectory(prefix="qsenn-claims-") as tmp:
        target = Path(tmp) / "params.yaml"
        shutil.copy(base, target)
        apply_overrides(target, list(overrides))
        return yaml.safe_load(target.read_text())


def check_settings(settings: Sequence[Setting], base: str | Path = "params.yaml") -> None:
    """Validate every setting's params (qsenn_core.params) before anything is queued.

    Raises:
        ParamsError: one line naming the experiment and the key at fault.
    """
    for setting in settings:
        try:
            params_from_dict(applied_params(setting.overrides, base))
        except ParamsError as err:
            raise ParamsError(f"{setting.name}: {err}") from None
        except Exception as err:  # Hydra's override errors
            first = (str(err).splitlines() or [type(err).__name__])[0]
            raise ParamsError(f"{setting.name}: overrides not applicable ({first})") from None


def _dvc(command: Sequence[str]) -> list[str]:
    """``dvc ...`` as argv for the dvc of this interpreter's environment."""
    return [sys.executable, "-m", *command]


def queue(settings: Sequence[Setting], *, dry_run: bool = False,
          base: str | Path = "params.yaml") -> int:
    """Queue the sweep (or print its commands); dvc's exit code of the first failure, else 0."""
    commands = [queue_command(s) for s in settings]
    if dry_run:
        for command in commands:
            sys.stdout.write(shlex.join(command) + "\n")
        return 0
    check_settings(settings, base)
    for i, command in enumerate(commands, 1):
        log.info("queue %d/%d: %s", i, len(commands), shlex.join(command))
        code = subprocess.run(_dvc(command), check=False).returncode
        if code != 0:
            log.error("dvc exp run --queue failed for %s (exit %d)", settings[i - 1].name, code)
            return code
    return 0


_PENDING = frozenset({"Queued", "Running"})
_WORKERS = re.compile(r"Worker status:\s*(\d+) active,\s*(\d+) idle")


def pending_tasks(status_text: str) -> int:
    """The tasks that ``dvc queue status`` lists as Queued or Running (the last column)."""
    return sum(1 for line in status_text.splitlines()
               if line.split() and line.split()[-1] in _PENDING)


def worker_count(status_text: str) -> int | None:
    """Active + idle workers of ``dvc queue status``; None when the line is absent."""
    match = _WORKERS.search(status_text)
    return None if match is None else int(match[1]) + int(match[2])


def wait_for_queue(poll_s: float = 30.0, max_idle_polls: int = 3) -> None:
    """Poll ``dvc queue status`` until no task is queued or running, logging progress.

    Raises:
        ClaimsError: the status cannot be read, or tasks are pending with no worker for
            ``max_idle_polls`` polls in a row.
    """
    last, no_worker = -1, 0
    while True:
        proc = subprocess.run(_dvc(["dvc", "queue", "status"]), capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            line = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ClaimsError(f"dvc queue status failed: {line}")
        pending = pending_tasks(proc.stdout)
        if pending == 0:
            log.info("queue empty: every experiment has finished")
            return
        if pending != last:
            log.info("%d experiment(s) queued or running", pending)
            last = pending
        no_worker = no_worker + 1 if worker_count(proc.stdout) == 0 else 0
        if no_worker >= max_idle_polls:
            raise ClaimsError(f"{pending} experiment(s) pending but no queue worker is running "
                              "(dvc queue start)")
        time.sleep(poll_s)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Reading:
    """One model's metrics in one variant: a row of Table 1 / Table 4."""

    label: str
    variant: str
    metrics_file: str


#: The rows of the report's table, in the paper's order (Table 1, then Table 4's ablations).
ROWS: tuple[Reading, ...] = (
    Reading("dense", "dense", "metrics/dense.json"),
    Reading("glm-saga_5", "dense", "metrics/glm5.json"),
    Reading("dense + L_div", "qsenn", "metrics/dense.json"),
    Reading("SLDD-Model", "sldd", FINAL),
    Reading("Q-SENN", "qsenn", FINAL),
    Reading("w/o quantization", "no-quant", FINAL),
    Reading("w/o iteration", "no-iter", FINAL),
)
_ROW = {r.label: r for r in ROWS}
#: W^Q assignments changed (supplement, Figure 8): iteration i's file holds the change i-1 -> i.
CHANGE_1_2 = Reading("iteration 1->2", "qsenn", "metrics/iter_2.json")
CHANGE_2_3 = Reading("iteration 2->3", "qsenn", "metrics/iter_3.json")

#: The columns every table leads with (Table 1: accuracy, diversity@5, dependence; Table 4:
#: binary features); the other compare columns follow where the model files have them.
HEADLINE = ("accuracy", "diversity_at_5", "dependence", "binary_features")

Found = dict[tuple[str, str, int], Experiment]


def claims_experiments(rows: Sequence[Experiment], budget: str = DEFAULT_BUDGET) -> Found:
    """``(dataset, variant, seed) -> experiment`` of the ``claims-*`` experiments of ``budget``
    in ``rows`` (those of the other budgets are left out).

    Names that do not parse or name an unknown dataset are skipped with a warning, and so is a
    second experiment of the same name (``dvc exp show -A`` over several commits: the first,
    newest one is kept).
    """
    found: Found = {}
    for exp in rows:
        if not exp.name.startswith(f"{PREFIX}-"):
            continue
        match = _NAME.match(exp.name)
        if match is None or match["dataset"] not in DATASETS:
            log.warning("%s: not a claims experiment name, skipped", exp.name)
            continue
        if (match["budget"] or DEFAULT_BUDGET) != budget:
            continue
        key = (match["dataset"], match["variant"], int(match["seed"]))
        if key in found:
            log.warning("%s: found twice, keeping the first", exp.name)
            continue
        params = flatten(exp.params)
        if params.get("data.name", key[0]) != key[0] or params.get("seed", key[2]) != key[2]:
            log.warning("%s: params say data.name=%s seed=%s", exp.name,
                        params.get("data.name"), params.get("seed"))
        found[key] = exp
    return found


def _members(found: Found, dataset: str, variant: str) -> list[Experiment]:
    return [exp for (d, v, _), exp in sorted(found.items()) if d == dataset and v == variant]


def dataset_table(found: Found, dataset: str) -> list[dict[str, Any]]:
    """Table 1 / Table 4 of one dataset: one :func:`qsenn_core.compare.seed_table` row per
    :data:`ROWS` entry (``setting`` is the row label), with ``dataset`` first."""
    out = []
    for reading in ROWS:
        group = SeedGroup(reading.label, _members(found, dataset, reading.variant))
        (row,) = seed_table([group], reading.metrics_file, COMPARE_COLUMNS)
        out.append({"dataset": dataset, **row})
    return out


def table_columns(rows: Sequence[Mapping[str, Any]]) -> list[MetricColumn]:
    """:data:`HEADLINE` first, then the other compare columns that some row has a value of."""
    ordered = [METRIC_COLUMNS[k] for k in HEADLINE]
    ordered += [c for c in COMPARE_COLUMNS if c.key not in HEADLINE]
    return [c for c in ordered if c.key in HEADLINE
            or any(r.get(f"{c.key}_mean") is not None for r in rows)]


# --------------------------------------------------------------------------- the claims


@dataclass(frozen=True)
class Summary:
    """Mean and sample std of one reading over the seeds (std None with fewer than 2)."""

    n: int
    mean: float | None
    std: float | None

    def text(self, digits: int = 1) -> str:
        """``70.1 ± 1.0 (n=3)``, ``70.1 (n=1)``, ``- (n=0)``."""
        if self.mean is None:
            return "- (n=0)"
        std = "" if self.std is None else f" ± {self.std:.{digits}f}"
        return f"{self.mean:.{digits}f}{std} (n={self.n})"


def summarize(values: Sequence[float]) -> Summary:
    """:class:`Summary` of ``values`` (sample std, ddof 1)."""
    values = list(values)
    return Summary(len(values), *mean_std(values))


def values(found: Found, dataset: str, reading: Reading, key: str) -> dict[int, float]:
    """``seed -> value`` of metric ``key`` in ``reading``'s file, where the experiment has it."""
    out: dict[int, float] = {}
    for (d, v, seed), exp in sorted(found.items()):
        if d != dataset or v != reading.variant:
            continue
        value = number(exp.metrics.get(reading.metrics_file, {}).get(key))
        if value is not None:
            out[seed] = value
    return out


def judge_order(a: Summary, b: Summary, better: int) -> tuple[str, str]:
    """(verdict, numbers) of the claim "a is better than b" (``better``: HIGHER means a > b).

    PASS: in the claimed order by more than 2 SE of the difference, sqrt(s_a^2/n_a +
    s_b^2/n_b); WEAK: in order (or tied) within that; FAIL: reversed; N/A: a side has no data.
    With n=1 on a side the SE is undefined and the verdict is WEAK at best.
    """
    if a.mean is None or b.mean is None:
        return NA, "no data"
    gap = (a.mean - b.mean) * (1 if better == HIGHER else -1)
    if a.std is None or b.std is None:
        return (WEAK if gap >= 0 else FAIL), f"gap {gap:+.2f}, 2·SE undefined (n=1)"
    noise = 2 * math.sqrt(a.std ** 2 / a.n + b.std ** 2 / b.n)
    detail = f"gap {gap:+.2f}, 2·SE {noise:.2f}"
    if gap < 0:
        return FAIL, detail
    return (PASS if gap > noise else WEAK), detail


def paired_text(a: Mapping[int, float], b: Mapping[int, float], better: int) -> str:
    """``paired over 3 seeds: +1.20 ± 0.40, 2·SE 0.46``: the per-seed gap a - b (sign flipped
    for LOWER), over the seeds both sides have.

    An extra reading, not the verdict: variants of one seed share their dense model (and the
    data), so the per-seed gap removes what the seeds have in common and can be far less noisy
    than the unpaired comparison. Empty when fewer than 2 seeds are shared.
    """
    sign = 1 if better == HIGHER else -1
    gaps = [sign * (a[s] - b[s]) for s in sorted(a.keys() & b.keys())]
    if len(gaps) < 2:
        return ""
    mean, std = statistics.fmean(gaps), statistics.stdev(gaps)
    return (f"paired over {len(gaps)} seeds: {mean:+.2f} ± {std:.2f}, "
            f"2·SE {2 * std / math.sqrt(len(gaps)):.2f}")


def judge_at_least(ratio: Summary, threshold: float = ACCURACY_RATIO) -> tuple[str, str]:
    """(verdict, numbers) of the claim "mean ratio >= threshold" (claim (a)).

    PASS: mean >= threshold with >= 2 seeds; WEAK: below but within 2 SE (s/sqrt(n)) of it,
    or a single seed at or above it; FAIL otherwise; N/A without data.
    """
    if ratio.mean is None:
        return NA, "no data"
    if ratio.std is None:
        return (WEAK if ratio.mean >= threshold else FAIL), "2·SE undefined (n=1)"
    noise = 2 * ratio.std / math.sqrt(ratio.n)
    detail = f"threshold {threshold:.2f}, 2·SE {noise:.4f}"
    if ratio.mean >= threshold:
        return PASS, detail
    return (WEAK if ratio.mean + noise >= threshold else FAIL), detail


@dataclass(frozen=True)
class OrderClaim:
    """A directional claim "a better than b" on one metric, as the paper states it."""

    claim: str
    key: str
    a: Reading
    b: Reading
    better: int  # HIGHER: a > b; LOWER: a < b
    datasets: tuple[str, ...]
    source: str


ORDER_CLAIMS: tuple[OrderClaim, ...] = (
    OrderClaim("b", "diversity_at_5", _ROW["Q-SENN"], _ROW["SLDD-Model"], HIGHER, DATASETS,
               "Table 1, Table 4"),
    OrderClaim("b", "diversity_at_5", _ROW["SLDD-Model"], _ROW["dense"], HIGHER, DATASETS,
               "Table 1"),
    OrderClaim("c", "dependence", _ROW["Q-SENN"], _ROW["SLDD-Model"], LOWER, DATASETS,
               "Table 1"),
    OrderClaim("d", "binary_features", _ROW["Q-SENN"], _ROW["dense"], HIGHER, DATASETS,
               "Table 4"),
    OrderClaim("d", "binary_features", _ROW["Q-SENN"], _ROW["w/o quantization"], HIGHER,
               DATASETS, "Table 4: the quantization leads to more binary features"),
    OrderClaim("e", "accuracy", _ROW["Q-SENN"], _ROW["dense"], HIGHER,
               ("synth_travelingbirds",), "Table 1, TravelingBirds"),
    OrderClaim("e", "accuracy", _ROW["SLDD-Model"], _ROW["dense"], HIGHER,
               ("synth_travelingbirds",), "Table 1, TravelingBirds"),
    OrderClaim("e", "accuracy", _ROW["Q-SENN"], _ROW["SLDD-Model"], HIGHER,
               ("synth_travelingbirds",),
               "Table 1, TravelingBirds: Q-SENN the most robust, SLDD-Model below it"),
    OrderClaim("e", "accuracy", _ROW["Q-SENN"], _ROW["w/o iteration"], HIGHER,
               ("synth_travelingbirds",),
               "Table 4: the iteration leads to more robustness"),
    OrderClaim("f", "assignments_changed", CHANGE_2_3, CHANGE_1_2, LOWER, DATASETS,
               "supplement, Figure 8"),
)


@dataclass(frozen=True)
class ClaimResult:
    """One line of the claims section."""

    claim: str
    dataset: str
    statement: str
    verdict: str
    detail: str

    def line(self) -> str:
        """``- **PASS** (b) synth: ...: numbers``."""
        return f"- **{self.verdict}** ({self.claim}) {self.dataset}: {self.statement}: " \
               f"{self.detail}"


def accuracy_claim(found: Found, dataset: str = "synth") -> ClaimResult:
    """Claim (a): Q-SENN's accuracy / the dense accuracy per seed (same ``qsenn`` experiment),
    mean >= 0.97 (Table 1: "more than 97% of the dense model's accuracy")."""
    qsenn = values(found, dataset, _ROW["Q-SENN"], "accuracy")
    dense = values(found, dataset, _ROW["dense"], "accuracy")
    ratios = [qsenn[s] / dense[s] for s in sorted(qsenn.keys() & dense.keys()) if dense[s]]
    ratio = summarize(ratios)
    verdict, detail = judge_at_least(ratio)
    return ClaimResult("a", dataset, f"Q-SENN accuracy >= {ACCURACY_RATIO:.0%} of dense",
                       verdict, f"ratio {ratio.text(3)}; {detail}")


def order_claim(found: Found, dataset: str, claim: OrderClaim) -> ClaimResult:
    """One :class:`OrderClaim` judged on one dataset (:func:`judge_order`)."""
    column = METRIC_COLUMNS[claim.key]
    a_seeds = values(found, dataset, claim.a, claim.key)
    b_seeds = values(found, dataset, claim.b, claim.key)
    a, b = summarize(list(a_seeds.values())), summarize(list(b_seeds.values()))
    verdict, detail = judge_order(a, b, claim.better)
    paired = paired_text(a_seeds, b_seeds, claim.better)
    if paired:
        detail = f"{detail}; {paired}"
    sign = ">" if claim.better == HIGHER else "<"
    statement = f"{column.label} {claim.a.label} {sign} {claim.b.label} ({claim.source})"
    digits = column.digits
    return ClaimResult(claim.claim, dataset, statement, verdict,
                       f"{a.text(digits)} vs {b.text(digits)}; {detail}")


def judge_claims(found: Found, datasets: Sequence[str] = DATASETS) -> list[ClaimResult]:
    """Every claim line in the order (a)-(f); within a claim, by dataset, then comparison."""
    results = [accuracy_claim(found)] if "synth" in datasets else []
    letters = dict.fromkeys(c.claim for c in ORDER_CLAIMS)
    for letter in letters:
        results += [order_claim(found, d, c) for d in datasets for c in ORDER_CLAIMS
                    if c.claim == letter and d in c.datasets]
    return results


# --------------------------------------------------------------------------- the report

RULE = ("An ordered comparison is PASS when the means are in the claimed order and the gap "
        "exceeds twice the standard error of the difference, sqrt(s_a^2/n_a + s_b^2/n_b) "
        "(sample std s over n seeds); WEAK when the order holds (or ties) within that noise; "
        "FAIL when the order is reversed. With n=1 the std is undefined and the verdict is WEAK "
        "at best. Claim (a) is PASS when the mean ratio is >= 0.97, WEAK when it is below but "
        "within 2 SE of the mean, FAIL otherwise. N/A: no data on one side. The paired "
        "reading (mean ± std of the per-seed gap over the seeds both sides share) is "
        "reported beside it and does not change the verdict.")


def missing(found: Found, expected: Sequence[Setting]) -> list[str]:
    """Names of the expected experiments without results."""
    return [s.name for s in expected if (s.dataset, s.variant, s.seed) not in found]


def found_line(found: Found, expected: Sequence[Setting]) -> str:
    """``Found 22 claims experiments (24 expected); missing: ...``."""
    gone = missing(found, expected)
    tail = f"missing: {', '.join(gone)}" if gone else "none missing"
    return f"Found {len(found)} claims experiments ({len(expected)} expected); {tail}."


def params_off_sweep(found: Found, base: str | Path = "params.yaml",
                     budget: str = DEFAULT_BUDGET) -> list[str]:
    """One line per dataset and param value that differs from what the sweep defines.

    An experiment's params are compared with ``base`` after that experiment's seed, dataset and
    variant overrides under ``budget`` (without any ``--set``): what a ``--set`` changed, or a
    ``params.yaml`` that changed since the sweep was queued, shows here as ``dataset: key =
    value (n of m experiments; params.yaml: old)``. Empty when ``base`` does not exist.
    """
    if not Path(base).is_file():
        return []
    counts: dict[tuple[str, str, str, str], int] = {}
    per_dataset: dict[str, int] = {}
    for (dataset, variant, seed), exp in sorted(found.items()):
        per_dataset[dataset] = per_dataset.get(dataset, 0) + 1
        setting = Setting(dataset, variant, seed, budget=budget)
        defined = flatten(applied_params(setting.overrides, base))
        for key, value in flatten(exp.params).items():
            if key in defined and defined[key] != value:
                entry = (dataset, key, repr(value), repr(defined[key]))
                counts[entry] = counts.get(entry, 0) + 1
    return [f"{dataset}: {key} = {value} ({n} of {per_dataset[dataset]} experiments; "
            f"{Path(base).name}: {old})"
            for (dataset, key, value, old), n in sorted(counts.items())]


def report(found: Found, expected: Sequence[Setting], base: str | Path = "params.yaml",
           budget: str = DEFAULT_BUDGET) -> tuple[str, str]:
    """(Markdown report, CSV of the tables) of the claims experiments ``found`` (of fine-tuning
    budget ``budget``); the params that differ from ``base`` with each variant's overrides are
    listed under the first line.

    Raises:
        NoClaimsExperiments: ``found`` is empty.
    """
    if not found:
        raise NoClaimsExperiments("no claims-* experiment with results in dvc exp show "
                                  "(python -m qsenn_core.claims run; -A for experiments "
                                  "based on earlier commits)")
    datasets = [d for d in DATASETS if any(k[0] == d for k in found)]
    parts = ["# Q-SENN claims on the synthetic benchmark", "",
             f"Fine-tuning budget {budget_text(budget, base)}.", "",
             found_line(found, expected), ""]
    off = params_off_sweep(found, base, budget)
    if off:
        parts += ["Params that differ from the sweep's definition (params.yaml with the "
                  "variant's overrides):", "", *(f"- {line}" for line in off), ""]
    rows: list[dict[str, Any]] = []
    for dataset in datasets:
        table = dataset_table(found, dataset)
        rows += table
        parts += [f"## {dataset}: Table 1 / Table 4 (mean ± sample std over seeds)", "",
                  seed_markdown(table, table_columns(table))]
    results = judge_claims(found, datasets)
    counts = {v: sum(r.verdict == v for r in results) for v in (PASS, WEAK, FAIL, NA)}
    parts += ["## Claims", "", RULE, "", *(r.line() for r in results), "",
              " / ".join(f"{n} {v}" for v, n in counts.items()), ""]
    return "\n".join(parts), seed_csv(rows)


def load_found(source: str | None, all_commits: bool = False,
               budget: str = DEFAULT_BUDGET) -> Found:
    """The claims experiments of ``budget`` in ``dvc exp show --json`` (a file, ``-``, or dvc
    when None)."""
    shown = load_exp_show(source, dvc_args=["-A"] if all_commits else [])
    return claims_experiments(experiments(shown), budget)


def write_report(found: Found, expected: Sequence[Setting], md: Path | None,
                 csv_path: Path | None, budget: str = DEFAULT_BUDGET) -> str:
    """Build the report, write ``md``/``csv_path`` atomically where given, return the Markdown."""
    for name in missing(found, expected):
        log.warning("missing claims experiment %s", name)
    markdown, csv_text = report(found, expected, budget=budget)
    for path, text in ((md, markdown), (csv_path, csv_text)):
        if path is not None:
            write_text(path, text)
    return markdown


# --------------------------------------------------------------------------- command line


def _sweep_args(parser: argparse.ArgumentParser, *, settable: bool = False) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                        help="seeds (default: 0 1 2)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS,
                        help="datasets (default: both)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="variants (default: all five)")
    parser.add_argument("--budget", default=DEFAULT_BUDGET, choices=list(BUDGETS),
                        help="fine-tuning budget: cpu (params.yaml, 3 x 3 epochs) or paper "
                             "(10 + 10 + 10 + 40; names end in -paper)")
    if settable:
        parser.add_argument("--set", dest="extra", action="append", default=[],
                            metavar="KEY=VALUE",
                            help="a -S override for every experiment, e.g. "
                                 "finetune.lr_factor=10 (repeatable; the report lists it)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m qsenn_core.claims",
        description="Queue the claims sweep, and report the paper's Table 1/4 with PASS/WEAK/"
                    "FAIL per directional claim.")
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("queue", help="dvc exp run --queue every experiment of the sweep")
    _sweep_args(q, settable=True)
    q.add_argument("--dry-run", action="store_true", help="print the commands only")
    r = sub.add_parser("report", help="tables and claims from dvc exp show --json")
    _sweep_args(r)
    r.add_argument("--input", help="exp-show JSON file, or - for stdin (default: run dvc)")
    r.add_argument("-A", "--all-commits", action="store_true",
                   help="experiments of all commits (passed to dvc exp show)")
    r.add_argument("--md", type=Path, help="write the Markdown report here")
    r.add_argument("--csv", type=Path, help="write the tables as CSV here")
    a = sub.add_parser("run", help="queue, run the queue, wait, report to reports/claims.*")
    _sweep_args(a, settable=True)
    a.add_argument("-j", "--jobs", type=int, default=1, help="queue workers (default 1)")
    a.add_argument("--poll", type=float, default=30.0, help="seconds between status polls")
    return parser


def worker_env(jobs: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the queue workers: this interpreter's bin folder first on ``PATH``
    (the workers find ``dvc`` there) and, with ``jobs`` > 1, ``cpu_count // jobs`` torch
    threads per run (``OMP_NUM_THREADS``, unless already set).

    J runs that each start one thread per core oversubscribe the CPU; on a 2-core machine that
    made training 40-100x slower instead of 2x.
    """
    env = dict(os.environ if environ is None else environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    # The workers start `dvc exp run` through PATH: without this environment's bin folder on it
    # (a venv run as .venv/bin/python, not activated) they die with "No such file: 'dvc'".
    bindir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        env["PATH"] = os.pathsep.join([bindir, path]) if path else bindir
    return env


def _run(args: argparse.Namespace, expected: list[Setting]) -> int:
    code = queue(expected)
    if code != 0:
        return code
    start = ["dvc", "queue", "start", "-j", str(args.jobs)]
    env = worker_env(args.jobs)
    log.info("%s (OMP_NUM_THREADS=%s)", shlex.join(start), env.get("OMP_NUM_THREADS", "unset"))
    code = subprocess.run(_dvc(start), check=False, env=env).returncode
    if code != 0:
        return code
    wait_for_queue(args.poll)
    # all commits: a commit made while the sweep ran must not hide its experiments
    found = load_found(None, all_commits=True, budget=args.budget)
    sys.stdout.write(write_report(found, expected, REPORT_MD, REPORT_CSV, args.budget))
    log.info("wrote %s and %s", REPORT_MD, REPORT_CSV)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; exit 0, 2 when there is no claims experiment, 1 on other errors."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        expected = sweep(args.seeds, args.datasets, getattr(args, "extra", ()), args.budget,
                         args.variants)
        if args.command == "queue":
            return queue(expected, dry_run=args.dry_run)
        if args.command == "report":
            found = load_found(args.input, args.all_commits, args.budget)
            sys.stdout.write(write_report(found, expected, args.md, args.csv, args.budget))
            return 0
        return _run(args, expected)
    except NoClaimsExperiments as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except QsennError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
