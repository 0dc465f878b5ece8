"""Diagnostic: which features the binary-feature metric counts, and how many classes each serves.

For the dense model and the final model of a finished run (the workspace, or any git revision
or experiment name given with ``--rev``: ``dvc exp show`` names work), it clusters every
training feature with the metric's own mean shift and measures its effective number of classes
(:mod:`qsenn_core.feature_anatomy`), then prints one Markdown row per model: the shares of
unimodal, binary (the metric) and multimodal features, the mean effective number of classes of
each kind, and their Spearman correlation. It writes nothing::

    .venv/bin/python bench/bench_binary_anatomy.py [--rev claims-synth-qsenn-s0-paper ...]
        [--root .] [--json rows.json]

The paper ties binary features to general ones (a feature shared by many classes is a concept,
present or absent); a negative correlation of clusters with effective classes says the same on
the run measured, and a final model with fewer effective classes than the dense one has
features that fine-tuning made more class-specific.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import dvc.api
import yaml

from qsenn_core.errors import QsennError
from qsenn_core.feature_anatomy import anatomy_summary, feature_anatomy
from qsenn_core.feature_files import read_features

#: The printed columns, after ``rev`` and ``model``.
COLUMNS = ("unimodal_pct", "binary_pct", "multimodal_pct", "effective_classes",
           "effective_classes_unimodal", "effective_classes_binary",
           "effective_classes_multimodal", "spearman_clusters_classes")
WORKSPACE = "workspace"


def _read(root: Path, path: str, rev: str | None, scratch: Path) -> Path:
    """``path`` of the project at ``rev`` (the workspace when None) as a local file."""
    if rev is None:
        return root / path
    local = scratch / path
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        with dvc.api.open(path, repo=str(root), rev=rev, mode="rb") as src:
            local.write_bytes(src.read())
    except Exception as err:  # dvc raises several unrelated types for a missing file or rev
        raise QsennError(f"{rev}: cannot read {path} ({' '.join(str(err).split())})") from None
    return local


def anatomy_rows(root: Path, rev: str | None = None) -> list[dict[str, float | str]]:
    """One row for the dense model and one for ``final`` of ``params.yaml`` at ``rev``."""
    with tempfile.TemporaryDirectory() as scratch:
        params = yaml.safe_load(_read(root, "params.yaml", rev, Path(scratch)).read_text())
        final = params.get("final") if isinstance(params, dict) else None
        if not isinstance(final, str):
            raise QsennError(f"{rev or root}: params.yaml has no 'final' model name")
        rows: list[dict[str, float | str]] = []
        for model in dict.fromkeys(("dense", final)):
            features, labels, _ = read_features(
                _read(root, f"features/{model}.parquet", rev, Path(scratch)), "train")
            rows.append({"rev": rev or WORKSPACE, "model": model,
                         **anatomy_summary(feature_anatomy(features, labels))})
    return rows


def markdown(rows: list[dict[str, float | str]]) -> str:
    head = ("rev", "model", *COLUMNS)
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [str(row["rev"]), str(row["model"])]
        cells += [f"{row[c]:.2f}" if c.startswith("spearman") else f"{row[c]:.1f}"
                  for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", action="append", default=[],
                        help="git revision or experiment name (repeatable; default: workspace)")
    parser.add_argument("--root", type=Path, default=Path("."), help="project root")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        rows = [row for rev in (args.rev or [None]) for row in anatomy_rows(args.root, rev)]
    except (QsennError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
