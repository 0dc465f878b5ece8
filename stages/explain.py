"""DVC stage explain: explanation pictures of the final model and index.html (reports/explain/)."""

import sys
from pathlib import Path

from qsenn_core.stage import run_stage, stage_parser
from qsenn_core.steps.explain import explain


def main(args, params):
    concepts = Path(args.concepts) if args.concepts else None
    explain(params, Path(args.model), Path(args.metrics_dir), Path(args.out), concepts)


if __name__ == "__main__":
    parser = stage_parser(__doc__)
    parser.add_argument("model", help="the final model, e.g. models/iter_3.pt")
    parser.add_argument("metrics_dir", help="folder of the per-model metrics JSON files")
    parser.add_argument("out", help="report folder, e.g. reports/explain")
    parser.add_argument("--concepts", help="alignment table of the align stage: concept names")
    sys.exit(run_stage(main, parser))
