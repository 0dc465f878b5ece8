"""GPU check: the pipeline's compute on a CUB-sized synth with ResNet50, timed on one device.

Driven by ``bench/gpu_check.sh``; calls the compute functions of ``qsenn_core`` directly (no DVC
stages), in this order:

1. ``synth.generate_synth``: ``--classes`` classes (CUB: 200) at ``--image-size`` px (>= 224),
   ``--train-per-class`` / ``--test-per-class`` images each (reused when ``--data`` exists);
2. training: ``training.fit`` of ``backbones.build_model(--arch, weights="none")`` with the
   ``train`` settings of ``params.yaml`` (batch ``--batch``), ``--epochs`` epochs after one
   warm-up epoch; on CUDA in bf16 autocast with channels_last (``qsenn_core.device``). Images/s
   of the timed epochs (each ends with a one-batch test pass);
3. extraction: ``extract.extract_features`` of the training split (test transform, float32);
4. solver on the extracted features: ``selection.select_features`` (``select`` settings) and the
   elastic-net ``sparse.solve_path`` on the selected features (``sparse`` settings);
5. solver on the CUB-sized benchmark features of ``bench/bench_solvers.py`` (n 6000, 200
   classes): the elastic-net path (d 50, 100 lambdas) and 5 points of the selection path (d
   2048), both to a relative gap of 1e-6, with the peak memory against
   ``bench_scaling.solver_memory_bytes``;
6. training again with ``train.nproc = 2`` (torchrun, DistributedDataParallel) where two CUDA
   devices exist; skipped otherwise.

Prints one line per figure and writes them to ``--out/gpu_check.json``. Peak GPU memory is
``torch.cuda.max_memory_allocated`` per phase (None on the CPU). ``--toy`` shrinks every size so
the whole check runs on a CPU in seconds (``tests/test_gpu_check.py``).

    .venv/bin/python bench/gpu_check.py --out /tmp/gpu_check [--toy]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from qsenn_core.backbones import build_model
from qsenn_core.data import ImageDataset, build_transform, load_dataset
from qsenn_core.device import resolve_device
from qsenn_core.distributed import is_main, maybe_relaunch, under_torchrun, world_size
from qsenn_core.errors import QsennError
from qsenn_core.extract import extract_features
from qsenn_core.io import write_json
from qsenn_core.params import Params, load_params
from qsenn_core.selection import select_features
from qsenn_core.sparse import solve_path, standardize
from qsenn_core.synth import generate_synth
from qsenn_core.training import dense_config, fit, image_datasets, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scaling import solver_memory_bytes  # noqa: E402  (sibling scripts, not a package)
from bench_solvers import make_features  # noqa: E402

log = logging.getLogger("gpu_check")

RESULT_FILE = "gpu_check.json"
NPROC2_FILE = "train_nproc2.json"


# --------------------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings must not stop before it ends)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window on CUDA."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak allocated GPU memory of the window in GiB (None on the CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


# --------------------------------------------------------------------------- phases


def make_synth(root: Path, params: Params, args: argparse.Namespace) -> dict[str, Any]:
    """Generate the synth under ``root`` unless it is there; returns its size and seconds."""
    synth = dataclasses.replace(params.synth, n_classes=args.classes, image_size=args.image_size,
                                train_per_class=args.train_per_class,
                                test_per_class=args.test_per_class)
    if (root / "CUB_200_2011" / "images.txt").is_file():
        return {"reused": str(root)}
    start = time.perf_counter()
    summary = generate_synth(root, synth)
    return {"images": summary.n_images, "seconds": round(time.perf_counter() - start, 2)}


def datasets(root: Path, args: argparse.Namespace
             ) -> tuple[Dataset[Any], Dataset[Any], Dataset[Any]]:
    """The synth's training split with the train and with the test transform, and its test split.

    Features are extracted from the training split with the test transform, as the pipeline's
    ``extract`` step does.
    """
    index = load_dataset("synth", root)
    train, test = image_datasets(index, args.image_size)
    plain = ImageDataset(index, "train", build_transform(index.name, args.image_size, train=False))
    return train, plain, test


def train_phase(train_set: Dataset[Any], test_set: Dataset[Any], params: Params,
                args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module,
                                                                          dict[str, Any]]:
    """``fit`` for 1 + ``args.epochs`` epochs; images/s over the epochs after the first.

    The test pass after each epoch runs on one batch only, so it barely counts. Under torchrun
    ``fit`` joins the process group itself and each rank trains on its shard; the figure is
    all images of an epoch over its wall time.
    """
    seed_everything(params.seed)
    model = build_model(args.arch, args.classes, weights="none")
    cfg = dataclasses.replace(dense_config(params), epochs=1 + args.epochs,
                              batch_size=args.batch, num_workers=args.workers)
    one_batch = Subset(test_set, range(min(args.batch, len(test_set))))  # type: ignore[arg-type]
    ends: list[float] = []

    def on_epoch_end(epoch: int, record: dict[str, float]) -> None:
        synchronize(model_device(model))  # under torchrun: this rank's cuda:LOCAL_RANK
        ends.append(time.perf_counter())

    reset_peak(device)
    start = time.perf_counter()
    fit(model, train_set, one_batch, cfg, device=device, on_epoch_end=on_epoch_end)
    n = len(train_set)  # type: ignore[arg-type]
    timed = ends[-1] - ends[0]
    figures = {"nproc": world_size(), "images": n, "epochs_timed": args.epochs,
               "images_per_s": round(n * args.epochs / timed, 1),
               "warmup_epoch_s": round(ends[0] - start, 2),
               "peak_gpu_gib": peak_gib(model_device(model))}
    return model, figures


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters."""
    return next(model.parameters()).device


def extract_phase(model: torch.nn.Module, dataset: Dataset[Any], args: argparse.Namespace,
                  device: torch.device) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``extract_features`` of ``dataset``, timed after a one-batch warm-up."""
    warm = Subset(dataset, range(min(args.batch, len(dataset))))  # type: ignore[arg-type]
    extract_features(model, warm, batch_size=args.batch, device=device, num_workers=0)
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    out = extract_features(model, dataset, batch_size=args.batch, device=device,
                           num_workers=args.workers)
    synchronize(device)
    seconds = time.perf_counter() - start
    n = len(out.labels)
    return out.features, out.labels, {"images": n, "images_per_s": round(n / seconds, 1),
                                      "peak_gpu_gib": peak_gib(device)}


def solve_phase(features: np.ndarray, labels: np.ndarray, n_classes: int, params: Params,
                device: torch.device, n_select: int) -> dict[str, Any]:
    """The pipeline's solve on extracted features: selection of ``n_select`` features (the other
    ``select`` settings from params.yaml), then the sparse path (``sparse`` settings)."""
    sel_p, sp = params.select, params.sparse
    n_select = min(n_select, features.shape[1])
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    selection = select_features(features, labels, n_classes, n_select, alpha=sel_p.alpha,
                                start_ratio=sel_p.start_ratio, decay=sel_p.decay,
                                max_steps=sel_p.max_steps, device=device)
    synchronize(device)
    select_s = time.perf_counter() - start
    peak_select = peak_gib(device)
    chosen = standardize(features[:, selection.order])[0].numpy()
    reset_peak(device)
    start = time.perf_counter()
    path = solve_path(chosen, labels, n_classes, alpha=sp.alpha, n_lambdas=sp.n_lambdas,
                      lambda_min_ratio=sp.lambda_min_ratio, tol=sp.tol, val_frac=sp.val_frac,
                      seed=params.seed, device=device)
    synchronize(device)
    return {"n": int(features.shape[0]), "d": int(features.shape[1]), "selected": n_select,
            "select_s": round(select_s, 2), "select_points": len(selection.table),
            "select_peak_gpu_gib": peak_select,
            "sparse_s": round(time.perf_counter() - start, 2), "sparse_points": len(path.points),
            "sparse_max_gap": max(p.relative_gap for p in path.points),
            "sparse_peak_gpu_gib": peak_gib(device)}


def bench_solver_phase(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Both paths of ``bench/bench_solvers.py`` on its CUB-sized features, tol 1e-6."""
    n, n_classes, d_select, d_sparse = args.bench_n, args.bench_classes, args.bench_d, 50
    X, y = make_features(n, n_classes, d_select, seed=0)
    out: dict[str, Any] = {"n": n, "classes": n_classes}
    runs = {
        "sparse": (standardize(X[:, :d_sparse])[0].numpy(),
                   {"alpha": 0.99, "n_lambdas": args.bench_lambdas, "lambda_min_ratio": 1e-3}),
        "select": (standardize(X)[0].numpy(),
                   {"alpha": 0.8, "group": True, "start_ratio": 0.1, "n_lambdas": 5,
                    "lambda_min_ratio": 0.9 ** 4}),
    }
    for name, (Xs, grid) in runs.items():
        reset_peak(device)
        synchronize(device)
        start = time.perf_counter()
        path = solve_path(Xs, y, n_classes, tol=1e-6, device=device, **grid)
        synchronize(device)
        model = solver_memory_bytes(n, Xs.shape[1], n_classes, group=name == "select",
                                    cuda=device.type == "cuda")
        out[name] = {"d": int(Xs.shape[1]), "points": len(path.points),
                     "seconds": round(time.perf_counter() - start, 2),
                     "max_gap": max(p.relative_gap for p in path.points),
                     "peak_gpu_gib": peak_gib(device), "model_gib": round(model / 2**30, 6)}
    return out


def nproc2_phase(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    """Training with 2 processes under torchrun where 2 CUDA devices exist."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < 2:
        return {"skipped": f"{count} CUDA device(s); train.nproc=2 needs 2"}
    code = maybe_relaunch(2, [str(Path(__file__).resolve()), *argv, "--phase", "train"])
    if code != 0:
        raise QsennError(f"train.nproc=2: torchrun exited with code {code}")
    return json.loads((args.out / NPROC2_FILE).read_text())


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None,
                        help="synth root (default OUT/synth; reused when present)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--train-per-class", type=int, default=15)
    parser.add_argument("--test-per-class", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after the warm-up")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--select-features", type=int, default=0,
                        help="n_f* of the selection (0: select.n_features of params.yaml)")
    parser.add_argument("--bench-n", type=int, default=6000)
    parser.add_argument("--bench-classes", type=int, default=200)
    parser.add_argument("--bench-d", type=int, default=2048)
    parser.add_argument("--bench-lambdas", type=int, default=100)
    parser.add_argument("--nproc2", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--toy", action="store_true",
                        help="tiny sizes for a CPU smoke run (tests/test_gpu_check.py)")
    parser.add_argument("--phase", choices=["all", "train"], default="all",
                        help=argparse.SUPPRESS)  # "train": the torchrun children of nproc2_phase
    args = parser.parse_args(argv)
    if args.toy:
        # few images make the features nearly separable: selecting 50 of 2048 would walk the
        # path down to tiny lambdas, so the toy selects 8
        for key, value in {"classes": 4, "image_size": 64, "train_per_class": 3,
                           "test_per_class": 1, "batch": 4, "epochs": 1, "workers": 0,
                           "select_features": 8,
                           "bench_n": 240, "bench_classes": 6, "bench_d": 64,
                           "bench_lambdas": 5}.items():
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the check; returns (and writes) the figures."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    device = resolve_device(args.device)
    root = args.data or args.out / "synth"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase == "train":  # a torchrun child: training only, rank 0 writes
        train_set, _, test_set = datasets(root, args)
        _, figures = train_phase(train_set, test_set, params, args, device)
        if is_main():
            write_json(args.out / NPROC2_FILE, figures)
        return figures

    results: dict[str, Any] = {"device": torch.cuda.get_device_name(device)
                               if device.type == "cuda" else "cpu",
                               "arch": args.arch, "image_size": args.image_size,
                               "autocast": "bf16, channels_last" if device.type == "cuda"
                               else "float32 (CPU)"}
    results["synth"] = make_synth(root, params, args)
    train_set, extract_set, test_set = datasets(root, args)
    model, results["train"] = train_phase(train_set, test_set, params, args, device)
    with torch.inference_mode():
        features, labels, results["extract"] = extract_phase(model, extract_set, args, device)
    del model
    results["solve"] = solve_phase(features, labels, args.classes, params, device,
                                   args.select_features or params.select.n_features)
    results["bench_solver"] = bench_solver_phase(args, device)
    results["train_nproc2"] = (nproc2_phase(args, argv) if args.nproc2 and not under_torchrun()
                               else {"skipped": "--no-nproc2"})
    write_json(args.out / RESULT_FILE, results)
    print(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
