"""DVC stage glm5: the glm-saga_5 baseline on all dense features (no selection, no fine-tuning)."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.glm5 import glm5


def main(args, params):
    glm5(params, Path(args.features), Path(args.out), Path(args.path_table))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("features", help="dense features, e.g. features/dense.parquet")
    parser.add_argument("out", help="sparse layer file, e.g. sparse/glm5/layer.pt")
    parser.add_argument("--path-table", required=True, help="CSV of the regularization path")
    sys.exit(run_stage(main, parser))
