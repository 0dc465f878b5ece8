"""Benchmark: how the exact solver's and one fine-tuning epoch's cost grow with n, d and n_c.

Three parts, all on the CPU with ``--threads`` threads (default 1; CPU seconds of this process,
``time.process_time``, are the figures):

1. **Solver**: :func:`qsenn_core.sparse.solve_path` on the elastic-net path with the pipeline's
   ``sparse`` settings from ``params.yaml`` (alpha, n_lambdas, lambda_min_ratio, tol) on
   :func:`bench_solvers.make_features` features; n, d and n_c are varied one at a time around
   the CUB-sized problem (n 6000, d 50, n_c 200), four sizes each.
2. **Fine-tuning epoch**: one :func:`qsenn_core.training.train_one_epoch` of the fine-tuning
   step (small_cnn with a frozen ternary sparse layer, ``finetune`` settings from
   ``params.yaml``, eq. 2 with beta) on random in-memory images; n (images), d (the backbone's
   feature width n_f) and n_c are varied.
3. **Memory** of the solver: peak resident memory of ``solve_path`` in a fresh process (VmHWM
   reset before the call, so only the solver's own allocations count; a fixed malloc mmap
   threshold, so freed tensors leave the count) for a few shapes, against
   :func:`solver_memory_bytes`; then the model's table for ImageNet-1K (1.28 M x 2048 features,
   1000 classes) and what fits on one 80 GB or 141 GB GPU.

For each sweep the fitted exponent p of time ~ size^p (least squares on log-log) is printed.

    .venv/bin/python bench/bench_scaling.py [--parts solver,finetune,memory] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from qsenn_core.backbones import build_model
from qsenn_core.errors import QsennError
from qsenn_core.params import Params, load_params
from qsenn_core.sparse import solve_path, standardize
from qsenn_core.sparse_layer import SparseLayer, attach_sparse_layer
from qsenn_core.training import (
    build_optimizer,
    finetune_config,
    make_loader,
    seed_everything,
    train_one_epoch,
)

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from bench_solvers import make_features  # noqa: E402  (a sibling script, not a package)

#: ImageNet-1K (ILSVRC 2012 train split) with ResNet50 features: the paper's largest setting.
IMAGENET_N = 1_281_167
IMAGENET_CLASSES = 1000
IMAGENET_D_SELECT = 2048  # n_f of ResNet50: the feature-selection path
IMAGENET_D_SPARSE = 50  # n_f*: the elastic-net path
GPU_MEMORY_GB = (80.0, 141.0)  # A100/H100 80 GB, H200 141 GB
GB = 1e9


# --------------------------------------------------------------------------- memory model


@dataclass(frozen=True)
class MemoryModel:
    """Peak bytes of ``solve_path`` as ``b * (feature_copies n d + logit_copies n n_c)``.

    ``b`` is the bytes per value of the solver's dtype (8 for float64, its default; 4 for
    float32); n counts every row handed to ``solve_path`` (the training split is 90% of them).
    The copies are measured (``--parts memory``): the training split of X, the working-set
    copies of X (elastic net: X[:, cols], its square and its low-precision copy for the Hessian
    products; group path: the float32 copy of X), the one-hot labels and the (n, n_c) logits,
    probabilities and temporaries of an iteration and of the certificate.
    """

    feature_copies: float
    logit_copies: float

    def bytes(self, n: int, d: int, n_classes: int, value_bytes: int) -> float:
        """Predicted peak bytes for n rows, d features, n_c classes and ``value_bytes``."""
        if min(n, d, n_classes) < 1 or value_bytes not in (2, 4, 8):
            raise QsennError(f"memory model: need n, d, n_c >= 1 and 2, 4 or 8 bytes per value, "
                             f"got n={n} d={d} n_c={n_classes} bytes={value_bytes}")
        values = self.feature_copies * n * d + self.logit_copies * n * n_classes
        return float(value_bytes) * values


#: Least-squares fits of the peaks that ``--parts memory`` measured on this machine's CPU
#: (float64, live tensors; bench/README.md), raised by about 10% so that every measured peak is
#: below the model. On CUDA the input X is copied to the device once more
#: (``CUDA_EXTRA_FEATURE_COPIES``); the caching allocator's reserve comes on top.
SOLVER_MEMORY: dict[str, MemoryModel] = {
    "sparse": MemoryModel(feature_copies=4.0, logit_copies=8.4),
    "select": MemoryModel(feature_copies=4.0, logit_copies=6.6),
}
CUDA_EXTRA_FEATURE_COPIES = 1.0


def solver_memory_bytes(n: int, d: int, n_classes: int, *, value_bytes: int = 8,
                        group: bool = False, cuda: bool = True) -> float:
    """Predicted peak bytes of the exact solver (:data:`SOLVER_MEMORY`) on one device."""
    model = SOLVER_MEMORY["select" if group else "sparse"]
    if cuda:
        model = dataclasses.replace(model,
                                    feature_copies=model.feature_copies + CUDA_EXTRA_FEATURE_COPIES)
    return model.bytes(n, d, n_classes, value_bytes)


def imagenet_table() -> list[dict[str, object]]:
    """Model rows for ImageNet-1K: both paths, float64 / float32, against 80 and 141 GB."""
    rows = []
    for path, d, group in (("selection (group)", IMAGENET_D_SELECT, True),
                           ("elastic net", IMAGENET_D_SPARSE, False)):
        for name, value_bytes in (("float64", 8), ("float32", 4)):
            need = solver_memory_bytes(IMAGENET_N, d, IMAGENET_CLASSES,
                                       value_bytes=value_bytes, group=group)
            row: dict[str, object] = {"path": path, "d": d, "dtype": name,
                                      "GB": round(need / GB, 1)}
            for gpu in GPU_MEMORY_GB:
                row[f"fits {gpu:.0f} GB"] = need <= gpu * GB
            rows.append(row)
    return rows


def max_rows(d: int, n_classes: int, memory_gb: float, *, value_bytes: int,
             group: bool) -> int:
    """Largest n whose predicted peak fits in ``memory_gb`` (the model is linear in n)."""
    per_row = solver_memory_bytes(1, d, n_classes, value_bytes=value_bytes, group=group)
    return int(memory_gb * GB // per_row)


def _rss_bytes(field_name: str) -> int:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise QsennError(f"/proc/self/status: no {field_name} field")


def probe_memory(n: int, d: int, n_classes: int, group: bool, seed: int = 0) -> dict[str, float]:
    """Peak resident bytes of one short ``solve_path`` call above the RSS before it.

    Linux only: writing 5 to ``/proc/self/clear_refs`` resets the peak (VmHWM) after the input
    is built, so the input itself and the set-up do not count.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.arange(n) % n_classes
    before = _rss_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    if group:
        solve_path(X, y, n_classes, alpha=0.8, group=True, n_lambdas=2, start_ratio=0.5,
                   lambda_min_ratio=0.9, tol=1e-4, device="cpu")
    else:
        solve_path(X, y, n_classes, alpha=0.99, n_lambdas=3, lambda_min_ratio=0.1, tol=1e-4,
                   device="cpu")
    return {"peak_bytes": float(_rss_bytes("VmHWM") - before)}


def measure_memory(shapes: Sequence[tuple[int, int, int, bool]]) -> list[dict[str, float]]:
    """:func:`probe_memory` of each (n, d, n_c, group) in a fresh process (its own peak).

    glibc's malloc raises its mmap threshold after large frees and then keeps freed tensors in
    the heap, which inflated the peak by up to 60% from run to run; a fixed threshold
    (``MALLOC_MMAP_THRESHOLD_``) returns every large tensor to the system when it is freed, so
    the peak is that of the live tensors, as ``torch.cuda.max_memory_allocated`` counts them.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    rows = []
    for n, d, n_classes, group in shapes:
        out = subprocess.run([sys.executable, __file__, "--probe", json.dumps([n, d, n_classes,
                                                                                group])],
                             check=True, capture_output=True, text=True, env=env)
        peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
        model = solver_memory_bytes(n, d, n_classes, value_bytes=8, group=group, cuda=False)
        rows.append({"n": n, "d": d, "n_c": n_classes, "group": group, "measured_MB": peak / 1e6,
                     "model_MB": model / 1e6, "model/measured": model / peak})
    return rows


# --------------------------------------------------------------------------- timing


def fitted_exponent(sizes: Sequence[float], seconds: Sequence[float]) -> float:
    """p of seconds ~ c * size^p: least-squares slope of log(seconds) on log(size)."""
    if len(sizes) != len(seconds) or len(sizes) < 2:
        raise QsennError("fitted_exponent: need >= 2 (size, seconds) pairs of equal length")
    if min(sizes) <= 0 or min(seconds) <= 0:
        raise QsennError("fitted_exponent: sizes and seconds must be > 0")
    slope, _ = np.polyfit(np.log(np.asarray(sizes, float)), np.log(np.asarray(seconds, float)), 1)
    return float(slope)


def cpu_seconds(fn: Callable[[], object]) -> float:
    """CPU seconds of this process spent in ``fn()``."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def time_solver(n: int, d: int, n_classes: int, params: Params, seed: int = 0) -> float:
    """CPU seconds of the pipeline's elastic-net path (``params.sparse``) on synthetic features."""
    X, y = make_features(n, n_classes, d, seed)
    Xs = standardize(X)[0].numpy()
    sp = params.sparse
    return cpu_seconds(lambda: solve_path(
        Xs, y, n_classes, alpha=sp.alpha, n_lambdas=sp.n_lambdas,
        lambda_min_ratio=sp.lambda_min_ratio, tol=sp.tol, val_frac=sp.val_frac, seed=seed,
        device="cpu"))


def finetune_model(width: int, n_classes: int, n_selected: int, n_per_class: int,
                   dropout: float, seed: int = 0) -> torch.nn.Module:
    """small_cnn of feature width ``width`` with a frozen ternary sparse layer (eq. 1).

    Each class gets ``n_per_class`` weights of +-1 on random selected features (as W^Q after
    quantization, eq. 3-5); the selection is the first ``n_selected`` features.
    """
    seed_everything(seed)
    model = build_model("small_cnn", n_classes, width=width)
    k = min(n_selected, width)
    g = torch.Generator().manual_seed(seed)
    weight = torch.zeros(n_classes, k)
    for c in range(n_classes):
        cols = torch.randperm(k, generator=g)[: min(n_per_class, k)]
        weight[c, cols] = torch.randint(0, 2, (cols.numel(),), generator=g).float() * 2 - 1
    layer = SparseLayer(torch.arange(k), weight, torch.zeros(n_classes), torch.zeros(k),
                        torch.ones(k), train_standardization=True)
    return attach_sparse_layer(model, layer, dropout)


def time_finetune_epoch(n: int, width: int, n_classes: int, params: Params, image_size: int,
                        seed: int = 0) -> float:
    """CPU seconds of one fine-tuning epoch over ``n`` random images (after a 1-batch warm-up)."""
    cfg = dataclasses.replace(finetune_config(params, next(iter(params.iterations))), epochs=1)
    model = finetune_model(width, n_classes, params.select.n_features,
                           params.quant.n_per_class, params.finetune.dropout, seed)
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, image_size, image_size, generator=g)
    labels = torch.randint(0, n_classes, (n,), generator=g)
    data = TensorDataset(images, labels, torch.arange(n))
    device = torch.device("cpu")
    optimizer = build_optimizer(model, cfg)
    warm = make_loader(TensorDataset(images[: cfg.batch_size], labels[: cfg.batch_size],
                                     torch.arange(min(n, cfg.batch_size))),
                       cfg.batch_size, True, seed, 0, device)
    train_one_epoch(model, warm, optimizer, cfg, device, desc="warm-up")
    loader = make_loader(data, cfg.batch_size, True, seed, 0, device)
    return cpu_seconds(lambda: train_one_epoch(model, loader, optimizer, cfg, device,
                                               desc="fine-tuning epoch"))


def sweep(name: str, base: dict[str, int], axis: str, values: Sequence[int],
          timer: Callable[..., float]) -> None:
    """Time ``timer(**base with axis=value)`` for each value; print the rows and the exponent."""
    seconds = []
    for value in values:
        s = timer(**{**base, axis: value})
        seconds.append(s)
        others = ", ".join(f"{k}={v}" for k, v in base.items() if k != axis)
        print(f"  {name}  {axis}={value:<6d} {others}  {s:8.2f} s CPU", flush=True)
    print(f"  {name}: time ~ {axis}^{fitted_exponent(values, seconds):.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="solver,finetune,memory")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # child of measure_memory
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        n, d, n_classes, group = json.loads(args.probe)
        print(json.dumps(probe_memory(n, d, n_classes, group)))
        return
    params = load_params(args.params)
    parts = set(args.parts.split(","))

    if "solver" in parts:
        sp = params.sparse
        print(f"== solver: elastic-net path, alpha {sp.alpha}, {sp.n_lambdas} lambdas down to "
              f"{sp.lambda_min_ratio:g} lambda_max, tol {sp.tol:g}")
        base = {"n": 6000, "d": 50, "n_classes": 200}

        def solver(**kw: int) -> float:
            return time_solver(params=params, **kw)

        sweep("solver", base, "n", [750, 1500, 3000, 6000], solver)
        sweep("solver", base, "d", [25, 50, 100, 200], solver)
        sweep("solver", base, "n_classes", [25, 50, 100, 200], solver)

    if "finetune" in parts:
        print(f"== one fine-tuning epoch: small_cnn at {args.image_size} px, batch "
              f"{params.finetune.batch_size}, beta {params.train.beta}")
        base = {"n": 1024, "width": 128, "n_classes": 200}

        def epoch(**kw: int) -> float:
            return time_finetune_epoch(params=params, image_size=args.image_size, **kw)

        sweep("finetune", base, "n", [512, 1024, 2048, 4096], epoch)
        sweep("finetune", base, "width", [32, 64, 128, 256], epoch)
        sweep("finetune", base, "n_classes", [25, 50, 100, 200], epoch)

    if "memory" in parts:
        print("== solver memory: measured peak (CPU, float64) vs. the model")
        shapes = [(20000, 50, 100, False), (20000, 50, 400, False), (20000, 400, 50, False),
                  (40000, 50, 200, False), (10000, 50, 300, False), (30000, 30, 150, False),
                  (20000, 256, 50, True), (20000, 64, 200, True), (40000, 64, 100, True),
                  (20000, 128, 100, True), (20000, 512, 25, True)]
        rows = measure_memory(shapes)
        for row in rows:
            print("  " + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in row.items()))
        lowest = min(r["model/measured"] for r in rows)
        print(f"  model/measured >= {lowest:.2f} on every shape (>= 1: the model is an upper "
              "bound)")
        print(f"== ImageNet-1K model (n {IMAGENET_N}, {IMAGENET_CLASSES} classes, one CUDA "
              "device)")
        for row in imagenet_table():
            print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
        for gpu in GPU_MEMORY_GB:
            for name, value_bytes in (("float64", 8), ("float32", 4)):
                n_max = max_rows(IMAGENET_D_SELECT, IMAGENET_CLASSES, gpu, value_bytes=value_bytes,
                                 group=True)
                print(f"  {gpu:.0f} GB, {name}: selection path fits up to n = {n_max} "
                      f"({100 * min(1.0, n_max / IMAGENET_N):.0f}% of ImageNet-1K)")
        print(f"  ({math.ceil(IMAGENET_N * IMAGENET_CLASSES * 8 / GB)} GB per float64 "
              "(n, n_c) matrix)")


if __name__ == "__main__":
    main()
