"""Training throughput of ``qsenn_core.training.fit`` vs. a bare PyTorch loop (goal: >= 0.9x).

Both run the same model (``build_model``), batch size, input size, loss (CE + beta * L_div,
eq. 2), optimizer (SGD with momentum) and DataLoader settings on the same in-memory random images
(no JPEG decoding, so only the loop itself is compared). On CUDA both use bf16 autocast and
channels_last. ``fit`` additionally evaluates a one-batch test set after each epoch and keeps
its bookkeeping (per-epoch metrics, tqdm, LR schedule, resume checkpoint if ``--resume``).

Every variant runs in a fresh subprocess, so its peak memory is its own:
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident set size of the whole process in
MiB, Linux reports KiB; it includes the Python interpreter and torch, about 300-400 MiB) and,
on CUDA, ``torch.cuda.max_memory_allocated``. Throughput is the median over ``--repeats`` runs
(variants alternate) of images / second over all epochs, after one warm-up epoch; images per
CPU-second (``time.process_time``, all threads) is printed too, as it is steadier than wall
clock on a shared machine.

    .venv/bin/python bench/bench_train_throughput.py [--device auto] [--epochs 2] [--n 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from qsenn_core.backbones import build_model
from qsenn_core.device import resolve_device
from qsenn_core.diversity import feature_diversity_loss
from qsenn_core.training import FitConfig, fit, seed_everything


class RandomImages(Dataset):
    """``n`` random images of ``size`` px with labels; yields (image, label, position)."""

    def __init__(self, n: int, size: int, n_classes: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)
        self.labels = torch.randint(0, n_classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.images[i], int(self.labels[i]), i


def bare_loop(args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(wall, CPU) seconds for ``args.epochs`` epochs of a plain PyTorch training loop."""
    model = build_model(args.arch, args.classes, width=args.width).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    data = RandomImages(args.n, args.size, args.classes)
    loader = DataLoader(data, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                        pin_memory=cuda, persistent_workers=args.workers > 0)
    opt = torch.optim.SGD([{"params": model.backbone_parameters(), "lr": 5e-3},
                           {"params": model.head_parameters(), "lr": 1e-2}],
                          momentum=0.9, weight_decay=5e-4)

    def epoch() -> None:
        model.train()
        for x, y, _ in loader:
            x = x.to(device, non_blocking=True,
                     memory_format=torch.channels_last if cuda else torch.preserve_format)
            y = y.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                out = model(x)
            logits = out.logits.float()
            loss = F.cross_entropy(logits, y) + args.beta * feature_diversity_loss(
                out.feature_maps.float(), model.head_weight().float(), logits.detach().argmax(1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    epoch()  # warm-up
    _sync(device)
    start = _now()
    for _ in range(args.epochs):
        epoch()
    _sync(device)
    return _elapsed(start)


def fit_loop(args: argparse.Namespace, device: torch.device) -> tuple[float, float]:
    """(wall, CPU) seconds for ``args.epochs`` epochs of :func:`fit` (after a warm-up fit)."""
    model = build_model(args.arch, args.classes, width=args.width)
    train = RandomImages(args.n, args.size, args.classes)
    test = RandomImages(args.batch, args.size, args.classes)

    def config(epochs: int) -> FitConfig:
        return FitConfig(epochs=epochs, batch_size=args.batch, lr_backbone=5e-3, lr_head=1e-2,
                         lr_step=30, lr_gamma=0.4, momentum=0.9, weight_decay=5e-4,
                         beta=args.beta, seed=0, num_workers=args.workers)

    with tempfile.TemporaryDirectory() as tmp:
        resume = Path(tmp) / "scratch" if args.resume else None
        fit(model, train, test, config(1), device=device)  # warm-up
        _sync(device)
        start = _now()
        fit(model, train, test, config(args.epochs), device=device, resume_dir=resume,
            log_dir=Path(tmp) / "log")
        _sync(device)
        return _elapsed(start)


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _elapsed(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _now()
    return wall - start[0], cpu - start[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(args: argparse.Namespace) -> None:
    """Child process: time one variant, print one JSON line."""
    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    wall, cpu = (bare_loop if args.variant == "bare" else fit_loop)(args, device)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    images = args.n * args.epochs
    print(json.dumps({"images_per_s": images / wall, "images_per_cpu_s": images / cpu,
                      "peak_rss_mib": peak_rss, "peak_cuda_mib": peak_cuda,
                      "device": str(device)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--size", type=int, default=64, help="input size in px")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n", type=int, default=256, help="training images per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--beta", type=float, default=0.196)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 is steadier when shared")
    parser.add_argument("--resume", action="store_true", help="fit saves resume checkpoints")
    parser.add_argument("--variant", choices=["bare", "fit"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_variant(args)
        return

    child = [sys.executable, __file__, *sys.argv[1:]]
    results: dict[str, list[dict[str, float]]] = {"bare": [], "fit": []}
    for _ in range(args.repeats):
        for variant in results:
            out = subprocess.run([*child, "--variant", variant], check=True, text=True,
                                 capture_output=True).stdout
            results[variant].append(json.loads(out.strip().splitlines()[-1]))
    rate = {v: statistics.median(r["images_per_s"] for r in rs) for v, rs in results.items()}
    cpu_rate = {v: statistics.median(r["images_per_cpu_s"] for r in rs)
                for v, rs in results.items()}
    print(f"training throughput: {args.arch} width {args.width}, {args.size} px, batch "
          f"{args.batch}, {args.n} images x {args.epochs} epochs, device "
          f"{results['fit'][0]['device']}, median of {args.repeats}, "
          f"{args.threads or torch.get_num_threads()} CPU threads")
    print(f"{'loop':<6} {'images/s':>10} {'images/CPU-s':>13} {'peak RSS MiB':>13} "
          f"{'peak CUDA MiB':>14}")
    for variant, rs in results.items():
        print(f"{variant:<6} {rate[variant]:>10.1f} {cpu_rate[variant]:>13.1f} "
              f"{max(r['peak_rss_mib'] for r in rs):>13.0f} "
              f"{max(r['peak_cuda_mib'] for r in rs):>14.0f}")
    ratio, cpu_ratio = rate["fit"] / rate["bare"], cpu_rate["fit"] / cpu_rate["bare"]
    print(f"fit / bare = {ratio:.3f} wall-clock, {cpu_ratio:.3f} per CPU-second "
          f"(goal >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")


if __name__ == "__main__":
    main()
