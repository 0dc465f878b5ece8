"""Tests of the ``qsenn`` command: predict, explain (contributions add up to the logit), export,
and one clear line with a non-zero exit for every kind of bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tiny_qsenn import WEIGHT, Tiny, make_tiny, pipeline_logits, split_images

from qsenn_core import cli
from qsenn_core.export import CONFIG_FILE


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return make_tiny(tmp_path_factory.mktemp("tiny_cli"))


def qsenn(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Run ``qsenn argv`` in-process; (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _error_line(err: str) -> str:
    """The stderr of a failed run without tqdm's bars: exactly one ``error:`` line."""
    lines = [line for line in err.replace("\r", "\n").splitlines()
             if line.strip() and not line.lstrip().startswith(("read images", "predict"))]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


# ----------------------------------------------------------------------------------------------
# predict
# ----------------------------------------------------------------------------------------------


def test_predict_ranks_classes_like_the_pipeline_model(tiny: Tiny, capsys) -> None:
    images = split_images(tiny)[:3]
    code, out, _ = qsenn(capsys, "predict", tiny.model_path, *images, "--json", "-k", "2",
                         "--device", "cpu")
    assert code == 0
    results = json.loads(out)
    logits = pipeline_logits(tiny, images)
    probs = torch.softmax(logits.double(), dim=1)
    assert [r["image"] for r in results] == [str(p) for p in images]
    for r, row, p in zip(results, logits, probs, strict=True):
        ranked = r["predictions"]
        assert [x["rank"] for x in ranked] == [1, 2]
        assert ranked[0]["class"] == int(row.argmax())
        assert ranked[0]["name"] == tiny.index.class_names[int(row.argmax())]
        assert ranked[0]["probability"] >= ranked[1]["probability"]
        for x in ranked:
            assert x["probability"] == pytest.approx(float(p[x["class"]]), abs=1e-12)
            assert x["logit"] == float(row[x["class"]])
    code, table, _ = qsenn(capsys, "predict", tiny.model_path, images[0], "-k", "3")
    lines = table.splitlines()
    assert code == 0 and lines[0].split() == ["image", "rank", "class", "probability"]
    assert len(lines) == 4 and lines[1].split()[2] == results[0]["predictions"][0]["name"]
    assert sum(float(line.split()[-1].rstrip("%")) for line in lines[1:]) == pytest.approx(
        100.0, abs=0.02)


# ----------------------------------------------------------------------------------------------
# explain
# ----------------------------------------------------------------------------------------------


def test_explain_writes_a_readable_png_and_a_decision_that_adds_up(tiny: Tiny, capsys,
                                                                    tmp_path: Path) -> None:
    images = split_images(tiny)
    code, out, _ = qsenn(capsys, "explain", tiny.model_path, *images, "--out", tmp_path / "x",
                         "--concepts", tiny.concepts_path)
    assert code == 0 and len(out.splitlines()) == len(images)
    logits = pipeline_logits(tiny, images)
    for image, row in zip(images, logits, strict=True):
        with Image.open(tmp_path / "x" / f"{image.stem}.png") as png:
            assert png.format == "PNG" and png.width >= 600 and png.height >= 300
            pixels = np.asarray(png.convert("RGB"))
        assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
        decision = json.loads((tmp_path / "x" / f"{image.stem}.json").read_text())
        c = decision["predicted"]["class"]
        assert c == int(row.argmax()) and decision["predicted"]["logit"] == float(row[c])
        assert decision["bias"] == pytest.approx(float([0.1, -0.2, 0.05][c]))
        # exactly the features with a nonzero weight for the predicted class, largest first
        used = {int(torch.tensor([5, 1, 6, 3])[j]): float(WEIGHT[c, j])
                for j in range(4) if WEIGHT[c, j] != 0}
        assert {f["feature"]: f["weight"] for f in decision["features"]} == pytest.approx(used)
        for f in decision["features"]:
            assert f["standardized"] == pytest.approx((f["activation"] - f["mean"]) / f["std"],
                                                      rel=1e-5, abs=1e-6)
            assert f["contribution"] == pytest.approx(f["weight"] * f["standardized"])
            assert f["concept"] == f"has_wing_color::c{f['feature']}"
        total = decision["bias"] + sum(f["contribution"] for f in decision["features"])
        assert total == pytest.approx(decision["predicted"]["logit"], abs=1e-5)
        assert decision["bias_plus_contributions"] == pytest.approx(total, abs=1e-12)
    # same inputs, same bytes
    qsenn(capsys, "explain", tiny.model_path, images[0], "--out", tmp_path / "y",
          "--concepts", tiny.concepts_path)
    for suffix in (".png", ".json"):
        name = images[0].stem + suffix
        assert (tmp_path / "y" / name).read_bytes() == (tmp_path / "x" / name).read_bytes()


def test_contributions_add_up_to_the_logit_on_every_image(tiny: Tiny) -> None:
    from qsenn_core.inference import predictor_from_model_file

    predictor = predictor_from_model_file(tiny.model_path)
    images = [tiny.index.image_paths[p] for p in range(len(tiny.index))]
    logits = pipeline_logits(tiny, images)
    for image, row in zip(images, logits, strict=True):
        d = predictor.explain(image).decision
        assert d.predicted.logit == float(row.max())
        assert d.total == pytest.approx(d.predicted.logit, abs=1e-5)
        assert len(d.features) == int((WEIGHT[d.predicted.index] != 0).sum())


def test_a_file_without_metadata_needs_params(tiny: Tiny, capsys, tmp_path: Path) -> None:
    image = split_images(tiny)[0]
    code, _, err = qsenn(capsys, "predict", tiny.bare_model_path, image)
    assert code == 1 and "pass --params" in _error_line(err)
    code, out, _ = qsenn(capsys, "predict", tiny.bare_model_path, image, "--json", "--params",
                         tiny.params_path)
    code_meta, out_meta, _ = qsenn(capsys, "predict", tiny.model_path, image, "--json")
    assert code == code_meta == 0 and json.loads(out) == json.loads(out_meta)


def test_export_command_then_predict_from_the_folder(tiny: Tiny, capsys, tmp_path: Path) -> None:
    image = split_images(tiny)[1]
    code, _, _ = qsenn(capsys, "export", tiny.model_path, "--out", tmp_path / "exp",
                       "--concepts", tiny.concepts_path)
    assert code == 0
    config = json.loads((tmp_path / "exp" / CONFIG_FILE).read_text())
    assert config["concept_names"]["6"] == "has_wing_color::c6"
    _, from_dir, _ = qsenn(capsys, "predict", tmp_path / "exp", image, "--json")
    _, from_file, _ = qsenn(capsys, "predict", tiny.model_path, image, "--json")
    assert json.loads(from_dir)[0]["predictions"] == json.loads(from_file)[0]["predictions"]


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "qsenn"
    assert script.is_file(), "run `pip install -e .` to install the qsenn command"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    assert all(word in proc.stdout for word in ("predict", "explain", "export"))


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------


def _bad_inputs(tiny: Tiny, root: Path) -> dict[str, tuple[list[str | Path], str]]:
    """name -> (argv, a word of the expected error line) for every kind of bad input."""
    good = split_images(tiny)[0]
    (root / "text.jpg").write_text("not an image")
    buffer = io.BytesIO()
    Image.open(good).save(buffer, format="JPEG")
    (root / "cut.jpg").write_bytes(buffer.getvalue()[:300])
    Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(root / "deep.png")
    assert Image.open(root / "deep.png").mode.startswith("I")
    Image.new("RGB", (8, 8), "red").save(root / "tiny.png")
    Image.new("RGB", (400, 20), "red").save(root / "long.png")
    other = yaml.safe_load(tiny.params_path.read_text())
    other["model"]["arch"] = "resnet18"
    (root / "resnet.yaml").write_text(yaml.safe_dump(other))
    (root / "no_model").mkdir()
    (root / "not_model.pt").write_bytes(b"\x00" * 64)
    torch.save({"selection": torch.arange(3)}, root / "layer.pt")
    out = ["--out", root / "out"]
    model = tiny.model_path
    return {
        "missing image": (["explain", model, root / "nope.jpg", *out], "nope.jpg"),
        "unreadable image": (["explain", model, root / "text.jpg", *out], "text.jpg"),
        "truncated image": (["explain", model, root / "cut.jpg", *out], "cut.jpg"),
        "16-bit image": (["explain", model, root / "deep.png", *out], "deep.png"),
        "too small image": (["predict", model, root / "tiny.png"], "tiny.png"),
        "elongated image": (["predict", model, root / "long.png"], "long.png"),
        "bad image after a good one": (["explain", model, good, root / "text.jpg", *out],
                                       "text.jpg"),
        "model of another arch": (["explain", tiny.bare_model_path, good, *out, "--params",
                                   root / "resnet.yaml"], "cannot load into the resnet18"),
        "folder with no model": (["explain", root / "no_model", good, *out], "no_model"),
        "missing model file": (["predict", root / "nope.pt", good], "nope.pt"),
        "not a model file": (["predict", root / "not_model.pt", good], "not_model.pt"),
        "sparse layer file": (["export", root / "layer.pt", "--out", root / "exp"], "layer.pt"),
        "missing params": (["predict", tiny.bare_model_path, good, "--params",
                            root / "nope.yaml"], "nope.yaml"),
        "bad threshold": (["explain", model, good, *out, "--threshold", "1.5"], "--threshold"),
    }


def test_bad_input_is_one_clear_line_and_a_nonzero_exit(tiny: Tiny, capsys,
                                                        tmp_path: Path) -> None:
    for name, (argv, word) in _bad_inputs(tiny, tmp_path).items():
        code, out, err = qsenn(capsys, *argv)
        assert code == 1, name
        assert word in _error_line(err), (name, err)
        assert out == "", name
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), name
        assert not (tmp_path / "exp").exists(), name


def test_usage_errors_exit_2(tiny: Tiny, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["explain", str(tiny.model_path), "x.jpg"])  # no --out
    assert exit_info.value.code == 2
    capsys.readouterr()
