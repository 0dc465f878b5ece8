"""Compare experiments: `dvc exp show --json` -> the paper's Table 1 / Table 4 layout.

Rows are experiments (baseline commits and ``dvc exp run`` results), columns the interpretability
metrics of one model's metrics file (default ``metrics/final.json``, the final Q-SENN iteration):
the compare columns of :data:`qsenn_core.metric_columns.METRIC_COLUMNS` (accuracy, diversity@5,
dependence, alignment r, binary features, features per class, total features, correlation@5,
assignments changed). Each row also names the params it changes against its baseline commit, so
an ablation row reads ``quant.enabled=False``. The Markdown headers are the metrics' labels with
unit and direction; the CSV headers are the metrics' JSON keys.

With ``--by-seed`` experiments that differ only in ``seed`` become one row with the mean and
the sample standard deviation of every metric and the number of seeds (the paper's supplementary
tables report mean +- std over 5 seeds).

Command line (run inside the project; calls ``dvc exp show --json`` unless ``--input`` is given)::

    python -m qsenn_core.compare --md results.md --csv results.csv
    dvc exp show --json | python -m qsenn_core.compare --input - --model glm5
    python -m qsenn_core.compare --by-seed       # one row per setting: mean +- std, n seeds
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qsenn_core.errors import QsennError
from qsenn_core.metric_columns import COMPARE_COLUMNS, MetricColumn

log = logging.getLogger(__name__)

PARAMS_FILE = "params.yaml"


class CompareError(QsennError):
    """The experiment data cannot be read or turned into a table."""


@dataclass
class Experiment:
    """One row: an experiment (or a baseline commit) with its params and metrics files."""

    name: str
    rev: str
    baseline: str | None  # name of the baseline commit; None for a baseline itself
    params: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    changed: dict[str, Any] = field(default_factory=dict)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _files(data: Mapping[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """``{file: contents}`` of the ``metrics``/``params`` section of one exp-show record."""
    section = data.get(kind) or {}
    return {path: entry.get("data") or {} for path, entry in section.items()
            if isinstance(entry, Mapping)}


def _experiment(record: Mapping[str, Any], baseline: str | None) -> Experiment | None:
    data = record.get("data")
    if not isinstance(data, Mapping) or record.get("error"):
        return None
    rev = str(record.get("rev", ""))
    name = record.get("name") or (rev if rev == "workspace" else rev[:7])
    params = _files(data, "params").get(PARAMS_FILE, {})
    return Experiment(str(name), rev, baseline, params, _files(data, "metrics"))


def experiments(shown: Sequence[Mapping[str, Any]], *, workspace: bool = False) -> list[Experiment]:
    """Flatten parsed ``dvc exp show --json`` output into baseline and experiment rows.

    Queued, running and failed experiments (no results yet) are left out, and so is the
    workspace unless ``workspace`` is set. Each experiment's ``changed`` holds the flattened
    params that differ from its baseline commit.
    """
    if not isinstance(shown, Sequence) or isinstance(shown, (str, bytes)):
        raise CompareError("dvc exp show --json: expected a list of commits")
    rows: list[Experiment] = []
    for record in shown:
        if not isinstance(record, Mapping) or "rev" not in record:
            raise CompareError("dvc exp show --json: a commit entry without 'rev'")
        if record["rev"] == "workspace" and not workspace:
            continue
        base = _experiment(record, None)
        if base is None:
            continue
        rows.append(base)
        base_params = flatten(base.params)
        for group in record.get("experiments") or []:
            state = (group.get("executor") or {}).get("state", "success")
            if state not in ("success", None):
                log.info("skipping %s experiment %s", state, group.get("name"))
                continue
            for rev in group.get("revs") or []:
                exp = _experiment(rev, base.name)
                if exp is None or not exp.metrics:
                    continue
                exp_params = flatten(exp.params)
                exp.changed = {k: v for k, v in exp_params.items() if base_params.get(k) != v}
                exp.changed.update({k: None for k in base_params.keys() - exp_params.keys()})
                rows.append(exp)
    return rows


def number(value: Any) -> float | None:
    """``value`` as a float when it is a JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof 1) of ``values``; None where undefined (no / one value)."""
    return (statistics.fmean(values) if values else None,
            statistics.stdev(values) if len(values) > 1 else None)


def table(rows: Sequence[Experiment], metrics_file: str = "metrics/final.json",
          columns: Sequence[MetricColumn] = COMPARE_COLUMNS) -> list[dict[str, Any]]:
    """One dict per experiment: ``experiment``, ``baseline``, ``changes``, then each column's
    metric under its key.

    A metric missing from an experiment's ``metrics_file`` is None.
    """
    out = []
    for exp in rows:
        metrics = exp.metrics.get(metrics_file, {})
        row: dict[str, Any] = {
            "experiment": exp.name,
            "baseline": exp.baseline or "",
            "changes": " ".join(f"{k}={v}" for k, v in sorted(exp.changed.items())),
        }
        for col in columns:
            row[col.key] = number(metrics.get(col.key))
        out.append(row)
    return out


SEED_KEY = "seed"


@dataclass
class SeedGroup:
    """Experiments whose params are equal except for ``seed``."""

    label: str  # the params the group changes against its baseline (without seed), or "baseline"
    members: list[Experiment]

    @property
    def seeds(self) -> list[Any]:
        return [flatten(m.params).get(SEED_KEY) for m in self.members]


def seed_groups(rows: Sequence[Experiment]) -> list[SeedGroup]:
    """Group rows by all their params but ``seed`` (first-seen order). Rows whose metrics are
    missing stay in their group and count only where they have the metric."""
    groups: dict[tuple[tuple[str, str], ...], SeedGroup] = {}
    for exp in rows:
        flat = {k: v for k, v in flatten(exp.params).items() if k != SEED_KEY}
        key = tuple(sorted((k, json.dumps(v, sort_keys=True, default=str))
                           for k, v in flat.items()))
        if key not in groups:
            changed = {k: v for k, v in exp.changed.items() if k != SEED_KEY}
            label = " ".join(f"{k}={v}" for k, v in sorted(changed.items())) or "baseline"
            groups[key] = SeedGroup(label, [])
        groups[key].members.append(exp)
    return list(groups.values())


def seed_table(groups: Sequence[SeedGroup], metrics_file: str = "metrics/final.json",
               columns: Sequence[MetricColumn] = COMPARE_COLUMNS) -> list[dict[str, Any]]:
    """One dict per group: ``setting``, ``n_seeds``, ``seeds``, then ``<key>_mean`` and
    ``<key>_std`` (sample std, ddof 1; None with fewer than 2 values) of every column."""
    out = []
    for group in groups:
        row: dict[str, Any] = {"setting": group.label, "n_seeds": len(group.members),
                               "seeds": " ".join(str(s) for s in group.seeds)}
        for col in columns:
            values = [v for m in group.members
                      if (v := number(m.metrics.get(metrics_file, {}).get(col.key))) is not None]
            row[f"{col.key}_mean"], row[f"{col.key}_std"] = mean_std(values)
        out.append(row)
    return out


def seed_markdown(rows: Sequence[Mapping[str, Any]],
                  columns: Sequence[MetricColumn] = COMPARE_COLUMNS) -> str:
    """Markdown of :func:`seed_table` rows: ``mean ± std`` cells (``mean`` alone for one seed)."""
    headers = ["Setting", "Seeds", *(markdown_header(c) for c in columns)]
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join(["---", "---:"] + ["---:"] * len(columns)) + " |"]
    for row in rows:
        cells = [_cell(row["setting"], 0), str(row["n_seeds"])]
        for c in columns:
            mean, std = row[f"{c.key}_mean"], row[f"{c.key}_std"]
            cell = _cell(mean, c.digits)
            if mean is not None and std is not None:
                cell += f" ± {std:.{c.digits}f}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seed_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV of :func:`seed_table` rows, full precision, empty cells for missing values."""
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else ["setting", "n_seeds", "seeds"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in fields})
    return buffer.getvalue()


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def markdown_header(column: MetricColumn) -> str:
    """``Accuracy (%) ↑``: the label, the unit if any, the better direction if any."""
    unit = f" ({column.unit})" if column.unit else ""
    arrow = f" {column.arrow}" if column.arrow else ""
    return f"{column.label}{unit}{arrow}"


def to_markdown(rows: Sequence[Mapping[str, Any]],
                columns: Sequence[MetricColumn] = COMPARE_COLUMNS) -> str:
    """A GitHub Markdown table of :func:`table` rows, each metric with its column's digits."""
    headers = ["Experiment", "Baseline", "Changes", *(markdown_header(c) for c in columns)]
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join(["---"] * 3 + ["---:"] * len(columns)) + " |"]
    for row in rows:
        cells = [_cell(row["experiment"], 0)]
        cells += [_cell(row[k], 0) if row[k] else "-" for k in ("baseline", "changes")]
        cells += [_cell(row[c.key], c.digits) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Mapping[str, Any]],
           columns: Sequence[MetricColumn] = COMPARE_COLUMNS) -> str:
    """CSV of :func:`table` rows, headed by the metrics' keys, full precision, empty cells for
    missing metrics."""
    buffer = io.StringIO()
    fields = ["experiment", "baseline", "changes", *(c.key for c in columns)]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in fields})
    return buffer.getvalue()


def load_exp_show(source: str | None, cwd: Path | None = None,
                  dvc_args: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Parsed ``dvc exp show --json``: from a file, ``-`` (stdin), or by running dvc (None)."""
    if source == "-":
        text = sys.stdin.read()
    elif source is not None:
        try:
            text = Path(source).read_text()
        except OSError as err:
            raise CompareError(f"{source}: {err.strerror}") from None
    else:
        beside = Path(sys.executable).parent / "dvc"  # the venv's dvc, activated or not
        dvc = str(beside) if beside.is_file() else "dvc"
        cmd = [dvc, "exp", "show", "--json", "--no-pager", *dvc_args]
        try:
            proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise CompareError("dvc not found on PATH (activate the project's .venv)") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise CompareError(f"dvc exp show --json failed: {last}")
        text = proc.stdout
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CompareError(f"dvc exp show --json: not JSON ({err.msg}, line {err.lineno})") \
            from None
    if not isinstance(data, list):
        raise CompareError("dvc exp show --json: expected a list of commits")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the Markdown table; optionally write ``--md`` and ``--csv`` files."""
    parser = argparse.ArgumentParser(
        prog="python -m qsenn_core.compare",
        description="Turn `dvc exp show --json` into the paper's Table 1 / Table 4 layout.")
    parser.add_argument("--input", help="exp-show JSON file, or - for stdin "
                        "(default: run `dvc exp show --json` here)")
    parser.add_argument("--model", default="final",
                        help="metrics/<model>.json to tabulate: final (default), dense, glm5, "
                             "iter_1, ...")
    parser.add_argument("--workspace", action="store_true", help="include the workspace row")
    parser.add_argument("-A", "--all-commits", action="store_true",
                        help="experiments of all commits (passed to dvc exp show)")
    parser.add_argument("--by-seed", action="store_true",
                        help="one row per setting: mean +- std over experiments that differ "
                             "only in seed, with the number of seeds")
    parser.add_argument("--md", type=Path, help="write the Markdown table here")
    parser.add_argument("--csv", type=Path, help="write the CSV table here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        shown = load_exp_show(args.input, dvc_args=["-A"] if args.all_commits else [])
        found = experiments(shown, workspace=args.workspace)
        metrics_file = f"metrics/{args.model}.json"
        rows = table(found, metrics_file)
        if not rows:
            raise CompareError("no experiment with results in dvc exp show")
        if all(row[c.key] is None for row in rows for c in COMPARE_COLUMNS):
            raise CompareError(f"no experiment has {metrics_file}")
        if args.by_seed:
            grouped = seed_table(seed_groups(found), metrics_file)
            markdown, csv_text = seed_markdown(grouped), seed_csv(grouped)
        else:
            markdown, csv_text = to_markdown(rows), to_csv(rows)
        for path, text in ((args.md, markdown), (args.csv, csv_text)):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        sys.stdout.write(markdown)
    except QsennError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
