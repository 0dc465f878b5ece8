"""Train/test transforms of the supplement's Implementation Details."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from qsenn_core.data import DATASET_STATS, DATASETS, build_transform
from qsenn_core.dataset_registry import IMAGENET_STATS
from qsenn_core.errors import ParamsError


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def step_types(transform: T.Compose) -> list[type]:
    return [type(t) for t in transform.transforms]


def test_stats_cover_every_dataset() -> None:
    assert set(DATASET_STATS) == set(DATASETS)
    assert DATASET_STATS["cub"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for mean, std in DATASET_STATS.values():
        assert len(mean) == len(std) == 3 and min(std) > 0
    # every photograph dataset is normalised as the ImageNet-pretrained backbones expect
    for name in ("cub", "travelingbirds", "cars", "aircraft", "imagenet"):
        assert DATASET_STATS[name] == IMAGENET_STATS


@pytest.mark.parametrize("name", list(DATASETS))
def test_train_steps_follow_the_dataset_table(name: str) -> None:
    spec = DATASETS[name]
    steps = build_transform(name, 24, train=True).transforms
    kinds = [type(t) for t in steps]
    assert (T.RandomCrop in kinds) == spec.random_crop
    assert (T.TrivialAugmentWide in kinds) == spec.trivial_augment
    for transform in (steps, build_transform(name, 24, train=False).transforms):
        normalize = transform[-1]
        assert isinstance(normalize, T.Normalize)
        assert (tuple(normalize.mean), tuple(normalize.std)) == spec.stats


@pytest.mark.parametrize("name", list(DATASETS))
@pytest.mark.parametrize("train", [True, False])
def test_output_shape_for_non_square_images(name: str, train: bool) -> None:
    out = build_transform(name, 24, train)(noise_image(40, 30))
    assert out.shape == (3, 24, 24) and out.dtype == torch.float32


def test_train_pipeline_follows_the_supplement() -> None:
    t = build_transform("cub", 32, train=True)
    assert step_types(t) == [T.Resize, T.RandomCrop, T.RandomHorizontalFlip, T.ColorJitter,
                             T.TrivialAugmentWide, T.ToTensor, T.Normalize]
    resize, crop, _, jitter = t.transforms[:4]
    assert resize.size == (32, 32)
    assert crop.size == (32, 32) and crop.padding == 4
    assert jitter.brightness == (0.9, 1.1) and jitter.contrast == (0.9, 1.1)
    assert jitter.saturation == (0.9, 1.1) and jitter.hue is None


def test_aircraft_has_no_crop_and_imagenet_and_synth_no_trivial_augment() -> None:
    aircraft = step_types(build_transform("aircraft", 32, train=True))
    assert T.RandomCrop not in aircraft and T.TrivialAugmentWide in aircraft
    for name in ("imagenet", "synth", "synth_travelingbirds"):
        steps = step_types(build_transform(name, 32, train=True))
        assert T.TrivialAugmentWide not in steps and T.RandomCrop in steps
        assert T.ColorJitter in steps and T.RandomHorizontalFlip in steps
    for name in ("travelingbirds", "cars"):
        steps = step_types(build_transform(name, 32, train=True))
        assert T.RandomCrop in steps and T.TrivialAugmentWide in steps


def test_test_transform_normalizes_with_dataset_stats() -> None:
    color = (200, 100, 50)
    for name in ("cub", "synth"):
        out = build_transform(name, 8, train=False)(Image.new("RGB", (13, 9), color))
        mean, std = DATASET_STATS[name]
        want = [(c / 255 - m) / s for c, m, s in zip(color, mean, std, strict=True)]
        torch.testing.assert_close(out.mean(dim=(1, 2)), torch.tensor(want), atol=1e-5, rtol=0)
        assert float(out.std(dim=(1, 2)).max()) < 1e-5


def test_test_transform_keeps_aspect_and_crops_the_centre() -> None:
    # 32x16 image: blue left quarter, red right quarter, green centre; resize(16) keeps it
    # 32x16, the centre crop of 16 keeps only the green middle.
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:, :8] = (0, 0, 255)
    arr[:, 8:24] = (0, 255, 0)
    arr[:, 24:] = (255, 0, 0)
    out = build_transform("synth", 16, train=False)(Image.fromarray(arr))
    mean, std = DATASET_STATS["synth"]
    rgb = out * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    torch.testing.assert_close(rgb.mean(dim=(1, 2)), torch.tensor([0.0, 1.0, 0.0]), atol=1e-3,
                               rtol=0)


def test_train_transform_is_random_but_seeded() -> None:
    img = noise_image(20, 20)
    t = build_transform("cub", 16, train=True)
    torch.manual_seed(3)
    a = t(img)
    torch.manual_seed(3)
    b = t(img)
    torch.manual_seed(4)
    c = t(img)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_bad_arguments_are_params_errors() -> None:
    with pytest.raises(ParamsError, match="data.name"):
        build_transform("mnist", 32, train=True)
    with pytest.raises(ParamsError, match="data.image_size"):
        build_transform("cub", 0, train=False)
