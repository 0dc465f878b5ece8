"""Diagnostic: what each step of the Q-SENN loop does to the metrics of a finished run.

For every iteration i of ``params.yaml`` it evaluates two models with the pipeline's own
:func:`qsenn_core.steps.evaluate.model_metrics` (same test pass, same training features):

- ``before``: the model iteration i starts from (``models/<prev>.pt``) with the new layer
  ``sparse/iter_<i>/layer.pt`` attached, i.e. the effect of re-solving and quantizing alone;
- ``after``: ``models/iter_<i>.pt``, the same layer after fine-tuning (``metrics/iter_<i>.json``).

So a drop of diversity@5 at ``before`` is caused by the new assignment of features to classes, a
drop at ``after`` by the fine-tuning. Run it in a project whose ``dvc repro`` (or ``dvc exp
apply``) has finished; it writes nothing and prints a Markdown table (and ``--json`` the rows)::

    .venv/bin/python bench/bench_iterations.py [--params params.yaml] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np

from qsenn_core.errors import QsennError
from qsenn_core.feature_files import read_features
from qsenn_core.params import Params, load_params
from qsenn_core.sparse_layer import attach_sparse_layer, load_sparse_layer
from qsenn_core.steps.common import load_splits, trained_model
from qsenn_core.steps.evaluate import model_metrics

#: The columns of the printed table.
COLUMNS = ("accuracy", "diversity_at_5", "dependence", "binary_features", "correlation_at_5")


def _train_attributes(splits) -> np.ndarray | None:
    index = splits.index
    return None if index.attributes is None else index.attributes[index.split("train")]


def evaluate_pair(params: Params, model_path: Path, features_path: Path, layer_path: Path | None,
                  splits) -> dict[str, float]:
    """Metrics of ``model_path`` (with ``layer_path`` attached when given) on its training
    features ``features_path``; full-width features are cut to the layer's selection."""
    model = trained_model(params, model_path)
    if layer_path is not None:
        layer = load_sparse_layer(layer_path)
        attach_sparse_layer(model, layer, params.model.dropout)
    X, _, _ = read_features(features_path, "train")
    selection = getattr(model.head, "selection", None)
    if selection is not None and X.shape[1] == int(model.n_features) != len(selection):
        X = X[:, selection.numpy()]
    return model_metrics(params, model, X, _train_attributes(splits), splits.test)


def trajectory(params: Params, root: Path = Path(".")) -> list[dict[str, float | str]]:
    """One ``before`` and one ``after`` row per iteration, in the chain's order."""
    data_root = Path(params.data.root)
    if not data_root.is_absolute():  # relative to the project, as in the stages
        params = dataclasses.replace(
            params, data=dataclasses.replace(params.data, root=str(root / data_root)))
    splits = load_splits(params, train_augment=False)
    rows: list[dict[str, float | str]] = []
    for key, item in params.iterations.items():
        prev = item.prev
        before = evaluate_pair(params, root / f"models/{prev}.pt",
                               root / f"features/{prev}.parquet",
                               root / f"sparse/iter_{key}/layer.pt", splits)
        after = evaluate_pair(params, root / f"models/iter_{key}.pt",
                              root / f"features/iter_{key}.parquet", None, splits)
        rows.append({"step": f"iter {key} before (models/{prev}.pt + new W^Q)", **before})
        rows.append({"step": f"iter {key} after fine-tuning", **after})
    return rows


def markdown(rows: list[dict[str, float | str]]) -> str:
    """The rows as a Markdown table of :data:`COLUMNS`."""
    lines = ["| step | " + " | ".join(COLUMNS) + " |",
             "| --- |" + " ---: |" * len(COLUMNS)]
    for row in rows:
        cells = [f"{row[c]:.1f}" if c in row else "-" for c in COLUMNS]
        lines.append(f"| {row['step']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        rows = trajectory(load_params(args.params), args.root)
    except QsennError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
