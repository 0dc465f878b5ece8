"""Building blocks shared by the stage steps: datasets, models and devices from params."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from qsenn_core.backbones import QSENN, build_model, check_image_size
from qsenn_core.data import DatasetIndex, ImageDataset, build_transform, load_dataset
from qsenn_core.errors import DataError
from qsenn_core.params import Params
from qsenn_core.training import load_model, resolve_device

log = logging.getLogger(__name__)


@dataclass
class Splits:
    """The dataset index and its train/test datasets with the stage's transforms."""

    index: DatasetIndex
    train: ImageDataset
    test: ImageDataset


def load_splits(params: Params, *, train_augment: bool) -> Splits:
    """The configured dataset; ``train_augment`` picks the training or the test transform.

    Raises :class:`DataError` when the dataset's class count disagrees with params (for the
    synthetic data, ``synth.n_classes``) or a split is empty.
    """
    data = params.data
    check_image_size(params.model.arch, data.image_size)
    index = load_dataset(data.name, data.root)
    if index.n_classes != params.n_classes:
        key = "synth.n_classes" if data.name.startswith("synth") else "data.name"
        raise DataError(f"{data.root}: the {data.name} dataset has {index.n_classes} classes, "
                        f"but {key} implies {params.n_classes}; regenerate or fix the params")
    test_tf = build_transform(data.name, data.image_size, train=False)
    train_tf = build_transform(data.name, data.image_size, train=True) if train_augment else test_tf
    splits = Splits(
        index=index,
        train=ImageDataset(index, "train", train_tf, crop_to_bbox=data.crop_to_bbox),
        test=ImageDataset(index, "test", test_tf, crop_to_bbox=data.crop_to_bbox),
    )
    for name in ("train", "test"):
        if len(getattr(splits, name)) == 0:
            raise DataError(f"{data.root}: the {name} split of {data.name} is empty")
    return splits


def new_model(params: Params) -> QSENN:
    """A dense QSENN model as configured under ``model`` (weights loaded when given)."""
    m = params.model
    return build_model(m.arch, params.n_classes, width=m.width, dropout=m.dropout,
                       reduced_strides=m.reduced_strides, weights=m.weights)


def trained_model(params: Params, path: str | Path) -> QSENN:
    """A model trained by an earlier stage (dense, or fine-tuned with its sparse layer)."""
    m = params.model
    model = build_model(m.arch, params.n_classes, width=m.width, dropout=m.dropout,
                        reduced_strides=m.reduced_strides, weights="none")
    load_model(model, path)
    return model


def device_of(params: Params) -> torch.device:
    """The torch device for ``params.device`` (``auto``: CUDA when available)."""
    return resolve_device(params.device)
