"""Image transforms of the supplement ("Implementation Details").

Train: Resize to (s, s) -> RandomCrop(s, padding=4) (left out for FGVC-Aircraft, "as the aircraft
usually span the entire image") -> RandomHorizontalFlip -> ColorJitter(0.1, 0.1, 0.1) ->
TrivialAugmentWide (omitted for ImageNet) -> ToTensor -> Normalize.
Test: Resize(s) (shorter side) -> CenterCrop(s) -> ToTensor -> Normalize.
Which dataset leaves out which step, and its normalisation statistics, are in the dataset table
:data:`qsenn_core.dataset_registry.DATASETS`.

The image size s is a parameter (``data.image_size``): 448 in the paper, 299 for Inception-v3,
64 for the generated ``synth`` data.
"""

from __future__ import annotations

from collections.abc import Callable

from torchvision import transforms as T

from qsenn_core.dataset_registry import DATASETS, Stats, dataset_spec
from qsenn_core.errors import ParamsError

#: Per-dataset (mean, std) of Normalize, from the dataset table (the model file records them).
DATASET_STATS: dict[str, Stats] = {name: spec.stats for name, spec in DATASETS.items()}

#: Random-crop padding (supplement: "random crop with a padding of 4").
CROP_PADDING = 4
#: ColorJitter strength for brightness, contrast and saturation.
JITTER = 0.1


def build_transform(dataset: str, image_size: int, train: bool) -> Callable:
    """The train or test transform (PIL image -> normalized float tensor (3, s, s)) of a dataset.

    Raises:
        ParamsError: unknown ``dataset`` (``data.name``) or ``image_size`` < 1.
    """
    spec = dataset_spec(dataset)
    if image_size < 1:
        raise ParamsError(f"data.image_size: must be >= 1, got {image_size}")
    mean, std = spec.stats
    steps: list[Callable] = []
    if train:
        steps.append(T.Resize((image_size, image_size)))
        if spec.random_crop:
            steps.append(T.RandomCrop(image_size, padding=CROP_PADDING))
        steps += [
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
        ]
        if spec.trivial_augment:
            steps.append(T.TrivialAugmentWide())
    else:
        steps += [T.Resize(image_size), T.CenterCrop(image_size)]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)
