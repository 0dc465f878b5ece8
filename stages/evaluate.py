"""DVC stage evaluate_*: accuracy, diversity@5, dependence, alignment r, binary features, ..."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.evaluate import evaluate


def main(args, params):
    evaluate(params, Path(args.model), Path(args.features), Path(args.out),
             layer_path=Path(args.layer) if args.layer else None,
             prev_model_path=Path(args.prev_model) if args.prev_model else None)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("model", help="trained model state dict")
    parser.add_argument("features", help="training features of that model (Parquet)")
    parser.add_argument("out", help="metrics JSON, e.g. metrics/dense.json")
    parser.add_argument("--layer", help="sparse layer to use as the final layer (glm5)")
    parser.add_argument("--prev-model", help="previous iteration's model (changed assignments)")
    sys.exit(run_stage(main, parser))
