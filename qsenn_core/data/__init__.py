"""Dataset readers: one per published layout, all returning a :class:`DatasetIndex`.

What each ``data.name`` is (class count, layout under ``data.root``, transforms, prompt noun) is
the table :data:`qsenn_core.dataset_registry.DATASETS`; :data:`READERS` adds the function that
reads it. The reader modules document their layouts in detail; ``<root>`` is ``data.root``:
``synth`` reads ``<root>/CUB_200_2011`` and ``synth_travelingbirds`` ``<root>/TravelingBirds``
(attributes from ``<root>/CUB_200_2011``), both written by ``prepare_data``; ``cub`` reads
``<root>/CUB_200_2011``; ``travelingbirds`` ``<root>/CUB_fixed`` (attributes from a CUB folder
beside it); ``cars``, ``aircraft`` and ``imagenet`` go through torchvision's readers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

from qsenn_core.data.aircraft import read_aircraft
from qsenn_core.data.base import DatasetIndex, ImageDataset
from qsenn_core.data.cars import read_cars
from qsenn_core.data.cub import read_cub
from qsenn_core.data.imagenet import read_imagenet
from qsenn_core.data.transforms import DATASET_STATS, build_transform
from qsenn_core.data.travelingbirds import read_travelingbirds
from qsenn_core.dataset_registry import DATASETS, dataset_spec

__all__ = [
    "DATASETS",
    "DATASET_STATS",
    "READERS",
    "DatasetIndex",
    "ImageDataset",
    "build_transform",
    "load_dataset",
]

#: A reader: (absolute ``data.root``, ``data.name``) -> the dataset's index.
Reader = Callable[[Path, str], DatasetIndex]


def _synth_hint(root: Path) -> str:
    return f"generate it with `dvc repro prepare_data` (data.root={root})"


def _read_synth(root: Path, name: str) -> DatasetIndex:
    return read_cub(root / "CUB_200_2011", name=name, hint=_synth_hint(root))


def _read_synth_travelingbirds(root: Path, name: str) -> DatasetIndex:
    return read_travelingbirds(root / "TravelingBirds", name=name,
                               cub_dirs=[root / "CUB_200_2011"], hint=_synth_hint(root))


def _read_cub(root: Path, name: str) -> DatasetIndex:
    return read_cub(root / "CUB_200_2011", name=name)


#: ``data.name`` -> its reader; the same names as :data:`DATASETS`, in its order.
READERS: MappingProxyType[str, Reader] = MappingProxyType({
    "synth": _read_synth,
    "synth_travelingbirds": _read_synth_travelingbirds,
    "cub": _read_cub,
    "travelingbirds": read_travelingbirds,
    "cars": read_cars,
    "aircraft": read_aircraft,
    "imagenet": read_imagenet,
})


def load_dataset(name: str, root: str | Path) -> DatasetIndex:
    """Read dataset ``name`` from its published layout under ``root`` (see :data:`DATASETS`).

    Raises:
        ParamsError: ``name`` is not one of :data:`DATASETS`.
        DataError: the dataset is missing (the message names the expected file and where to get
            it) or one of its index files is malformed (file and line).
    """
    spec = dataset_spec(name)
    return READERS[spec.name](Path(root).expanduser().absolute(), spec.name)
