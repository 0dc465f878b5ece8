"""Image transforms of the supplement ("Implementation Details").

Train: Resize to (s, s) -> RandomCrop(s, padding=4) (left out for FGVC-Aircraft, "as the aircraft
usually span the entire image") -> RandomHorizontalFlip -> ColorJitter(0.1, 0.1, 0.1) ->
TrivialAugmentWide (omitted for ImageNet) -> ToTensor -> Normalize.
Test: Resize(s) (shorter side) -> CenterCrop(s) -> ToTensor -> Normalize.

The image size s is a parameter (``data.image_size``): 448 in the paper, 299 for Inception-v3,
64 for the generated ``synth`` data.
"""

from __future__ import annotations

from collections.abc import Callable

from torchvision import transforms as T

from qsenn_core.errors import ParamsError

_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The synthetic images are generated, not photographs: a neutral centre of 0.5 and a spread of
# 0.25 map [0, 1] to [-2, 2], the same range ImageNet normalisation gives natural images.
_SYNTH_STATS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

#: Per-dataset (mean, std) of Normalize: ImageNet statistics for the real datasets (the
#: backbones are ImageNet-pretrained), a documented neutral choice for the generated ones.
DATASET_STATS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "synth": _SYNTH_STATS,
    "synth_travelingbirds": _SYNTH_STATS,
    "cub": _IMAGENET_STATS,
    "travelingbirds": _IMAGENET_STATS,
    "cars": _IMAGENET_STATS,
    "aircraft": _IMAGENET_STATS,
    "imagenet": _IMAGENET_STATS,
}

#: Random-crop padding (supplement: "random crop with a padding of 4").
CROP_PADDING = 4
#: ColorJitter strength for brightness, contrast and saturation.
JITTER = 0.1
#: Datasets trained without the random crop.
NO_CROP = frozenset({"aircraft"})
#: Datasets trained without TrivialAugment: ImageNet (supplement) and the generated birds. The
#: synthetic classes are defined by part colours (wing/breast/crown/eye colour attributes), and
#: TrivialAugment's solarize, posterize, equalize and colour ops rewrite those colours, i.e. they
#: change the attributes and with them the class; ColorJitter(0.1) keeps them recognisable.
NO_TRIVIAL_AUGMENT = frozenset({"imagenet", "synth", "synth_travelingbirds"})


def build_transform(dataset: str, image_size: int, train: bool) -> Callable:
    """The train or test transform (PIL image -> normalized float tensor (3, s, s)) of a dataset.

    Raises:
        ParamsError: unknown ``dataset`` (``data.name``) or ``image_size`` < 1.
    """
    if dataset not in DATASET_STATS:
        raise ParamsError(
            f"data.name: unknown dataset {dataset!r} (known: {', '.join(DATASET_STATS)})"
        )
    if image_size < 1:
        raise ParamsError(f"data.image_size: must be >= 1, got {image_size}")
    mean, std = DATASET_STATS[dataset]
    steps: list[Callable] = []
    if train:
        steps.append(T.Resize((image_size, image_size)))
        if dataset not in NO_CROP:
            steps.append(T.RandomCrop(image_size, padding=CROP_PADDING))
        steps += [
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
        ]
        if dataset not in NO_TRIVIAL_AUGMENT:
            steps.append(T.TrivialAugmentWide())
    else:
        steps += [T.Resize(image_size), T.CenterCrop(image_size)]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)
