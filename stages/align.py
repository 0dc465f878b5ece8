"""DVC stage align: CLIP alignment A_clip of the final model's features (eq. 11-16, Table 6)."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.align import align


def main(args, params):
    align(params, Path(args.features), Path(args.model), Path(args.embeddings),
          Path(args.weights), Path(args.table), Path(args.metrics), Path(args.figure))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("features", help="the final model's features, e.g. features/iter_3.parquet")
    parser.add_argument("model", help="the final model, e.g. models/iter_3.pt")
    parser.add_argument("embeddings", help="CLIP image embeddings of clip_embed")
    parser.add_argument("weights", help="CLIP weights of clip_pretrain, e.g. models/clip.pt")
    parser.add_argument("--table", required=True, help="alignment table, reports/alignment.csv")
    parser.add_argument("--metrics", required=True, help="Table 6 metrics JSON")
    parser.add_argument("--figure", required=True, help="Figure 6a PNG")
    sys.exit(run_stage(main, parser))
