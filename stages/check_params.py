"""DVC stage check_params: validate the whole params file before any other stage runs."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.check_params import check_params


def main(args, params):
    check_params(params, Path(args.out))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("out", help="marker file, e.g. data/params_checked.txt")
    sys.exit(run_stage(main, parser))
