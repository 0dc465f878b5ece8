"""DVC stage solve@i: elastic-net regularization path on the selected features of a model."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.solve import solve


def main(args, params):
    solve(params, Path(args.features), Path(args.selection), args.prev, Path(args.out),
          Path(args.path_table))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("features", help="features of the previous model")
    parser.add_argument("selection", help="selection JSON of select_features")
    parser.add_argument("out", help="least-regularized solution, e.g. sparse/iter_1/solution.pt")
    parser.add_argument("--prev", required=True, help="name of the previous model (dense, iter_1)")
    parser.add_argument("--path-table", required=True, help="CSV of the regularization path")
    sys.exit(run_stage(main, parser))
