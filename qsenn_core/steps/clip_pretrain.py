"""Stage ``clip_pretrain``: the CLIP weights of the alignment (``models/clip.pt``).

With ``clip.pretrained: scratch`` it trains ``clip.model`` from scratch on the training images
paired with captions written from each image's attributes (the synthetic default: no CLIP weights
can be downloaded); otherwise it stores the weights ``clip.pretrained`` names (an open_clip tag
found in the local cache, or a checkpoint file) as they are, so the DAG is the same for every
dataset and the weights are shared through the DVC cache like any model (paper, "Alignment
Without Annotations").
"""

from __future__ import annotations

import logging
from pathlib import Path

from qsenn_core import alignment as al
from qsenn_core import clip_model as cm
from qsenn_core.data import load_dataset
from qsenn_core.device import resolve_device, torch_threads
from qsenn_core.errors import DataError
from qsenn_core.params import CLIP_SCRATCH, Params
from qsenn_core.steps.clip_weights import train_positions

log = logging.getLogger(__name__)


def clip_pretrain(params: Params, out: Path) -> dict[str, float]:
    """Write the CLIP weights of the alignment to ``out`` (a state dict, ``torch.save``).

    ``clip.pretrained: scratch``: contrastive pre-training of ``clip.model`` with open_clip's
    ``ClipLoss`` on the training images, each paired with ``clip.pretrain.n_captions`` captions
    from its present attributes (:func:`qsenn_core.clip_model.caption_variants`); deterministic for
    ``seed`` on CPU. Otherwise the named tag or checkpoint is loaded (nothing is downloaded) and
    stored unchanged. Returns a few facts for the log.
    """
    c = params.clip
    if c.pretrained != CLIP_SCRATCH:
        model, _, _ = cm.create_clip(c.model, c.pretrained)
        cm.save_clip_weights(model.state_dict(), out)
        return {"trained": 0.0}
    index = load_dataset(params.data.name, params.data.root)
    if index.attributes is None or index.attribute_names is None:
        raise DataError(f"{params.data.root}: the {params.data.name} dataset has no attributes to "
                        f"write captions from, so clip.pretrained: {CLIP_SCRATCH} cannot train; "
                        "set clip.pretrained to an open_clip tag (openai) or a checkpoint path")
    train = train_positions(index)
    p = c.pretrain
    captions = cm.caption_variants(
        index.attribute_names, index.attributes[train], al.object_noun(params.data.name),
        n_variants=p.n_captions, seed=params.seed, max_attributes=p.max_attributes,
        non_adjectives=c.non_adjectives)
    with torch_threads(p.threads):
        result = cm.pretrain_clip(
            [index.image_paths[i] for i in train], captions, model_name=c.model, epochs=p.epochs,
            batch_size=min(p.batch_size, len(train)), lr=p.lr, weight_decay=p.weight_decay,
            seed=params.seed, device=resolve_device(params.device))
    cm.save_clip_weights(result.state_dict, out)
    log.info("clip_pretrain: %d images, loss %.4f -> %.4f, %.1f s/epoch", len(train),
             result.epoch_losses[0], result.epoch_losses[-1], result.seconds_per_epoch)
    return {"trained": 1.0, "first_loss": result.epoch_losses[0],
            "final_loss": result.epoch_losses[-1], "seconds_per_epoch": result.seconds_per_epoch}
