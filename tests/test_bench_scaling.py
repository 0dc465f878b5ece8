"""bench/bench_scaling.py: the solver's memory model, its fit to measured peaks, exponents."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import load_bench

from qsenn_core.errors import QsennError
from qsenn_core.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    return load_bench("bench_scaling")


def test_memory_model_is_linear_in_n_and_in_the_bytes_per_value() -> None:
    bench = _bench()
    f64 = bench.solver_memory_bytes(1000, 50, 200, value_bytes=8)
    assert math.isclose(bench.solver_memory_bytes(3000, 50, 200, value_bytes=8), 3 * f64)
    assert math.isclose(bench.solver_memory_bytes(1000, 50, 200, value_bytes=4), f64 / 2)
    cpu = bench.solver_memory_bytes(1000, 50, 200, value_bytes=8, cuda=False)
    assert math.isclose(f64 - cpu, 8 * 1000 * 50 * bench.CUDA_EXTRA_FEATURE_COPIES)
    # more classes cost more than more features of the same count: (n, n_c) work dominates
    wide = bench.solver_memory_bytes(1000, 250, 200, value_bytes=8)
    many = bench.solver_memory_bytes(1000, 50, 400, value_bytes=8)
    assert many - f64 > wide - f64 > 0
    for bad in ({"n": 0, "d": 5, "n_classes": 3}, {"n": 5, "d": 5, "n_classes": 3,
                                                    "value_bytes": 3}):
        with pytest.raises(QsennError, match="memory model"):
            bench.solver_memory_bytes(**bad)


def test_imagenet_rows_and_max_rows_follow_the_model() -> None:
    bench = _bench()
    rows = bench.imagenet_table()
    assert {(r["path"], r["dtype"]) for r in rows} == {
        (p, t) for p in ("selection (group)", "elastic net") for t in ("float64", "float32")}
    for row in rows:
        need = bench.solver_memory_bytes(bench.IMAGENET_N, row["d"], bench.IMAGENET_CLASSES,
                                         value_bytes=8 if row["dtype"] == "float64" else 4,
                                         group=row["path"].startswith("selection"))
        assert math.isclose(row["GB"], need / 1e9, abs_tol=0.05)
        for gpu in bench.GPU_MEMORY_GB:
            assert row[f"fits {gpu:.0f} GB"] == (need <= gpu * 1e9)
    for group in (False, True):
        n_max = bench.max_rows(2048, 1000, 80.0, value_bytes=8, group=group)
        assert bench.solver_memory_bytes(n_max, 2048, 1000, group=group) <= 80e9
        assert bench.solver_memory_bytes(n_max + 1, 2048, 1000, group=group) > 80e9


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux /proc only")
def test_model_bounds_a_measured_peak() -> None:
    bench = _bench()
    row = bench.measure_memory([(20000, 40, 100, False)])[0]
    assert 0.5 < 1.0 / row["model/measured"] <= 1.0  # an upper bound, not a loose one


def test_fitted_exponent_recovers_a_power_law() -> None:
    bench = _bench()
    sizes = [10, 20, 40, 80]
    assert math.isclose(bench.fitted_exponent(sizes, [3.0 * s**1.5 for s in sizes]), 1.5,
                        rel_tol=1e-9)
    with pytest.raises(QsennError):
        bench.fitted_exponent([1, 2], [1.0, 0.0])
    with pytest.raises(QsennError):
        bench.fitted_exponent([1], [1.0])


def test_one_finetuning_epoch_runs_with_a_ternary_sparse_layer() -> None:
    bench = _bench()
    params = load_params(ROOT / "params.yaml")
    model = bench.finetune_model(16, 4, params.select.n_features, params.quant.n_per_class,
                                 params.finetune.dropout)
    weight = model.head.weight.clone()
    assert int((weight != 0).sum(1).max()) == min(params.quant.n_per_class, 16)
    assert set(weight.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert bench.time_finetune_epoch(8, 16, 4, params, image_size=32) > 0.0
