"""bench/bench_iterations.py: the metrics before and after each fine-tuning of a finished run."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import load_bench
from dvc_project import Reproduced

from qsenn_core.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    return load_bench("bench_iterations")


def test_trajectory_matches_the_pipeline_metrics(reproduced: Reproduced,
                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    root = reproduced.root
    monkeypatch.chdir(tmp_path)  # paths resolve against the project root, not the cwd
    params = load_params(root / "params.yaml")
    rows = bench.trajectory(params, root)
    keys = list(params.iterations)
    assert [row["step"].split(" ")[:3] for row in rows] == [
        ["iter", key, part] for key in keys for part in ("before", "after")]
    for key, before, after in zip(keys, rows[::2], rows[1::2], strict=True):
        # after fine-tuning: exactly what the evaluate stage wrote
        stage = json.loads((root / f"metrics/iter_{key}.json").read_text())
        stage.pop("assignments_changed", None)  # the evaluate stage's comparison with prev
        assert set(stage) == set(after) - {"step"}
        for name, value in stage.items():
            assert after[name] == pytest.approx(value, abs=1e-5), (key, name)
        # before: the previous model carries the new layer (its size is the quantize stage's)
        layer = json.loads((root / f"metrics/quantize_iter_{key}.json").read_text())
        assert before["n_features"] == layer["n_features"]
        assert before["features_per_class"] == pytest.approx(layer["features_per_class"])
        assert 0.0 <= before["accuracy"] <= 100.0 and 0.0 < before["diversity_at_5"] <= 100.0

    assert bench.main(["--params", str(root / "params.yaml"), "--root", str(root),
                       "--json", str(tmp_path / "rows.json")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + 2 * len(keys) and table[0].startswith("| step | accuracy")
    assert json.loads((tmp_path / "rows.json").read_text()) == json.loads(json.dumps(rows))


def test_missing_run_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    code = bench.main(["--params", str(ROOT / "params.yaml"), "--root", str(tmp_path)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
