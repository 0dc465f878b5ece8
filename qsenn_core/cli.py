"""The ``qsenn`` command: use a trained Q-SENN on new images.

::

    qsenn predict MODEL IMAGE... [--top-k 5] [--json]    top-k classes with probabilities
    qsenn explain MODEL IMAGE... --out DIR                local explanation PNG + decision JSON
    qsenn export MODEL --out DIR                          safetensors + config.json

``MODEL`` is a pipeline model file (``models/iter_3.pt``) or a folder written by ``qsenn export``.
A model file without metadata needs ``--params`` (the params.yaml of its run: architecture,
preprocessing, and the dataset for the class names). Concept names come from ``--concepts``
(default ``reports/alignment.csv`` when it exists; an export folder carries its own).

Expected failures (unreadable image, wrong model, missing file) are one ``error:`` line on stderr
and exit status 1; usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from qsenn_core.concepts import read_concept_names
from qsenn_core.device import DEVICE_CHOICES, resolve_device
from qsenn_core.errors import QsennError
from qsenn_core.explain import DEFAULT_THRESHOLD, png_bytes
from qsenn_core.export import export_model, load
from qsenn_core.inference import QsennPredictor, predictor_from_model_file, read_image
from qsenn_core.io import atomic_path, write_json
from qsenn_core.params import load_params

log = logging.getLogger("qsenn")

#: The alignment table of the ``align`` stage, used for concept names when present.
DEFAULT_CONCEPTS = Path("reports/alignment.csv")


# ----------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------


def _concepts(args: argparse.Namespace) -> dict[int, str] | None:
    """Concept names from ``--concepts`` (an error if that file is missing), else from the
    default table when it exists, else None (keep what the model carries)."""
    if args.concepts is not None:
        return read_concept_names(Path(args.concepts))
    if DEFAULT_CONCEPTS.is_file():
        log.info("concept names from %s", DEFAULT_CONCEPTS)
        return read_concept_names(DEFAULT_CONCEPTS)
    return None


def load_any(args: argparse.Namespace, *, with_concepts: bool) -> QsennPredictor:
    """The predictor of ``args.model`` (model file or export folder) on ``args.device``."""
    concepts = _concepts(args) if with_concepts else None
    model = Path(args.model)
    if model.is_dir():
        predictor = load(model)
        if concepts is not None:
            predictor.concept_names = concepts
    else:
        params = load_params(args.params) if args.params else None
        predictor = predictor_from_model_file(model, params=params, concept_names=concepts)
    return predictor.to(resolve_device(args.device))


def _read_images(paths: Sequence[str]) -> list[Image.Image]:
    """Every image read and checked before any work, so a bad one fails before any output."""
    return [read_image(p) for p in tqdm(paths, desc="read images", unit="img", disable=None)]


def _output_stems(paths: Sequence[str]) -> list[str]:
    """One output name per image: its file stem, numbered when two images share a stem."""
    stems = [Path(p).stem or "image" for p in paths]
    return [s if stems.count(s) == 1 else f"{s}_{i + 1}" for i, s in enumerate(stems)]


def _out_dir(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise QsennError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


# ----------------------------------------------------------------------------------------------
# subcommands
# ----------------------------------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> None:
    """Top-k classes of every image, as a table or JSON on stdout."""
    if args.top_k < 1:
        raise QsennError(f"--top-k: must be >= 1, got {args.top_k}")
    predictor = load_any(args, with_concepts=False)
    images = _read_images(args.images)
    results = []
    for path, image in zip(args.images, tqdm(images, desc="predict", unit="img", disable=None),
                           strict=True):
        ranked = predictor.predict(image, k=min(args.top_k, len(predictor.class_names)))
        results.append({"image": path, "predictions": [c.to_json() for c in ranked]})
    if args.json:
        sys.stdout.write(json.dumps(results, indent=2) + "\n")
        return
    width = max([len("class"), *(len(p["name"]) for r in results for p in r["predictions"])])
    image_width = max([len("image"), *(len(r["image"]) for r in results)])
    lines = [f"{'image':<{image_width}}  rank  {'class':<{width}}  probability"]
    for r in results:
        for p in r["predictions"]:
            lines.append(f"{r['image']:<{image_width}}  {p['rank']:>4}  {p['name']:<{width}}  "
                         f"{100 * p['probability']:>10.2f}%")
    sys.stdout.write("\n".join(lines) + "\n")


def cmd_explain(args: argparse.Namespace) -> None:
    """Local explanation PNG and decision JSON of every image into ``--out``."""
    if not 0.0 <= args.threshold < 1.0:
        raise QsennError(f"--threshold: must be in [0, 1), got {args.threshold}")
    if args.top_k < 1:
        raise QsennError(f"--top-k: must be >= 1, got {args.top_k}")
    predictor = load_any(args, with_concepts=True)
    if predictor.sparse_layer is None:
        raise QsennError(f"{args.model}: a dense model has no sparse layer to explain; use a "
                         "fine-tuned Q-SENN model (models/iter_<i>.pt)")
    images = _read_images(args.images)
    out = _out_dir(args.out)
    for path, image, stem in tqdm(list(zip(args.images, images, _output_stems(args.images),
                                           strict=True)),
                                  desc="explain", unit="img", disable=None):
        explanation = predictor.explain(image, threshold=args.threshold, k=args.top_k)
        png = png_bytes(explanation.figure())
        with atomic_path(out / f"{stem}.png") as tmp:
            tmp.write_bytes(png)
        write_json(out / f"{stem}.json",
                   {"image": path, "model": args.model, **explanation.to_json()})
        d = explanation.decision
        sys.stdout.write(f"{path}: {d.predicted.name} ({100 * d.predicted.probability:.1f}%), "
                         f"{len(d.features)} features -> {out / stem}.png, {out / stem}.json\n")


def cmd_export(args: argparse.Namespace) -> None:
    """safetensors weights and config.json of the model into ``--out``."""
    predictor = load_any(args, with_concepts=True)
    out = export_model(predictor, args.out)
    sys.stdout.write(f"exported {args.model} to {out}/ (load it with qsenn_core.load)\n")


# ----------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``qsenn`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="qsenn", description="Predict, explain and export with a trained Q-SENN.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("model", metavar="MODEL",
                         help="model file (models/iter_3.pt) or folder of `qsenn export`")
        cmd.add_argument("--params", help="params.yaml of the run, for a model file that "
                                          "carries no metadata")
        cmd.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                         help="where to run the model (default: auto = CUDA when available)")
        return cmd

    predict = add("predict", "top-k classes of images, with probabilities")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("-k", "--top-k", type=int, default=5, help="classes per image")
    predict.add_argument("--json", action="store_true", help="JSON instead of a table")
    predict.set_defaults(run=cmd_predict)

    explain = add("explain", "local explanation (PNG) and decision (JSON) of images")
    explain.add_argument("images", nargs="+", metavar="IMAGE")
    explain.add_argument("--out", required=True, help="folder for <image>.png and <image>.json")
    explain.add_argument("--concepts", help=f"alignment table (default: {DEFAULT_CONCEPTS} "
                                            "when it exists)")
    explain.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                         help="share of a feature's maximum a pixel must exceed (paper: 0.7)")
    explain.add_argument("-k", "--top-k", type=int, default=5,
                         help="classes ranked in the JSON")
    explain.set_defaults(run=cmd_explain)

    export = add("export", "write the model as safetensors + config.json")
    export.add_argument("--out", required=True, help="new or empty folder")
    export.add_argument("--concepts", help=f"alignment table (default: {DEFAULT_CONCEPTS} "
                                           "when it exists)")
    export.set_defaults(run=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qsenn``; returns the exit status (0 ok, 1 expected error, 2 usage, 130 Ctrl-C)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except QsennError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a full disk or a read-only --out folder: still one line
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
