"""DVC stage summarize: metrics/final.json from the iteration named by `final` in params."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.summarize import summarize


def main(args, params):
    summarize(params, Path(args.metrics_dir), Path(args.out))


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("metrics_dir", help="folder of the per-model metrics, e.g. metrics")
    parser.add_argument("out", help="output JSON, e.g. metrics/final.json")
    sys.exit(run_stage(main, parser))
