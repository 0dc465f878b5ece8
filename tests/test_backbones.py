"""Backbones: shapes, torchvision equivalence, reduced strides, weights and one-line errors."""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

from qsenn_core.backbones import (
    QSENN,
    build_model,
    check_image_size,
    feature_map_size,
    feature_width,
    load_state_dict_checked,
)
from qsenn_core.errors import QsennError


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared, loaded CPU two spinning threads are many times slower,
    and these tests are small. Results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TORCH_HOME and a torch.hub whose downloads fail as on a machine without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- small_cnn


def test_small_cnn_forward_contract() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", 7, width=32, dropout=0.5)
    assert isinstance(model, QSENN) and model.n_features == 32
    x = torch.randn(4, 3, 64, 64)
    out = model.train()(x)
    assert out.logits.shape == (4, 7)
    assert out.feature_maps.shape == (4, 32, 8, 8)
    assert (out.feature_maps >= 0).all()
    # f is the plain global average of M (dropout acts only on the way into the head)
    torch.testing.assert_close(out.features, out.feature_maps.mean(dim=(2, 3)))
    model.eval()
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out.logits, model.head(out.features))
    assert model.head_weight().shape == (7, 32)
    assert model.head_weight() is model.head.weight


def test_small_cnn_trains_end_to_end() -> None:
    torch.manual_seed(0)
    model = build_model("small_cnn", 3, width=16)
    x, y = torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x).logits, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_parameter_groups_partition_the_model() -> None:
    model = build_model("small_cnn", 4, width=16)
    backbone = {id(p) for p in model.backbone_parameters()}
    head = {id(p) for p in model.head_parameters()}
    assert backbone and head and not backbone & head
    assert backbone | head == {id(p) for p in model.parameters()}
    assert head == {id(model.head.weight), id(model.head.bias)}


def test_same_seed_same_init_and_different_seed_differs() -> None:
    states = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        states.append(build_model("resnet18", 5).state_dict())
    assert state_equal(states[0], states[1])
    assert not torch.equal(states[0]["trunk.conv1.weight"], states[2]["trunk.conv1.weight"])


# --------------------------------------------------------------------------- torchvision trunks


@pytest.mark.parametrize(
    ("arch", "size", "n_f", "hw"),
    [
        ("resnet18", 64, 512, 2),
        ("resnet50", 64, 2048, 2),
        ("densenet121", 64, 1024, 2),
        ("inception_v3", 80, 2048, 1),
    ],
)
def test_trunk_reproduces_torchvision_features(arch: str, size: int, n_f: int, hw: int) -> None:
    """A bare torchvision state dict loads into the trunk, whose pooled output is torchvision's
    penultimate vector (inception with torchvision's transform_input for its weights)."""
    torch.manual_seed(0)
    kwargs = {}
    if arch == "inception_v3":
        kwargs = {"aux_logits": False, "transform_input": True, "init_weights": False}
    reference = torchvision.models.get_model(arch, weights=None, num_classes=10, **kwargs)
    reference.eval()
    head = "classifier" if arch == "densenet121" else "fc"
    setattr(reference, head, torch.nn.Identity())
    model = build_model(arch, 3).eval()
    load_state_dict_checked(model, reference.state_dict(), "reference")
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        out = model(x)
        expected = reference(x)
    assert feature_width(arch, 128) == n_f == model.n_features
    assert out.logits.shape == (1, 3)
    assert out.feature_maps.shape == (1, n_f, hw, hw)
    assert (out.feature_maps >= 0).all()
    # random-init BN statistics make activations large in eval mode: compare relative to scale
    scale = expected.abs().max().item()
    torch.testing.assert_close(out.features, expected, rtol=1e-3, atol=1e-5 * scale)


def test_densenet_legacy_key_names_load() -> None:
    """Old torchvision DenseNet files say ``norm.1`` for ``norm1`` and lack BN counters."""
    model = build_model("densenet121", 2)
    wanted = {k: v + 1.0 for k, v in model.state_dict().items()
              if k.startswith("trunk.") and not k.endswith("num_batches_tracked")}

    def old_name(key: str) -> str:
        key = key.removeprefix("trunk.")
        return key.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2.")

    legacy = {old_name(k): v for k, v in wanted.items()}
    assert any(".norm.1." in k for k in legacy) and any(".conv.2." in k for k in legacy)
    load_state_dict_checked(model, legacy, "legacy.pth")
    loaded = model.state_dict()
    for key, value in wanted.items():
        assert torch.equal(loaded[key], value), key


# --------------------------------------------------------------------------- strides and sizes


@pytest.mark.parametrize(("arch", "small", "large"), [("small_cnn", 8, 16), ("resnet18", 2, 8)])
def test_reduced_strides_enlarge_the_maps(arch: str, small: int, large: int) -> None:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        normal = build_model(arch, 2).eval()(x).feature_maps
        reduced = build_model(arch, 2, reduced_strides=True).eval()(x).feature_maps
    assert normal.shape[-2:] == (small, small)
    assert reduced.shape[-2:] == (large, large)


def test_reduced_strides_shapes_without_compute() -> None:
    assert feature_map_size("densenet121", 64) == (2, 2)
    assert feature_map_size("densenet121", 64, True) == (8, 8)
    assert feature_map_size("resnet50", 448) == (14, 14)
    assert feature_map_size("resnet50", 224, True) == (28, 28)
    with pytest.raises(QsennError, match=r"^model.reduced_strides: not supported for inception"):
        build_model("inception_v3", 2, reduced_strides=True)


def test_check_image_size() -> None:
    check_image_size("inception_v3", 75)
    check_image_size("small_cnn", 16)
    check_image_size("resnet50", 16)
    with pytest.raises(QsennError, match=r"^data.image_size: inception_v3 cannot take 74 px"):
        check_image_size("inception_v3", 74)
    with pytest.raises(QsennError, match=r"^data.image_size: densenet121 cannot take 16 px"):
        check_image_size("densenet121", 16)


def test_unknown_arch_is_one_line() -> None:
    with pytest.raises(QsennError, match=r"^model.arch: unknown architecture 'vgg16' \(known: "):
        build_model("vgg16", 2)
    with pytest.raises(QsennError, match="model.arch"):
        feature_width("vgg16", 8)


# --------------------------------------------------------------------------- local weight files


def test_weights_from_full_and_bare_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("small_cnn", 4, width=16)
    full_path = tmp_path / "full.pth"
    torch.save(source.state_dict(), full_path)
    loaded = build_model("small_cnn", 4, width=16, weights=str(full_path))
    assert state_equal(loaded.state_dict(), source.state_dict())

    # a bare trunk saved from DDP ("module." prefix): the trunk loads, the head keeps its init
    bare = {f"module.{k.removeprefix('trunk.')}": v
            for k, v in source.state_dict().items() if k.startswith("trunk.")}
    bare_path = tmp_path / "bare.pt"
    torch.save(bare, bare_path)
    torch.manual_seed(1)
    fresh_head = build_model("small_cnn", 4, width=16).head.weight.detach().clone()
    torch.manual_seed(1)
    loaded = build_model("small_cnn", 4, width=16, weights=str(bare_path))
    torch.testing.assert_close(loaded.trunk.stem[0][0].weight, source.trunk.stem[0][0].weight)
    torch.testing.assert_close(loaded.head.weight, fresh_head)


def test_weights_with_wrong_shapes_name_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "narrow.pth"
    torch.save(build_model("small_cnn", 4, width=16).state_dict(), path)
    with pytest.raises(QsennError) as err:
        build_model("small_cnn", 4, width=32, weights=str(path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"model.weights: {path}: does not fit the small_cnn model")
    assert "wrong shapes" in message and "trunk.stage3.conv1.0.weight (16, 64, 3, 3)" in message

    with pytest.raises(QsennError, match=r"missing keys: trunk\.conv1\.weight"):
        build_model("resnet18", 4, weights=str(path))


def test_bad_weight_values(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(QsennError, match=r"^model.weights: .*garbage.pth is not a readable"):
        build_model("small_cnn", 2, weights=str(garbage))
    with pytest.raises(QsennError, match=r"^model.weights: file .*missing.pth not found"):
        build_model("small_cnn", 2, weights=str(tmp_path / "missing.pth"))
    with pytest.raises(QsennError, match=r"for resnet18 \(known: none, IMAGENET1K_V1, DEFAULT"):
        build_model("resnet18", 2, weights="IMAGENET1K_V9")
    with pytest.raises(QsennError, match=r"^model.weights: 'IMAGENET1K_V1' is neither"):
        build_model("small_cnn", 2, weights="IMAGENET1K_V1")


# --------------------------------------------------------------------------- torchvision weights


@pytest.mark.parametrize(
    ("arch", "filename"),
    [("resnet18", "resnet18-f37072fd.pth"), ("resnet50", "resnet50-0676ba61.pth")],
)
def test_missing_torchvision_weights_say_where_to_put_them(
    offline_hub: Path, arch: str, filename: str
) -> None:
    with pytest.raises(QsennError) as err:
        build_model(arch, 2, weights="IMAGENET1K_V1")
    assert str(err.value) == (
        f"model.weights: IMAGENET1K_V1 for {arch} is not on this machine and cannot be "
        f"downloaded; put {filename} into {offline_hub}/"
    )


def test_torchvision_weights_load_from_the_hub_folder(offline_hub: Path) -> None:
    """A file placed under $TORCH_HOME/hub/checkpoints loads with no network. torch.hub checks
    the hash in the file name only when it downloads, so this stand-in file passes."""
    torch.manual_seed(5)
    stand_in = torchvision.models.resnet18(weights=None)  # 1000-class fc, as the real file
    offline_hub.mkdir(parents=True)
    torch.save(stand_in.state_dict(), offline_hub / "resnet18-f37072fd.pth")
    model = build_model("resnet18", 3, weights="IMAGENET1K_V1")
    assert model.head.weight.shape == (3, 512)
    torch.testing.assert_close(model.trunk.conv1.weight, stand_in.conv1.weight)
    torch.testing.assert_close(model.trunk.layer4[1].bn2.bias, stand_in.layer4[1].bn2.bias)

    (offline_hub / "resnet18-f37072fd.pth").write_bytes(b"truncated")
    with pytest.raises(QsennError, match=r"resnet18-f37072fd.pth could not be read"):
        build_model("resnet18", 3, weights="ResNet18_Weights.IMAGENET1K_V1")
