"""Dataset readers: one per published layout, all returning a :class:`DatasetIndex`.

=======================  ============================================================
``data.name``            read from (``<root>`` = ``data.root``)
=======================  ============================================================
synth                    ``<root>/CUB_200_2011`` (CUB layout, written by prepare_data)
synth_travelingbirds     ``<root>/TravelingBirds`` (attributes from ``<root>/CUB_200_2011``)
cub                      ``<root>/CUB_200_2011``
travelingbirds           ``<root>/CUB_fixed/{train,test}/<class>/<file>.jpg``; attributes
                         from ``<root>/CUB_200_2011`` or ``<root>/../CUB_200_2011`` if present
cars                     torchvision ``StanfordCars(<root>)``: ``<root>/stanford_cars/``
aircraft                 torchvision ``FGVCAircraft(<root>)``: ``<root>/fgvc-aircraft-2013b/``
imagenet                 torchvision ``ImageNet(<root>)``: devkit/meta.bin, ``train/``, ``val/``
=======================  ============================================================
"""

from __future__ import annotations

from pathlib import Path

from qsenn_core.data.aircraft import read_aircraft
from qsenn_core.data.base import DatasetIndex, ImageDataset
from qsenn_core.data.cars import read_cars
from qsenn_core.data.cub import read_cub
from qsenn_core.data.imagenet import read_imagenet
from qsenn_core.data.transforms import DATASET_STATS, build_transform
from qsenn_core.data.travelingbirds import read_travelingbirds
from qsenn_core.errors import ParamsError

__all__ = [
    "DATASETS",
    "DATASET_STATS",
    "DatasetIndex",
    "ImageDataset",
    "build_transform",
    "load_dataset",
]

DATASETS: tuple[str, ...] = (
    "synth", "synth_travelingbirds", "cub", "travelingbirds", "cars", "aircraft", "imagenet",
)


def _synth_hint(root: Path) -> str:
    return f"generate it with `dvc repro prepare_data` (data.root={root})"


def load_dataset(name: str, root: str | Path) -> DatasetIndex:
    """Read dataset ``name`` from its published layout under ``root`` (see the module table).

    Raises:
        ParamsError: ``name`` is not one of :data:`DATASETS`.
        DataError: the dataset is missing (the message names the expected file and where to get
            it) or one of its index files is malformed (file and line).
    """
    root = Path(root).expanduser().absolute()
    if name == "synth":
        return read_cub(root / "CUB_200_2011", name=name, hint=_synth_hint(root))
    if name == "synth_travelingbirds":
        return read_travelingbirds(root / "TravelingBirds", name=name,
                                   cub_dirs=[root / "CUB_200_2011"], hint=_synth_hint(root))
    if name == "cub":
        return read_cub(root / "CUB_200_2011", name=name)
    if name == "travelingbirds":
        return read_travelingbirds(root, name=name)
    if name == "cars":
        return read_cars(root, name=name)
    if name == "aircraft":
        return read_aircraft(root, name=name)
    if name == "imagenet":
        return read_imagenet(root, name=name)
    raise ParamsError(f"data.name: unknown dataset {name!r} (known: {', '.join(DATASETS)})")
