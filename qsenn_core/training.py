"""Dense training and sparse fine-tuning with L_final = L_CE + beta * L_div (paper eq. 2).

One loop serves both stages (supplement, Implementation Details):

- ``train_dense``: SGD with momentum, one learning rate for the pre-trained backbone and one for
  the final layer, both multiplied by ``lr_gamma`` every ``lr_step`` epochs (:func:`dense_config`).
- ``finetune@i``: the final layer is the frozen sparse layer W^Q (:mod:`qsenn_core.sparse_layer`);
  the learning rate is ``lr_factor`` x the final dense learning rate, x ``lr_decay_per_iter`` per
  iteration (:func:`finetune_config`), and L_div is computed on the selected feature maps with W^Q.

Runs on CUDA when available (bf16 autocast, channels_last, pinned memory, non-blocking copies,
persistent workers), else on CPU; under torchrun with DistributedDataParallel (only rank 0
writes). After every epoch rank 0 saves a resume checkpoint into a scratch folder keyed by the
stage's inputs (:func:`scratch_dir`); a killed run continues from its last finished epoch and
ends in the same state as an uninterrupted one, because every epoch reseeds all RNGs from
(seed, epoch, rank). The scratch folder is deleted after the final outputs are written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Callable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from qsenn_core import distributed as ddp
from qsenn_core.data import DatasetIndex, ImageDataset, build_transform
from qsenn_core.device import autocast, prepare_model, to_device
from qsenn_core.diversity import feature_diversity_loss
from qsenn_core.errors import DataError, ParamsError
from qsenn_core.io import atomic_path
from qsenn_core.model_file import ModelMetadata, model_state, save_model
from qsenn_core.params import Params
from qsenn_core.training_log import TrainingLog

log = logging.getLogger(__name__)

#: Default root of the git-ignored scratch folders that hold resume checkpoints.
SCRATCH_ROOT = Path(".qsenn_scratch")
#: Name of the resume checkpoint inside a scratch folder.
RESUME_FILE = "resume.pt"


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class FitConfig:
    """Everything :func:`fit` needs besides the model and the data.

    ``lr_step`` = 0 keeps the learning rates constant; otherwise they are multiplied by
    ``lr_gamma`` after every ``lr_step`` epochs. ``beta`` weights L_div in eq. 2.
    """

    epochs: int
    batch_size: int
    lr_backbone: float
    lr_head: float
    lr_step: int = 0
    lr_gamma: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    beta: float = 0.0
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr_backbone": self.lr_backbone > 0,
            "lr_head": self.lr_head > 0,
            "lr_step": self.lr_step >= 0,
            "lr_gamma": 0 < self.lr_gamma <= 1,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "beta": self.beta >= 0,
            "num_workers": self.num_workers >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ParamsError(f"fit config: {name} = {getattr(self, name)!r} is out of range")


def dense_config(params: Params) -> FitConfig:
    """The :class:`FitConfig` of ``train_dense`` (paper defaults live in params.yaml)."""
    t = params.train
    return FitConfig(epochs=t.epochs, batch_size=t.batch_size, lr_backbone=t.lr_backbone,
                     lr_head=t.lr_head, lr_step=t.lr_step, lr_gamma=t.lr_gamma,
                     momentum=t.momentum, weight_decay=t.weight_decay, beta=t.beta,
                     seed=params.seed, num_workers=params.data.num_workers)


def finetune_lr(params: Params, iteration: str) -> float:
    """Learning rate of fine-tuning iteration ``iteration`` (a key of ``params.iterations``).

    lr = lr_factor * final dense lr * lr_decay_per_iter^(i-1) for the i-th iteration in chain
    order (supplement: "100 times the final learning rate of the dense training, but reduced by
    10% at each iteration").
    """
    if iteration not in params.iterations:
        raise ParamsError(f"iterations: no iteration {iteration!r} "
                          f"(known: {', '.join(params.iterations)})")
    position = list(params.iterations).index(iteration)
    ft = params.finetune
    return ft.lr_factor * final_lr(dense_config(params)) * ft.lr_decay_per_iter ** position


def finetune_config(params: Params, iteration: str) -> FitConfig:
    """The :class:`FitConfig` of ``finetune@iteration``: one lr for all trainable parameters."""
    it = params.iterations.get(iteration)
    lr = finetune_lr(params, iteration)
    assert it is not None  # checked by finetune_lr
    ft = params.finetune
    return FitConfig(epochs=it.epochs, batch_size=ft.batch_size, lr_backbone=lr, lr_head=lr,
                     lr_step=it.lr_step, lr_gamma=it.lr_gamma, momentum=ft.momentum,
                     weight_decay=ft.weight_decay, beta=params.train.beta, seed=params.seed,
                     num_workers=params.data.num_workers)


def lr_at(base_lr: float, cfg: FitConfig, epoch: int) -> float:
    """Learning rate during 0-based ``epoch``: base * gamma^(epoch // lr_step) (step decay)."""
    if cfg.lr_step <= 0:
        return base_lr
    return base_lr * cfg.lr_gamma ** (epoch // cfg.lr_step)


def final_lr(cfg: FitConfig) -> float:
    """The final-layer learning rate after the last epoch (after the last scheduler step).

    For the paper's 150 epochs with x0.4 every 30 epochs this is 0.01 * 0.4^5; fine-tuning starts
    from ``finetune.lr_factor`` times this value.
    """
    return lr_at(cfg.lr_head, cfg, cfg.epochs)


# --------------------------------------------------------------------------- device and seeds


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) random number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A well-mixed 63-bit seed for (seed, epoch, rank); every epoch starts from it."""
    state = np.random.SeedSequence([seed, epoch, rank]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


# --------------------------------------------------------------------------- data loading


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(n)`` that depends only on (seed, epoch).

    Like :class:`~torch.utils.data.distributed.DistributedSampler` with one replica: the order of
    epoch e is the same in an uninterrupted and in a resumed run.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one training sample's random augmentation in one epoch."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)`` for every index of ``inner``: the seed of that sample's random
    augmentation depends only on (seed, epoch, index), not on which process draws it, so
    training gives the same bytes with any ``data.num_workers``."""

    def __init__(self, inner: Sampler[int], seed: int) -> None:
        self.inner = inner
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch``'s order (of the inner sampler) and augmentation seeds."""
        self.epoch = epoch
        self.inner.set_epoch(epoch)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((i, sample_seed(self.seed, self.epoch, i)) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


class SeededSamples(Dataset[Any]):
    """``dataset[(i, seed)]``: item ``i`` of the wrapped dataset, its random transform drawn
    from ``seed`` (the process's own random state is left as it was).

    Only the CPU generator is seeded (the transforms draw from it): ``torch.manual_seed`` would
    also reseed CUDA's generator, which ``fork_rng(devices=[])`` does not restore, so with
    ``data.num_workers`` 0 on a GPU every sample would reset the dropout stream; on a CPU it
    costs a traceback per device and sample for the lazy CUDA/XPU/MTIA seeding (about 30% of
    a small-image loader's time)."""

    def __init__(self, dataset: Dataset[Any]) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[index]


class ShardSampler(Sampler[int]):
    """Every ``world``-th index starting at ``rank`` in order, without padding (evaluation)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loader(dataset: Dataset[Any], batch_size: int, train: bool, seed: int,
                num_workers: int, device: torch.device) -> DataLoader[Any]:
    """A DataLoader over ``dataset``: shuffled by (seed, epoch) for training, in order otherwise.

    Under DDP the training set is split with a DistributedSampler and the evaluation set into
    disjoint shards. A trailing training batch of a single image is dropped (BatchNorm cannot
    train on it). On CUDA memory is pinned; workers persist across epochs.
    """
    n = len(dataset)  # type: ignore[arg-type]
    sampler: Sampler[Any]
    if train:
        order = (DistributedSampler(dataset, shuffle=True, seed=seed) if ddp.is_distributed()
                 else EpochShuffleSampler(n, seed))
        sampler, dataset = SeededSampler(order, seed), SeededSamples(dataset)
    else:
        sampler = ShardSampler(n, ddp.rank(), ddp.world_size())
    per_rank = len(sampler)  # type: ignore[arg-type]
    drop_last = train and per_rank > 1 and per_rank % batch_size == 1
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )


def image_datasets(index: DatasetIndex, image_size: int, *,
                   crop_to_bbox: bool = False) -> tuple[ImageDataset, ImageDataset]:
    """The training split with the train transform and the test split with the test transform."""
    train = ImageDataset(index, "train", build_transform(index.name, image_size, train=True),
                         crop_to_bbox=crop_to_bbox)
    test = ImageDataset(index, "test", build_transform(index.name, image_size, train=False),
                        crop_to_bbox=crop_to_bbox)
    return train, test


# --------------------------------------------------------------------------- one epoch


def fdl_inputs(model: nn.Module, feature_maps: Tensor) -> tuple[Tensor, Tensor]:
    """Feature maps and final-layer weight that L_div (eq. 2) is computed on.

    With a sparse layer (a head with ``selection``) these are the selected maps and W^Q;
    otherwise all maps and the dense weight.
    """
    head = getattr(model, "head", None)
    selection = getattr(head, "selection", None)
    if isinstance(selection, Tensor):
        return feature_maps[:, selection], head.weight  # type: ignore[union-attr]
    return feature_maps, model.head_weight()  # type: ignore[operator]


def _diversity_loss(feature_maps: Tensor, weight: Tensor, predicted: Tensor) -> Tensor:
    """L_div of eq. 2 (a seam for tests)."""
    return feature_diversity_loss(feature_maps, weight, predicted)


def train_one_epoch(model: nn.Module, loader: DataLoader[Any], optimizer: torch.optim.Optimizer,
                    cfg: FitConfig, device: torch.device, desc: str) -> Tensor:
    """One pass of SGD on L_CE + beta * L_div (eq. 2).

    Returns the sums over this process's images as a float64 tensor
    ``[loss, cross-entropy, diversity loss, correct, count]`` (reduce across ranks yourself).
    """
    model.train()
    base = ddp.unwrap(model)
    sums = torch.zeros(5, dtype=torch.float64, device=device)
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not ddp.is_main()):
        images, labels = to_device(batch[0], device), batch[1].to(device, non_blocking=True)
        with autocast(device):
            out = model(images)
        logits = out.logits.float()
        ce = F.cross_entropy(logits, labels)
        predicted = logits.detach().argmax(dim=1)
        if cfg.beta > 0:
            maps, weight = fdl_inputs(base, out.feature_maps)
            fdl = _diversity_loss(maps.float(), weight.float(), predicted)
            loss = ce + cfg.beta * fdl
        else:
            fdl = torch.zeros((), device=device)
            loss = ce
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        n = labels.shape[0]
        sums[0] += loss.detach().double() * n
        sums[1] += ce.detach().double() * n
        sums[2] += fdl.detach().double() * n
        sums[3] += (predicted == labels).sum()
        sums[4] += n
    return sums


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader[Any], device: torch.device,
             desc: str = "eval") -> float:
    """Top-1 accuracy in percent of ``model`` (eval mode) over the loader, summed over ranks."""
    model.eval()
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in tqdm(loader, desc=desc, unit="batch", leave=False, disable=not ddp.is_main()):
        images, labels = to_device(batch[0], device), batch[1].to(device, non_blocking=True)
        with autocast(device):
            logits = model(images).logits
        counts[0] += (logits.argmax(dim=1) == labels).sum()
        counts[1] += labels.shape[0]
    counts = ddp.all_reduce_sum(counts)
    return float(100.0 * counts[0] / counts[1].clamp(min=1))


def build_optimizer(model: nn.Module, cfg: FitConfig) -> torch.optim.SGD:
    """SGD with one group for the backbone and one for the final layer (frozen ones skipped).

    The same L2 weight decay applies to every trainable parameter (supplement).
    """
    groups = []
    for name, params, lr in (("backbone", model.backbone_parameters(), cfg.lr_backbone),  # type: ignore[operator]
                             ("head", model.head_parameters(), cfg.lr_head)):  # type: ignore[operator]
        trainable = [p for p in params if p.requires_grad]
        if trainable:
            groups.append({"params": trainable, "lr": lr, "base_lr": lr, "name": name})
    if not groups:
        raise ParamsError("fit: the model has no trainable parameters")
    return torch.optim.SGD(groups, lr=cfg.lr_head, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def set_epoch_lrs(optimizer: torch.optim.Optimizer, cfg: FitConfig, epoch: int) -> dict[str, float]:
    """Set every group's lr for ``epoch`` from its base lr; returns ``{group name: lr}``."""
    lrs = {}
    for group in optimizer.param_groups:
        group["lr"] = lr_at(group["base_lr"], cfg, epoch)
        lrs[group["name"]] = group["lr"]
    return lrs


# --------------------------------------------------------------------------- checkpoints


def scratch_dir(stage: str, *inputs: Any, root: str | os.PathLike[str] = SCRATCH_ROOT) -> Path:
    """``<root>/<stage>/<sha256>``: the resume folder of a stage run with these inputs.

    ``inputs`` are paths (files are hashed by content, folders by their files' names, sizes and
    modification times) and params (dataclasses or JSON-able values). ``root`` is created with a
    ``.gitignore`` of ``*`` so the folder never shows up in git; it is no DVC output, so DVC's
    run-cache stays on.
    """
    digest = hashlib.sha256(stage.encode())
    for item in inputs:
        if isinstance(item, (str, os.PathLike)):
            digest.update(b"path\0" + _fingerprint(Path(item)))
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            digest.update(b"params\0" + _json_bytes(dataclasses.asdict(item)))
        else:
            digest.update(b"value\0" + _json_bytes(item))
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return root / stage / digest.hexdigest()


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, default=str).encode()


def _fingerprint(path: Path) -> bytes:
    """Content hash of a file, (name, size, mtime) listing of a folder, a marker if missing."""
    if path.is_file():
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return b"file\0" + digest.digest()
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return b"dir\0" + digest.digest()
    return b"missing\0" + str(path).encode()


def _save_resume(resume_dir: Path, epoch: int, model: nn.Module,
                 optimizer: torch.optim.Optimizer, history: list[dict[str, float]],
                 cfg: FitConfig) -> None:
    resume_dir.mkdir(parents=True, exist_ok=True)
    state = {"epoch": epoch, "config": dataclasses.asdict(cfg), "model": model_state(model),
             "optimizer": optimizer.state_dict(), "history": history}
    with atomic_path(resume_dir / RESUME_FILE) as tmp:
        torch.save(state, tmp)


def _load_resume(resume_dir: Path | None, cfg: FitConfig) -> dict[str, Any] | None:
    """Rank 0's resume checkpoint for ``cfg``, broadcast to every rank (None: start fresh)."""
    state: dict[str, Any] | None = None
    if ddp.is_main() and resume_dir is not None and (resume_dir / RESUME_FILE).is_file():
        path = resume_dir / RESUME_FILE
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a broken checkpoint just means a fresh start
            log.warning("ignoring unreadable resume checkpoint %s (%s)", path, err)
        if state is not None and state.get("config") != dataclasses.asdict(cfg):
            log.warning("ignoring resume checkpoint %s of a different configuration", path)
            state = None
    return ddp.broadcast_object(state)  # type: ignore[return-value]


# --------------------------------------------------------------------------- the loop


@dataclass
class FitResult:
    """Per-epoch history and the learning rates after the last epoch, per parameter group."""

    history: list[dict[str, float]] = field(default_factory=list)
    final_lrs: dict[str, float] = field(default_factory=dict)


def _check_sizes(train_set: Sized, test_set: Sized) -> None:
    if len(train_set) == 0:
        raise DataError("the train split is empty: nothing to train on")
    if len(test_set) == 0:
        raise DataError("the test split is empty: nothing to evaluate on")


EpochHook = Callable[[int, dict[str, float]], None]


def fit(model: nn.Module, train_set: Dataset[Any], test_set: Dataset[Any], cfg: FitConfig, *,
        device: torch.device, model_path: str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None, resume_dir: Path | None = None,
        on_epoch_end: EpochHook | None = None,
        model_metadata: ModelMetadata | None = None) -> FitResult:
    """Train ``model`` for ``cfg.epochs`` epochs on L_CE + beta * L_div (eq. 2).

    ``model`` implements the QSENN interface (``forward -> ModelOutput``, ``head``,
    ``head_weight()``, ``backbone_parameters()``, ``head_parameters()``). Frozen parameters
    (``requires_grad=False``, e.g. the sparse layer's) are not optimized. Every epoch the model
    is evaluated on ``test_set``. Under torchrun the process group is joined here and the model
    wrapped in DDP; only rank 0 writes ``model_path`` (state dict), the DVCLive log in ``log_dir``
    (per-epoch curves and ``metrics.json``, see :mod:`qsenn_core.training_log`) and the resume
    checkpoint in ``resume_dir``, which is removed after the outputs are written.
    ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint (tests use it).
    ``model_metadata`` (arch, preprocessing, class names) is stored in the model file, so the
    file alone is enough to use the model (``qsenn predict``/``explain``/``export``).
    The model is trained in place and left on ``device``.
    """
    _check_sizes(train_set, test_set)  # type: ignore[arg-type]
    device = ddp.init_distributed(device)
    base = prepare_model(model, device)
    optimizer = build_optimizer(base, cfg)
    history: list[dict[str, float]] = []
    start = 0
    state = _load_resume(resume_dir, cfg)
    if state is not None:
        base.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start = list(state["history"]), int(state["epoch"])
        log.info("resuming from epoch %d of %d (%s)", start, cfg.epochs, resume_dir)
    train_log = TrainingLog(log_dir) if log_dir is not None and ddp.is_main() else None
    if train_log is not None:
        for record in history:  # a resumed run rewrites the curves from epoch 1
            train_log.log_epoch(record)
    net = ddp.wrap_ddp(base, device)
    train_loader = make_loader(train_set, cfg.batch_size, True, cfg.seed, cfg.num_workers, device)
    test_loader = make_loader(test_set, cfg.batch_size, False, cfg.seed, cfg.num_workers, device)

    for epoch in range(start, cfg.epochs):
        seed_everything(epoch_seed(cfg.seed, epoch, ddp.rank()))
        train_loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        lrs = set_epoch_lrs(optimizer, cfg, epoch)
        sums = train_one_epoch(net, train_loader, optimizer, cfg, device,
                               desc=f"epoch {epoch + 1}/{cfg.epochs}")
        sums = ddp.all_reduce_sum(sums).cpu()
        ddp.sync_buffers(base)
        test_acc = evaluate(base, test_loader, device, desc=f"test {epoch + 1}/{cfg.epochs}")
        count = float(sums[4].clamp(min=1))
        record = {
            "epoch": epoch + 1,
            "train_loss": float(sums[0]) / count,
            "train_ce": float(sums[1]) / count,
            "train_fdl": float(sums[2]) / count,
            "train_accuracy": 100.0 * float(sums[3]) / count,
            "test_accuracy": test_acc,
            "lr": lrs.get("head", next(iter(lrs.values()))),
        }
        history.append(record)
        if train_log is not None:
            train_log.log_epoch(record)
        log.info("epoch %d/%d: loss %.4f, train acc %.2f%%, test acc %.2f%%, lr %.3g",
                 epoch + 1, cfg.epochs, record["train_loss"], record["train_accuracy"],
                 test_acc, record["lr"])
        if resume_dir is not None and ddp.is_main():
            _save_resume(resume_dir, epoch + 1, base, optimizer, history, cfg)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)

    if ddp.is_main():
        if model_path is not None:
            save_model(base, model_path, metadata=model_metadata)
        if train_log is not None:
            train_log.close({"epochs": cfg.epochs})
    ddp.barrier()
    if resume_dir is not None and ddp.is_main():
        shutil.rmtree(resume_dir, ignore_errors=True)
    final = {g["name"]: lr_at(g["base_lr"], cfg, cfg.epochs) for g in optimizer.param_groups}
    return FitResult(history=history, final_lrs=final)
