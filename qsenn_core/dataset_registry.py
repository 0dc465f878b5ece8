"""The one table of datasets: everything the pipeline knows about a ``data.name``.

Each :class:`DatasetSpec` holds the facts that used to be spread over the readers, the
transforms, the CLIP prompts and the params validation: the class count (Table 2 of the paper),
the layout expected under ``data.root`` (the text of the README's Datasets table), the object
noun of the prompts (supplement, "Prompts": "This is a photo of a <expression> <type> of a
bird."), and the transform choices of the supplement's Implementation Details (normalisation
statistics, whether training uses the random crop and TrivialAugment).

This module is plain data on purpose: :mod:`qsenn_core.params`, which every stage imports, reads
the class counts from here, so it must not import torch or torchvision. The reader function of
each dataset lives beside the readers, in ``qsenn_core.data.READERS`` (keyed by the same names);
``tests/test_registries.py`` checks that both tables list the same datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from qsenn_core.errors import ParamsError

#: (mean, std) per RGB channel of a Normalize transform.
Stats = tuple[tuple[float, float, float], tuple[float, float, float]]

#: ImageNet statistics: the backbones are ImageNet-pretrained, so real photographs are
#: normalised as in their pretraining.
IMAGENET_STATS: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: The synthetic images are generated, not photographs: a neutral centre of 0.5 and a spread of
#: 0.25 map [0, 1] to [-2, 2], the same range ImageNet normalisation gives natural images.
SYNTH_STATS: Stats = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@dataclass(frozen=True)
class DatasetSpec:
    """What the pipeline needs to know about one dataset (``data.name``)."""

    name: str
    #: Number of classes n_c (paper, Table 2); None when ``synth.n_classes`` sets it.
    n_classes: int | None
    #: The layout expected under ``data.root``, as the README's Datasets table gives it.
    layout: str
    #: The object noun of the CLIP prompts ("... of a bird.").
    object_noun: str
    #: Normalisation (mean, std) of the train and test transforms.
    stats: Stats
    #: Train with RandomCrop(s, padding=4). The supplement leaves it out for FGVC-Aircraft, "as
    #: the aircraft usually span the entire image".
    random_crop: bool = True
    #: Train with TrivialAugmentWide. The supplement omits it for ImageNet; the generated birds
    #: go without it too: their classes are defined by part colours (wing/breast/crown/eye colour
    #: attributes), and TrivialAugment's solarize, posterize, equalize and colour ops rewrite those
    #: colours, i.e. the attributes and with them the class (ColorJitter(0.1) keeps them).
    trivial_augment: bool = True


_SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "synth", None, "`CUB_200_2011/` written by `prepare_data`", "bird", SYNTH_STATS,
        trivial_augment=False,
    ),
    DatasetSpec(
        "synth_travelingbirds", None,
        "`TravelingBirds/CUB_fixed/{train,test}/` (+ `CUB_200_2011/` for attributes)", "bird",
        SYNTH_STATS, trivial_augment=False,
    ),
    DatasetSpec(
        "cub", 200, "`CUB_200_2011/` (images.txt, attributes/image_attribute_labels.txt, ...)",
        "bird", IMAGENET_STATS,
    ),
    DatasetSpec(
        "travelingbirds", 200,
        "`CUB_fixed/{train,test}/<class>/*.jpg`, attributes joined from a `CUB_200_2011/` "
        "beside it",
        "bird", IMAGENET_STATS,
    ),
    DatasetSpec(
        "cars", 196,
        "torchvision `StanfordCars` layout (`stanford_cars/` with the devkit `.mat` files)",
        "car", IMAGENET_STATS,
    ),
    DatasetSpec(
        "aircraft", 100, "torchvision `FGVCAircraft` layout (`fgvc-aircraft-2013b/`)",
        "aircraft", IMAGENET_STATS, random_crop=False,
    ),
    DatasetSpec(
        "imagenet", 1000,
        "torchvision `ImageNet` layout (`ILSVRC2012_devkit_t12.tar.gz`, `train/`, `val/`)",
        "object", IMAGENET_STATS, trivial_augment=False,
    ),
)

#: ``data.name`` -> its :class:`DatasetSpec`, in the README's order (read-only).
DATASETS: MappingProxyType[str, DatasetSpec] = MappingProxyType({s.name: s for s in _SPECS})


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name``.

    Raises:
        ParamsError: ``name`` (``data.name``) is not a known dataset.
    """
    if name not in DATASETS:
        raise ParamsError(f"data.name: unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return DATASETS[name]
