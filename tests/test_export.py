"""Tests of model-file metadata, ``qsenn export`` and ``qsenn_core.load``: bit-identical logits on
CPU, no unpickling, light package import, one-line errors for broken exports."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_qsenn import CPU, IMAGE_SIZE, SELECTION, Tiny, make_tiny, pipeline_model, split_images

import qsenn_core
from qsenn_core.data import ImageDataset, build_transform
from qsenn_core.errors import DataError, QsennError
from qsenn_core.export import CONFIG_FILE, WEIGHTS_FILE, export_model
from qsenn_core.inference import predictor_from_model_file
from qsenn_core.model_file import METADATA_KEY, metadata_from_params, read_model_file, save_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return make_tiny(tmp_path_factory.mktemp("tiny_export"))


@pytest.fixture(scope="module")
def exported(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    predictor = predictor_from_model_file(tiny.model_path, concept_names={5: "red wing"})
    return export_model(predictor, tmp_path_factory.mktemp("exp") / "export")


def _test_batch(tiny: Tiny) -> torch.Tensor:
    dataset = ImageDataset(tiny.index, "test", build_transform("synth", IMAGE_SIZE, train=False))
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


# ----------------------------------------------------------------------------------------------
# metadata inside model files
# ----------------------------------------------------------------------------------------------


def test_metadata_travels_in_the_model_file_and_load_model_ignores_it(tiny: Tiny,
                                                                       tmp_path: Path) -> None:
    raw = torch.load(tiny.model_path, weights_only=True)
    assert raw[METADATA_KEY].dtype == torch.uint8
    state, metadata = read_model_file(tiny.model_path)
    assert METADATA_KEY not in state
    assert metadata == metadata_from_params(tiny.params, tiny.index)
    assert metadata.class_names == tuple(tiny.index.class_names)
    assert (metadata.arch, metadata.width, metadata.image_size) == ("small_cnn", 8, IMAGE_SIZE)
    assert metadata.mean == (0.5, 0.5, 0.5) and metadata.std == (0.25, 0.25, 0.25)
    assert read_model_file(tiny.bare_model_path)[1] is None
    # the pipeline loads both files into the same model
    x = _test_batch(tiny)
    with torch.no_grad():
        a = pipeline_model(tiny.params, tiny.model_path)(x).logits
        b = pipeline_model(tiny.params, tiny.bare_model_path)(x).logits
    assert torch.equal(a, b)
    # deterministic bytes: the same model and metadata give the same file (torch.save names
    # the archive after the file, hence the same name)
    model = pipeline_model(tiny.params, tiny.model_path)
    save_model(model, tmp_path / tiny.model_path.name, metadata=metadata)
    assert (tmp_path / tiny.model_path.name).read_bytes() == tiny.model_path.read_bytes()


def test_tampered_metadata_is_one_line(tiny: Tiny, tmp_path: Path) -> None:
    raw = torch.load(tiny.model_path, weights_only=True)
    meta = json.loads(bytes(raw[METADATA_KEY].tolist()))
    for change, message in (({"arch": "vgg"}, "not a known architecture"),
                            ({"width": 16, "n_features": 16}, "cannot load into the small_cnn"),
                            ({"metadata_format": 99}, "newer than this qsenn")):
        text = json.dumps({**meta, **change}).encode()
        raw[METADATA_KEY] = torch.tensor(list(text), dtype=torch.uint8)
        torch.save(raw, tmp_path / "bad.pt")
        with pytest.raises(QsennError, match=message) as err:
            predictor_from_model_file(tmp_path / "bad.pt")
        assert "\n" not in str(err.value) and "bad.pt" in str(err.value)


# ----------------------------------------------------------------------------------------------
# export and load
# ----------------------------------------------------------------------------------------------


def test_export_then_load_gives_bit_identical_logits(tiny: Tiny, exported: Path) -> None:
    x = _test_batch(tiny)
    loaded = qsenn_core.load(exported)
    assert isinstance(loaded, torch.nn.Module) and not loaded.training
    with torch.no_grad():
        expected = pipeline_model(tiny.params, tiny.model_path)(x).logits
        got = loaded(x)
    assert got.device == CPU
    assert torch.equal(got, expected)
    # the loaded model preprocesses exactly like the pipeline's test transform
    images = split_images(tiny)
    assert torch.equal(torch.stack([loaded.preprocess(p) for p in images]), x)
    assert loaded.predict(images[0], k=1)[0].index == int(expected[0].argmax())


def test_export_config_describes_the_model(tiny: Tiny, exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    config = json.loads((exported / CONFIG_FILE).read_text())
    assert config["arch"] == "small_cnn" and config["image_size"] == IMAGE_SIZE
    assert config["mean"] == [0.5] * 3 and config["std"] == [0.25] * 3
    assert config["class_names"] == list(tiny.index.class_names)
    assert config["selected_features"] == list(SELECTION)
    assert config["alpha"] == pytest.approx(0.7)
    assert config["concept_names"] == {"5": "red wing"}
    loaded = qsenn_core.load(exported)
    assert loaded.concept_names == {5: "red wing"}
    explanation = loaded.explain(split_images(tiny)[0])
    assert explanation.decision.total == pytest.approx(explanation.decision.predicted.logit,
                                                       abs=1e-5)


def test_load_never_unpickles(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert qsenn_core.load(exported).sparse_layer is not None


def test_import_qsenn_core_stays_light() -> None:
    code = ("import sys, qsenn_core\n"
            "assert 'torch' not in sys.modules, 'torch'\n"
            "assert 'qsenn_core.export' not in sys.modules, 'export'\n"
            "assert 'load' in dir(qsenn_core)\n"
            "from qsenn_core import load\n"
            "assert 'qsenn_core.export' in sys.modules and callable(load)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(AttributeError):
        _ = qsenn_core.no_such_name


def test_broken_exports_are_one_line(tiny: Tiny, exported: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no exported model here"):
        qsenn_core.load(empty)
    with pytest.raises(DataError, match="export folder not found"):
        qsenn_core.load(tmp_path / "nowhere")

    def copy(name: str) -> Path:
        out = tmp_path / name
        out.mkdir()
        for f in (CONFIG_FILE, WEIGHTS_FILE):
            (out / f).write_bytes((exported / f).read_bytes())
        return out

    cut = copy("cut")
    (cut / WEIGHTS_FILE).write_bytes((exported / WEIGHTS_FILE).read_bytes()[:200])
    other = copy("other")
    config = json.loads((other / CONFIG_FILE).read_text())
    (other / CONFIG_FILE).write_text(json.dumps({**config, "selected_features": [0, 1, 2, 3]}))
    wider = copy("wider")
    (wider / CONFIG_FILE).write_text(json.dumps({**config, "width": 16, "n_features": 16}))
    for folder, message in ((cut, "not a readable safetensors"), (other, "do not match"),
                            (wider, "cannot load into the small_cnn model")):
        with pytest.raises(DataError, match=message) as err:
            qsenn_core.load(folder)
        assert "\n" not in str(err.value)


def test_export_never_overwrites_other_files(tiny: Tiny, exported: Path, tmp_path: Path) -> None:
    predictor = predictor_from_model_file(tiny.model_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(QsennError, match="holds other files"):
        export_model(predictor, busy)
    assert (busy / "notes.txt").read_text() == "mine"
    # an earlier export is replaced; the same model gives the same bytes
    named = predictor_from_model_file(tiny.model_path, concept_names={5: "red wing"})
    export_model(predictor, tmp_path / "again")
    again = export_model(named, tmp_path / "again")
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        assert (again / name).read_bytes() == (exported / name).read_bytes()
