"""DVC stage train_dense: train the dense model (params: seed, device, data, model, train)."""

import sys
from pathlib import Path

from qsenn_core.distributed import run_distributed_stage
from qsenn_core.stage import stage_parser
from qsenn_core.steps.train_dense import train_dense


def main(args, params):
    train_dense(params, Path(args.model), Path(args.log))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("model", help="output state dict, e.g. models/dense.pt")
    parser.add_argument("--log", required=True,
                        help="DVCLive directory: per-epoch plots and metrics.json, e.g. logs/dense")
    sys.exit(run_distributed_stage(main, parser))
