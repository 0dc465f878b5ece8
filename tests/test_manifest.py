"""The dataset manifest that stands in for the dataset folder as the stages' dependency."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from qsenn_core.data.manifest import manifest_text, write_manifest
from qsenn_core.errors import DataError

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> None:
    (root / "CUB_200_2011" / "images" / "001.A").mkdir(parents=True)
    (root / "CUB_200_2011" / "images.txt").write_text("1 001.A/a.jpg\n")
    (root / "CUB_200_2011" / "images" / "001.A" / "a.jpg").write_bytes(b"\xff\xd8abc")


def test_manifest_lists_every_file_with_hash_and_size(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / ".hidden.tmp").write_text("half-written")
    lines = manifest_text(tmp_path, progress=False).splitlines()
    assert [line.split("  ")[2] for line in lines] == [
        "CUB_200_2011/images.txt", "CUB_200_2011/images/001.A/a.jpg"]  # sorted as strings
    md5, size, _ = lines[1].split("  ")
    assert md5 == hashlib.md5(b"\xff\xd8abc").hexdigest() and size == "5"


def test_manifest_changes_exactly_when_content_changes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(a)
    _tree(b)
    assert manifest_text(a, progress=False) == manifest_text(b, progress=False)
    (b / "CUB_200_2011" / "images.txt").write_text("1 001.A/b.jpg\n")  # same size, new bytes
    assert manifest_text(a, progress=False) != manifest_text(b, progress=False)


def test_missing_or_empty_root_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.root: dataset folder .* not found"):
        manifest_text(tmp_path / "nope")
    with pytest.raises(DataError, match="is empty"):
        manifest_text(tmp_path)


def test_stage_checks_the_dataset_then_writes_the_manifest(tmp_path: Path) -> None:
    import yaml

    from qsenn_core.params import load_params
    from qsenn_core.synth import generate_synth

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["synth"].update(n_classes=3, image_size=32, train_per_class=2, test_per_class=1)
    raw["data"]["root"] = str(tmp_path / "data")
    raw["select"]["n_features"] = 4
    raw["quant"]["n_per_class"] = 2
    raw["explain"]["n_classes"] = 2
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    generate_synth(tmp_path / "data", load_params(params).synth)
    out = tmp_path / "manifest.txt"
    cmd = [sys.executable, str(REPO / "stages" / "index_data.py"), str(out), "--params",
           str(params)]
    subprocess.run(cmd, check=True, capture_output=True)
    assert out.read_text() == manifest_text(tmp_path / "data", progress=False)
    out.unlink()
    # a truncated image: one line naming it, no manifest
    image = sorted((tmp_path / "data" / "CUB_200_2011" / "images").rglob("*.jpg"))[0]
    image.write_bytes(b"\xff\xd8 truncated")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1 and not out.exists()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and image.name in last and "not a readable image" in last
    # a missing dataset folder: one line, no manifest
    raw["data"]["root"] = "/no/such"
    params.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1 and not out.exists()
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "/no/such" in proc.stderr


def test_write_manifest_counts_files(tmp_path: Path) -> None:
    _tree(tmp_path / "d")
    assert write_manifest(tmp_path / "d", tmp_path / "m.txt", progress=False) == 2
