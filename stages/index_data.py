"""DVC stage index_data: the content manifest of the dataset folder that other stages depend on."""

import sys

from qsenn_core.cli import run_stage, stage_parser
from qsenn_core.data.manifest import write_manifest


def main(args, params):
    write_manifest(params.data.root, args.out)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("out", help="manifest file, e.g. data/manifest.txt")
    sys.exit(run_stage(main, parser))
