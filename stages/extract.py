"""DVC stage extract: features of a trained model for both splits to Parquet."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.extract import extract


def main(args, params):
    extract(params, Path(args.model), Path(args.out))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("model", help="trained model state dict, e.g. models/dense.pt")
    parser.add_argument("out", help="output Parquet file, e.g. features/dense.parquet")
    sys.exit(run_stage(main, parser))
