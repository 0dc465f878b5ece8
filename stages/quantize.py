"""DVC stage quantize@i: the sparse ternary layer W^Q (eq. 3-5) with a refitted bias."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.quantize import quantize_solution


def main(args, params):
    quantize_solution(params, Path(args.solution), Path(args.features), Path(args.selection),
                      args.prev, Path(args.out), Path(args.metrics))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("solution", help="solution of solve@i")
    parser.add_argument("features", help="features of the previous model (for the bias)")
    parser.add_argument("selection", help="selection JSON of select_features")
    parser.add_argument("out", help="sparse layer file, e.g. sparse/iter_1/layer.pt")
    parser.add_argument("--prev", required=True, help="name of the previous model")
    parser.add_argument("--metrics", required=True, help="layer statistics JSON")
    sys.exit(run_stage(main, parser))
