"""DVC stage clip_embed: L2-normalized CLIP embeddings of the training images to Parquet."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.clip_embed import clip_embed


def main(args, params):
    clip_embed(params, Path(args.weights), Path(args.out))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("weights", help="CLIP weights of clip_pretrain, e.g. models/clip.pt")
    parser.add_argument("out", help="output Parquet file, e.g. features/clip_train.parquet")
    sys.exit(run_stage(main, parser))
