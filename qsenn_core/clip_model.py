"""CLIP models for the annotation-free alignment (paper, "Alignment Without Annotations").

- :func:`create_clip`: an open_clip model with its own preprocess and tokenizer. The paper uses
  ``ViT-B-32``; ``pretrained`` is ``""`` (random weights), an open_clip pretrained tag that must
  already be on this machine (nothing is downloaded), or a local checkpoint file.
- :data:`TINY_MODEL`: a small open_clip config shipped in ``qsenn_core/clip_configs/`` and
  registered with open_clip by :func:`register_tiny_config`. It is the synthetic default: no CLIP
  weights can be downloaded, so :func:`pretrain_clip` trains it from scratch on the training
  images paired with captions written from each image's attributes
  (:func:`captions_from_attributes`), with open_clip's contrastive ``ClipLoss``.
- :func:`embed_images` / :func:`embed_texts`: L2-normalized embeddings (D_clip and P_clip of
  eq. 11).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from torch import Tensor, nn
from tqdm import tqdm

from qsenn_core.alignment import (
    DEFAULT_NON_ADJECTIVES,
    concept_phrase,
    parse_attribute_name,
    prompt_text,
)
from qsenn_core.data.base import load_rgb
from qsenn_core.errors import DataError, ParamsError, QsennError
from qsenn_core.io import atomic_path, looks_like_path

log = logging.getLogger(__name__)

#: Name of the small from-scratch model (its config: ``qsenn_core/clip_configs/QSENN-Tiny.json``).
TINY_MODEL = "QSENN-Tiny"
#: Folder of the open_clip model configs that ship with the package.
CONFIG_DIR = Path(__file__).parent / "clip_configs"

Preprocess = Callable[[Any], Tensor]
Tokenizer = Callable[[list[str]], Tensor]

# Training constants of the from-scratch pre-training (CLIP's own choices, not experiment knobs).
_ADAM_BETAS = (0.9, 0.98)
_ADAM_EPS = 1e-6
_MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned temperature at 100
_WARMUP_FRACTION = 0.05  # linear warm-up share of the steps, then cosine decay
_SHIFT = 4  # augmentation: random translation by up to this many pixels (reflect padded)


# ----------------------------------------------------------------------------------------------
# model factory
# ----------------------------------------------------------------------------------------------


def register_tiny_config() -> None:
    """Make :data:`TINY_MODEL` known to open_clip (idempotent)."""
    if TINY_MODEL in open_clip.list_models():
        return
    path = CONFIG_DIR / f"{TINY_MODEL}.json"
    if not path.is_file():
        raise QsennError(f"clip.model: the {TINY_MODEL} config {path} is missing from the package")
    open_clip.add_model_config(path)


def _hf_cache_dir(cache_dir: str | None) -> str:
    if cache_dir:
        return cache_dir
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def cached_checkpoint(model: str, tag: str, cache_dir: str | None = None) -> str | None:
    """Local file of open_clip's pretrained ``model``/``tag`` if it is already cached, else None.

    Looks where open_clip would download it: the Hugging Face hub cache (``hf_hub`` entries,
    safetensors preferred) and open_clip's URL cache (``~/.cache/clip`` or ``cache_dir``).
    """
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if not cfg:
        return None
    if cfg.get("file") and os.path.isfile(cfg["file"]):
        return str(cfg["file"])
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub)
        for name in _hub_filenames(filename):
            found = try_to_load_from_cache(repo, name, cache_dir=_hf_cache_dir(cache_dir))
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url", "")
    if url:
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file():
            return str(target)
    return None


def _hub_filenames(filename: str) -> list[str]:
    """The files open_clip tries in a hub repo, safetensors first."""
    if not filename:
        return [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _missing_weights_message(model: str, tag: str, cache_dir: str | None) -> str:
    cfg = open_clip.get_pretrained_cfg(model, tag)
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        name = _hub_filenames(filename)[0]
        # a file path carries no tag config: QuickGELU weights then need the -quickgelu model
        quick = f"{model}-quickgelu"
        also = (f" and clip.model to {quick}" if cfg.get("quick_gelu")
                and quick in open_clip.list_models() else "")
        return (f"clip.pretrained: {model}/{tag} is not on this machine (looked in the Hugging "
                f"Face hub cache {_hf_cache_dir(cache_dir)}); download {name} from "
                f"https://huggingface.co/{repo} and set clip.pretrained to its local path{also}, "
                f"or fill the cache with `huggingface-cli download {repo} {name}`")
    url = cfg.get("url", "")
    folder = cache_dir or os.path.expanduser("~/.cache/clip")
    return (f"clip.pretrained: {model}/{tag} is not on this machine; put {os.path.basename(url)} "
            f"({url}) into {folder}, or set clip.pretrained to a local checkpoint path")


def create_clip(
    model: str,
    pretrained: str = "",
    *,
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    weights: str | os.PathLike[str] | None = None,
) -> tuple[nn.Module, Preprocess, Tokenizer]:
    """``(model, preprocess, tokenizer)`` of an open_clip model, in eval mode; nothing downloaded.

    Args:
        model: an open_clip model name (``ViT-B-32``, the paper's) or :data:`TINY_MODEL`.
        pretrained: ``""``/``"none"`` for random weights; an open_clip tag of ``model``
            (``openai``, ``laion2b_s34b_b79k``, ...) whose file is already in the local cache;
            or a local checkpoint file (an open_clip state dict, ``.pt``/``.bin`` loaded with
            ``weights_only=True``, or ``.safetensors``).
        device: where the model lives.
        cache_dir: open_clip's download cache, if not the default Hugging Face hub cache.
        weights: a local state dict that replaces the weights ``pretrained`` names (the file
            :func:`save_clip_weights` wrote); a tag's preprocessing and activation (QuickGELU,
            mean/std) still come from the tag, whose file then need not be on this machine.

    Raises:
        ParamsError: unknown model name, or ``pretrained`` is neither a tag nor a file.
        QsennError: the tag's weights are not on this machine (the message says where to put
            them) or the checkpoint cannot be loaded into the model.
    """
    register_tiny_config()
    if model not in open_clip.list_models():
        raise ParamsError(f"clip.model: unknown open_clip model {model!r} "
                          f"(e.g. ViT-B-32 or {TINY_MODEL})")
    value = pretrained.strip()
    tag_cfg: dict[str, Any] = {}
    checkpoint: str | None = None
    if value.lower() in ("", "none"):
        log.info("clip: %s with random weights", model)
    elif not looks_like_path(value) and open_clip.get_pretrained_cfg(model, value):
        tag_cfg = open_clip.get_pretrained_cfg(model, value)
        checkpoint = None if weights is not None else cached_checkpoint(model, value, cache_dir)
        if checkpoint is None and weights is None:
            raise QsennError(_missing_weights_message(model, value, cache_dir))
    elif Path(value).expanduser().is_file():
        checkpoint = str(Path(value).expanduser())
    elif looks_like_path(value):
        raise ParamsError(f"clip.pretrained: checkpoint file {value} not found")
    else:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise ParamsError(f"clip.pretrained: {value!r} is neither a local checkpoint file nor a "
                          f"pretrained tag of {model} (tags: {tags})")
    if weights is not None:
        if not Path(weights).is_file():
            raise DataError(f"{weights}: CLIP weights file not found")
        checkpoint = str(weights)
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(
            model,
            pretrained=checkpoint,
            device=device,
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            image_mean=tag_cfg.get("mean"),
            image_std=tag_cfg.get("std"),
            image_interpolation=tag_cfg.get("interpolation"),
            image_resize_mode=tag_cfg.get("resize_mode"),
            weights_only=True,
        )
    except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        if checkpoint is None:
            raise
        msg = " ".join(str(exc).split())
        if len(msg) > 300:
            msg = msg[:297] + "..."
        raise QsennError(f"clip.pretrained: cannot load checkpoint {checkpoint} into {model}: "
                         f"{msg}") from exc
    if checkpoint:
        log.info("clip: %s weights loaded from %s", model, checkpoint)
    clip.eval()
    return clip, preprocess, open_clip.get_tokenizer(model)


def is_pretrained_tag(model: str, pretrained: str) -> bool:
    """True when ``pretrained`` is an open_clip pretrained tag of ``model`` (not a file path)."""
    register_tiny_config()
    value = pretrained.strip()
    return bool(value) and not looks_like_path(value) and bool(
        open_clip.get_pretrained_cfg(model, value))


def save_clip_weights(state_dict: dict[str, Tensor], path: str | os.PathLike[str]) -> None:
    """Write a CLIP state dict atomically with ``torch.save`` (contiguous CPU tensors).

    Load it again with ``create_clip(model, pretrained, weights=path)`` (``weights_only``).
    """
    state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    log.info("clip: wrote %d tensors to %s", len(state), path)


# ----------------------------------------------------------------------------------------------
# embeddings (D_clip, P_clip of eq. 11)
# ----------------------------------------------------------------------------------------------


class _Images(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str | Path], preprocess: Preprocess, name: str) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess
        self.name = name

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return self.preprocess(load_rgb(Path(self.paths[i]), self.name))


@torch.no_grad()
def embed_images(
    model: nn.Module,
    preprocess: Preprocess,
    image_paths: Sequence[str | Path],
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
    dataset_name: str = "clip",
) -> np.ndarray:
    """D_clip: (n, d) float32 L2-normalized image embeddings, in the order of ``image_paths``.

    Every image goes through the model's own ``preprocess``. A missing or corrupt image raises a
    :class:`~qsenn_core.errors.DataError` naming the file.
    """
    if batch_size < 1:
        raise ParamsError(f"clip.batch_size must be >= 1, got {batch_size}")
    if len(image_paths) == 0:
        raise DataError("embed_images: no images given")
    model.eval()
    loader = torch.utils.data.DataLoader(
        _Images(image_paths, preprocess, dataset_name), batch_size=batch_size, shuffle=False,
        num_workers=num_workers)
    out = []
    for batch in tqdm(loader, desc="clip embed", unit="batch", disable=not progress):
        out.append(model.encode_image(batch.to(device), normalize=True).float().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def embed_texts(
    model: nn.Module,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """P_clip: (n, d) float32 L2-normalized text embeddings of ``texts``."""
    model.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start:start + batch_size])).to(device)
        out.append(model.encode_text(tokens, normalize=True).float().cpu())
    if not out:
        raise DataError("embed_texts: no texts given")
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------------------------------
# captions
# ----------------------------------------------------------------------------------------------


def _join(phrases: Sequence[str]) -> str:
    items = [f"a {p}" for p in phrases]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def captions_from_attributes(
    attribute_names: Sequence[str],
    present: np.ndarray,
    object_noun: str,
    rng: np.random.Generator,
    *,
    max_attributes: int = 5,
    non_adjectives: Sequence[str] = DEFAULT_NON_ADJECTIVES,
) -> list[str]:
    """One caption per image, written from a random subset of its present attributes.

    Every image (row of the 0/1 ``present`` matrix) gets k ~ uniform{1..min(max_attributes,
    n_present)} of its present attributes in random order, phrased as in the alignment prompts
    (``blue wing color``, ``dagger-like bill shape``): for k = 1 the prompt template itself
    ("This is a photo of a blue wing color of a bird."), else "This is a photo of a bird with a
    blue wing color, a dagger-like bill shape and a spotted breast pattern.". An image without
    present attributes gets "This is a photo of a bird.". Seeded by ``rng``.
    """
    p = np.asarray(present)
    if p.ndim != 2 or p.shape[1] != len(attribute_names):
        raise DataError(f"attributes matrix has shape {p.shape}, expected (n_images, "
                        f"{len(attribute_names)})")
    if max_attributes < 1:
        raise ParamsError(f"max_attributes must be >= 1, got {max_attributes}")
    phrases = [concept_phrase(*parse_attribute_name(n), non_adjectives) for n in attribute_names]
    captions = []
    for row in p:
        idx = np.flatnonzero(row)
        if len(idx) == 0:
            captions.append(f"This is a photo of a {object_noun}.")
            continue
        k = int(rng.integers(1, min(max_attributes, len(idx)) + 1))
        chosen = rng.permutation(idx)[:k]
        if k == 1:
            captions.append(prompt_text(phrases[chosen[0]], object_noun))
        else:
            captions.append(f"This is a photo of a {object_noun} with "
                            f"{_join([phrases[j] for j in chosen])}.")
    return captions


def caption_variants(
    attribute_names: Sequence[str],
    present: np.ndarray,
    object_noun: str,
    *,
    n_variants: int,
    seed: int,
    max_attributes: int = 5,
    non_adjectives: Sequence[str] = DEFAULT_NON_ADJECTIVES,
) -> list[list[str]]:
    """``n_variants`` captions per image (:func:`captions_from_attributes` with seeded rngs).

    :func:`pretrain_clip` draws one of them per image and epoch.
    """
    if n_variants < 1:
        raise ParamsError(f"n_variants must be >= 1, got {n_variants}")
    rng = np.random.default_rng(seed)
    per_variant = [
        captions_from_attributes(attribute_names, present, object_noun, rng,
                                 max_attributes=max_attributes, non_adjectives=non_adjectives)
        for _ in range(n_variants)
    ]
    return [list(c) for c in zip(*per_variant, strict=True)]


# ----------------------------------------------------------------------------------------------
# from-scratch contrastive pre-training
# ----------------------------------------------------------------------------------------------


@dataclass
class PretrainResult:
    """The trained weights (CPU state dict) and the mean ClipLoss of every epoch."""

    state_dict: dict[str, Tensor]
    epoch_losses: list[float]
    seconds_per_epoch: float


def load_image_tensors(
    image_paths: Sequence[str | Path], preprocess: Preprocess, *, progress: bool = True,
    dataset_name: str = "clip",
) -> Tensor:
    """All images through ``preprocess``, stacked (n, 3, h, w) float32 (for small datasets)."""
    it = tqdm(image_paths, desc="clip images", unit="img", disable=not progress)
    return torch.stack([preprocess(load_rgb(Path(p), dataset_name)) for p in it])


def _augment(batch: Tensor, gen: torch.Generator) -> Tensor:
    """Random horizontal flip and translation by up to :data:`_SHIFT` px (no colour change)."""
    n, _, h, w = batch.shape
    flip = torch.rand(n, generator=gen) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    padded = nn.functional.pad(batch, (_SHIFT,) * 4, mode="reflect")
    shifts = torch.randint(0, 2 * _SHIFT + 1, (n, 2), generator=gen).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(shifts)])


class _CaptionRows(nn.Module):
    """A token embedding that trains only the rows of the tokens the captions use.

    CLIP's text tower embeds a 49,408-token vocabulary; the synthetic captions use a few dozen
    tokens. Rows that never get a gradient keep AdamW's state at exactly zero, and then its
    step leaves them exactly unchanged (their group has no weight decay), so training a copy of
    the used rows and writing it back gives the same bytes as training the whole table, about
    20% faster (most of AdamW's work and of the embedding's backward was on the unused rows).
    """

    def __init__(self, embedding: nn.Embedding, rows: Tensor) -> None:
        super().__init__()
        self.rows = rows
        # named like the table it stands in for: the same param group (no weight decay)
        self.weight = nn.Parameter(embedding.weight.detach()[rows].clone())
        lookup = torch.full((embedding.num_embeddings,), -1, dtype=torch.long,
                            device=rows.device)
        lookup[rows] = torch.arange(len(rows), device=rows.device)
        self.lookup = lookup

    def forward(self, tokens: Tensor) -> Tensor:
        """The rows of ``tokens`` (every one of them among :attr:`rows`)."""
        return nn.functional.embedding(self.lookup[tokens], self.weight)

    def write_back(self, embedding: nn.Embedding) -> nn.Embedding:
        """``embedding`` (the table this was made from) with the trained rows written back."""
        with torch.no_grad():
            embedding.weight[self.rows] = self.weight.to(embedding.weight.dtype)
        return embedding


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """CLIP's recipe: no weight decay on gains, biases, embeddings and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = (p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
                or "logit_scale" in name or "embedding" in name or "token" in name)
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, total: int, lr: float) -> float:
    warmup = max(1, int(_WARMUP_FRACTION * total))
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * lr * (1.0 + math.cos(math.pi * progress))


def pretrain_clip(
    images: Sequence[str | Path] | Tensor,
    captions: Sequence[str | Sequence[str]],
    *,
    model_name: str = TINY_MODEL,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> PretrainResult:
    """Train an open_clip model from scratch with the contrastive ``open_clip.ClipLoss``.

    Args:
        images: image files (read with the model's own preprocess) or an already preprocessed
            (n, 3, h, w) tensor.
        captions: per image one caption, or a list of alternatives of which one is drawn per
            epoch (:func:`caption_variants`).
        model_name: open_clip model name; default the small :data:`TINY_MODEL`.
        epochs, batch_size, lr, weight_decay: AdamW with linear warm-up and cosine decay.
        seed: seeds the initialization, the batches, the augmentation and the caption choice;
            the same seed gives the same weights on CPU.
        device: where to train.
        progress: show a tqdm bar over the epochs.

    The last incomplete batch of an epoch is dropped (the contrastive loss needs negatives).
    Augmentation: horizontal flips and small translations only, as colours are attributes.
    """
    if epochs < 1 or batch_size < 2 or lr <= 0 or weight_decay < 0:
        raise ParamsError("clip_pretrain: need epochs >= 1, batch_size >= 2, lr > 0, "
                          f"weight_decay >= 0 (got {epochs}, {batch_size}, {lr}, {weight_decay})")
    torch.manual_seed(seed)
    model, preprocess, tokenizer = create_clip(model_name, "", device="cpu")
    pixels = images if isinstance(images, Tensor) else load_image_tensors(
        images, preprocess, progress=progress)
    n = len(pixels)
    if len(captions) != n:
        raise DataError(f"clip_pretrain: {n} images but {len(captions)} captions")
    if n < batch_size:
        raise ParamsError(f"clip_pretrain: batch_size {batch_size} is larger than the "
                          f"{n} training images")
    options = [[c] if isinstance(c, str) else list(c) for c in captions]
    if any(len(o) == 0 for o in options):
        raise DataError("clip_pretrain: an image has no caption")
    option_tokens = [tokenizer(o) for o in options]  # once, not every epoch
    model = model.to(device)
    table = getattr(model, "token_embedding", None)  # open_clip's CLIP text tower
    trained_rows = None
    if isinstance(table, nn.Embedding):
        trained_rows = _CaptionRows(table, torch.unique(torch.cat(option_tokens)).to(device))
        model.token_embedding = trained_rows
    model.train()
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=_ADAM_BETAS,
                            eps=_ADAM_EPS, foreach=True)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    steps_per_epoch = n // batch_size
    total = epochs * steps_per_epoch
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc="clip pretrain", unit="epoch", disable=not progress)
    for epoch in bar:
        order = torch.randperm(n, generator=gen)
        tokens = torch.stack([t[int(rng.integers(len(t)))] for t in option_tokens])
        total_loss = 0.0
        for b in range(steps_per_epoch):
            step = epoch * steps_per_epoch + b
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, total, lr)
            idx = order[b * batch_size:(b + 1) * batch_size]
            x = _augment(pixels[idx], gen).to(device)
            img, txt, scale = model(x, tokens[idx].to(device))[:3]
            loss = loss_fn(img, txt, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, _MAX_LOGIT_SCALE)
            total_loss += loss.item()
        losses.append(total_loss / steps_per_epoch)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        log.info("clip pretrain epoch %d/%d: loss %.4f", epoch + 1, epochs, losses[-1])
    seconds = (time.perf_counter() - start) / epochs
    if trained_rows is not None:
        model.token_embedding = trained_rows.write_back(table)
    model.eval()
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return PretrainResult(state_dict=state, epoch_losses=losses, seconds_per_epoch=seconds)

