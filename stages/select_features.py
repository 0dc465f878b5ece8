"""DVC stage select_features: the n_f* dense features that enter the group-sparse path first."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.select import select


def main(args, params):
    select(params, Path(args.features), Path(args.out), Path(args.path_table))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("features", help="dense features, e.g. features/dense.parquet")
    parser.add_argument("out", help="selection JSON, e.g. sparse/selection.json")
    parser.add_argument("--path-table", required=True, help="CSV of the selection path")
    sys.exit(run_stage(main, parser))
