"""DVC stage atlas: the browsable feature atlas of the final model (reports/atlas/index.html)."""

import sys
from pathlib import Path

from qsenn_core.atlas import build_atlas
from qsenn_core.stage import run_stage, stage_parser


def main(args, params):
    concepts = Path(args.concepts) if args.concepts else None
    build_atlas(params, Path(args.model), Path(args.features), Path(args.out), concepts)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("model", help="the final model, e.g. models/iter_3.pt")
    parser.add_argument("features", help="its features, e.g. features/iter_3.parquet")
    parser.add_argument("out", help="atlas folder, e.g. reports/atlas")
    parser.add_argument("--concepts", help="alignment table of the align stage: concept names")
    sys.exit(run_stage(main, parser))
