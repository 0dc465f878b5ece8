"""bench/gpu_check.sh at toy size on the CPU: every phase runs and reports its figures."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_every_phase_at_toy_size(tmp_path: Path) -> None:
    out = tmp_path / "check"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GPU_CHECK_TIMEOUT": "120"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), str(out), "--toy",
                           "--device", "cpu"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    assert result["device"] == "cpu" and result["arch"] == "resnet50"
    assert result["synth"]["images"] == 4 * (3 + 1)  # --toy: 4 classes, 3 train + 1 test each
    train, extract = result["train"], result["extract"]
    assert train["images"] == 12 and train["images_per_s"] > 0 and train["nproc"] == 1
    assert extract["images"] == 12 and extract["images_per_s"] > 0
    assert train["peak_gpu_gib"] is None and extract["peak_gpu_gib"] is None  # no CUDA
    solve = result["solve"]
    assert solve["d"] == 2048 and solve["selected"] == 8  # ResNet50's n_f; --toy selects 8
    assert solve["sparse_points"] >= 1 and solve["sparse_max_gap"] <= 1e-4  # params.yaml tol
    for name in ("sparse", "select"):
        bench = result["bench_solver"][name]
        assert bench["points"] == 5 and bench["max_gap"] <= 1e-6  # --toy: 5 lambdas, 5 steps
        assert bench["model_gib"] > 0 and bench["peak_gpu_gib"] is None
    assert "skipped" in result["train_nproc2"]  # no 2 CUDA devices here
