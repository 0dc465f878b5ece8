"""DVC stage finetune@i: fine-tune the previous model with the sparse layer frozen."""

import sys
from pathlib import Path

from qsenn_core.distributed import run_distributed_stage
from qsenn_core.stage import stage_parser
from qsenn_core.steps.finetune import finetune


def main(args, params):
    finetune(params, args.iteration, Path(args.prev_model), Path(args.layer), Path(args.out),
             Path(args.log))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("iteration", help="key of the iteration in params.yaml (1, 2, ...)")
    parser.add_argument("prev_model", help="state dict of the previous model")
    parser.add_argument("layer", help="sparse layer of quantize@i")
    parser.add_argument("out", help="output state dict, e.g. models/iter_1.pt")
    parser.add_argument("--log", required=True,
                        help="DVCLive directory: per-epoch plots, metrics.json; e.g. logs/iter_1")
    sys.exit(run_distributed_stage(main, parser))
