"""Extraction throughput of ``qsenn_core.extract.extract_features`` vs. a bare ``model(x)`` loop.

Goal: >= 0.9x. Both run the same model (``build_model``, eval mode, float32), batch size, input
size and DataLoader settings on the same in-memory random images (no JPEG decoding, so only the
loop is compared); the bare loop keeps ``model(x).features`` of every batch on the CPU, as
``extract_features`` does. On CUDA both use channels_last and non-blocking copies.

Every variant runs in a fresh subprocess, so its peak memory is its own:
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (peak resident set size of the whole process in
MiB, Linux reports KiB; it includes the Python interpreter and torch) and, on CUDA,
``torch.cuda.max_memory_allocated``. Throughput is the median over ``--repeats`` runs
(variants alternate) of images / second, after one warm-up pass; images per CPU-second
(``time.process_time``, all threads) is printed too, as it is steadier on a shared machine.

    .venv/bin/python bench/bench_extract_throughput.py [--device auto] [--n 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch.utils.data import DataLoader, Dataset

from qsenn_core.backbones import build_model
from qsenn_core.device import resolve_device
from qsenn_core.extract import extract_features
from qsenn_core.training import seed_everything


class RandomImages(Dataset):
    """``n`` random images of ``size`` px with labels; yields (image, label, position)."""

    def __init__(self, n: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.images[i], 0, i


def bare_pass(model: torch.nn.Module, data: Dataset, args: argparse.Namespace,
              device: torch.device) -> torch.Tensor:
    """A plain ``model(x)`` loop collecting the feature vectors on the CPU."""
    cuda = device.type == "cuda"
    loader = DataLoader(data, batch_size=args.batch, num_workers=args.workers, pin_memory=cuda)
    out = []
    with torch.no_grad():
        for x, _, _ in loader:
            x = x.to(device, non_blocking=True,
                     memory_format=torch.channels_last if cuda else torch.preserve_format)
            out.append(model(x).features.cpu())
    return torch.cat(out)


def run_variant(args: argparse.Namespace) -> None:
    """Child process: time one variant, print one JSON line."""
    device = resolve_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    model = build_model(args.arch, args.classes, width=args.width).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    data = RandomImages(args.n, args.size)

    def once() -> None:
        if args.variant == "bare":
            bare_pass(model, data, args, device)
        else:
            extract_features(model, data, batch_size=args.batch, device=device,
                             num_workers=args.workers)

    once()  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    once()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0
    print(json.dumps({"images_per_s": args.n / wall, "images_per_cpu_s": args.n / cpu,
                      "peak_rss_mib": peak_rss,
                      "peak_cuda_mib": peak_cuda, "device": str(device)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--size", type=int, default=64, help="input size in px")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n", type=int, default=1024, help="images per pass")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 is steadier when shared")
    parser.add_argument("--variant", choices=["bare", "extract"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_variant(args)
        return

    child = [sys.executable, __file__, *sys.argv[1:]]
    results: dict[str, list[dict[str, float]]] = {"bare": [], "extract": []}
    for _ in range(args.repeats):
        for variant in results:
            out = subprocess.run([*child, "--variant", variant], check=True, text=True,
                                 capture_output=True).stdout
            results[variant].append(json.loads(out.strip().splitlines()[-1]))
    rate = {v: statistics.median(r["images_per_s"] for r in rs) for v, rs in results.items()}
    cpu_rate = {v: statistics.median(r["images_per_cpu_s"] for r in rs)
                for v, rs in results.items()}
    print(f"extraction throughput: {args.arch} width {args.width}, {args.size} px, batch "
          f"{args.batch}, {args.n} images, device {results['extract'][0]['device']}, "
          f"median of {args.repeats}, "
          f"{args.threads or torch.get_num_threads()} CPU threads")
    print(f"{'loop':<8} {'images/s':>10} {'images/CPU-s':>13} {'peak RSS MiB':>13} "
          f"{'peak CUDA MiB':>14}")
    for variant, rs in results.items():
        print(f"{variant:<8} {rate[variant]:>10.1f} {cpu_rate[variant]:>13.1f} "
              f"{max(r['peak_rss_mib'] for r in rs):>13.0f} "
              f"{max(r['peak_cuda_mib'] for r in rs):>14.0f}")
    ratio, cpu_ratio = rate["extract"] / rate["bare"], cpu_rate["extract"] / cpu_rate["bare"]
    print(f"extract / bare = {ratio:.3f} wall-clock, {cpu_ratio:.3f} per CPU-second "
          f"(goal >= 0.9: {'met' if ratio >= 0.9 else 'NOT met'})")


if __name__ == "__main__":
    main()
