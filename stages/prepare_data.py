"""DVC stage prepare_data: generate the synthetic CUB-format benchmark (params: synth)."""

import sys

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.synth import generate_synth


def main(args, params):
    generate_synth(args.out, params.synth)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("out", help="output folder, e.g. data/synth")
    sys.exit(run_stage(main, parser))
