"""DVC stage index_data: check the dataset, then write the content manifest later stages use."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.index_data import index_data


def main(args, params):
    index_data(params, Path(args.out))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("out", help="manifest file, e.g. data/manifest.txt")
    sys.exit(run_stage(main, parser))
