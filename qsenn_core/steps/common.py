"""Building blocks shared by the stage steps: the dataset and models as params configure them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from qsenn_core.backbones import QSENN, build_model, check_image_size
from qsenn_core.data import DatasetIndex, ImageDataset, build_transform, load_dataset
from qsenn_core.data.check import check_splits
from qsenn_core.model_file import load_model
from qsenn_core.params import Params

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
    synthetic data, ``synth.n_classes``) or a class lacks training or test images
    (:func:`qsenn_core.data.check.check_splits`).
    """
    data = params.data
    check_image_size(params.model.arch, data.image_size)
    index = load_dataset(data.name, data.root)
    check_splits(index, params.n_classes)
    test_tf = build_transform(data.name, data.image_size, train=False)
    train_tf = build_transform(data.name, data.image_size, train=True) if train_augment else test_tf
    splits = Splits(
        index=index,
        train=ImageDataset(index, "train", train_tf, crop_to_bbox=data.crop_to_bbox),
        test=ImageDataset(index, "test", test_tf, crop_to_bbox=data.crop_to_bbox),
    )
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
