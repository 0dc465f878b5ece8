"""DVC stage clip_pretrain: the CLIP weights of the alignment (trained from scratch for synth)."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.clip_pretrain import clip_pretrain


def main(args, params):
    clip_pretrain(params, Path(args.out))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("out", help="CLIP state dict to write, e.g. models/clip.pt")
    sys.exit(run_stage(main, parser))
