"""Feature Diversity Loss L_div (paper eq. 2, from the SLDD-Model).

The training loss is ``L_final = L_CE + beta * L_div`` (eq. 2) with ``beta`` = 0.196 (ResNet50),
0.098 (DenseNet121), 0.049 (Inception-v3) (supplement, Implementation Details). L_div "penalizes
highly activated and weighted features that localize on the same region" (section SLDD-Model).
For one image with predicted class c, feature maps ``M_i`` (i = 1..n_f) and final-layer weight
``W``:

1. ``w = |W_c| / ||W_c||_2``: the absolute weights of the predicted class, unit L2 norm;
2. ``S_i = softmax over the h*w positions of M_i``, scaled by ``mean(M_i) / max_j mean(M_j)``;
3. ``value = sum over positions of max_i (w_i * S_i)``.

``L_div = -mean over the batch of value``. The value is largest (sum of the top weights' share)
when the highly weighted, strongly activated features peak on different positions, and it
shrinks to the single largest ``w_i * scale_i`` when they all peak on the same one.

The same loss is used in fine-tuning with the frozen sparse layer: there, pass the feature maps
of the selected features and the sparse weight ``(n_classes, n_f*)``, so the largest mean
activation is taken among the features that the sparse layer uses (as in the SLDD-Model).

Design choice, weight gradient: the loss is meant to shape the feature maps, so ``W`` enters as
a constant (detached). With the dense head trainable, a gradient through ``|W_c| / ||W_c||``
would instead move class weight mass onto whichever feature has the sharpest map, which is not
what eq. 2 describes; in fine-tuning W is frozen anyway. The authors' code lets the gradient
reach W; pass ``detach_weight=False`` to reproduce that.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Guards the divisions by the largest mean activation and by ||W_c|| (all-zero maps or rows).
_EPS = 1e-8


def _check_shapes(feature_maps: Tensor, weight: Tensor, predicted: Tensor) -> None:
    if feature_maps.dim() != 4:
        raise ValueError(f"feature_maps must be (B, n_f, h, w), got {tuple(feature_maps.shape)}")
    if weight.dim() != 2 or weight.shape[1] != feature_maps.shape[1]:
        raise ValueError(
            f"weight must be (n_classes, {feature_maps.shape[1]}), got {tuple(weight.shape)}"
        )
    if predicted.shape != (feature_maps.shape[0],):
        raise ValueError(
            f"predicted must be ({feature_maps.shape[0]},) class indices, "
            f"got {tuple(predicted.shape)}"
        )


def activation_scaled_softmax(feature_maps: Tensor) -> Tensor:
    """Step 2: spatial softmax of each map, scaled by its mean over the image's largest mean.

    ``feature_maps`` (B, n_f, h, w) -> (B, n_f, h*w); each row sums to ``mean_i / max_j mean_j``.
    """
    flat = feature_maps.flatten(2)
    attention = torch.softmax(flat, dim=2)
    mean = flat.mean(dim=2)
    largest = mean.amax(dim=1, keepdim=True).clamp_min(_EPS)
    return attention * (mean / largest).unsqueeze(2)


def class_weights(weight: Tensor, predicted: Tensor, detach_weight: bool = True) -> Tensor:
    """Step 1: ``|W|`` rows of the predicted classes at unit L2 norm, (B, n_f); zero rows stay 0."""
    w = weight.detach() if detach_weight else weight
    rows = w.abs()[predicted]
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(_EPS)


def feature_diversity(
    feature_maps: Tensor, weight: Tensor, predicted: Tensor, *, detach_weight: bool = True
) -> Tensor:
    """Per-image diversity value (B,) whose negated batch mean is L_div of eq. 2.

    Args:
        feature_maps: M, (B, n_f, h, w), after ReLU.
        weight: final-layer weight W, (n_classes, n_f).
        predicted: (B,) predicted class indices (argmax of the logits).
        detach_weight: treat W as a constant (default; see the module docstring).
    """
    _check_shapes(feature_maps, weight, predicted)
    scaled = activation_scaled_softmax(feature_maps)
    rows = class_weights(weight, predicted, detach_weight).to(scaled.dtype)
    weighted = scaled * rows.unsqueeze(2)
    return weighted.amax(dim=1).sum(dim=1)


def feature_diversity_loss(
    feature_maps: Tensor, weight: Tensor, predicted: Tensor, *, detach_weight: bool = True
) -> Tensor:
    """L_div of eq. 2: ``-mean(feature_diversity(...))``; training adds ``beta *`` this to CE."""
    return -feature_diversity(
        feature_maps, weight, predicted, detach_weight=detach_weight
    ).mean()
