"""The Pose2Img training losses, as in the reference trainer.

Generator: ``w_l1 * L1 + perceptual + style + w_adv * hinge_G`` with ``w_l1 = 10`` and
``w_adv = 0.5``. Perceptual: the sum over the five VGG19 outputs of the L1 distance to the
target's (weights 1). Style: the MSE between Gram matrices of the same outputs, Gram
normalised by ``B * C * H * W`` and scaled by 600000, as the reference. The reference feeds
VGG the [-1, 1] BGR images directly (no ImageNet normalisation); so do we, so that its loss
scales and weights carry over. Discriminator: hinge, ``(relu(1 - D(real)) + relu(1 + D(fake))) / 2``.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .vgg import VGG19Features

STYLE_SCALE = 600000.0


def hinge_real(score: torch.Tensor) -> torch.Tensor:
    """Mean of relu(1 - score): for D on real images, and (x 0.5) the generator's adversarial term."""
    return torch.relu(1.0 - score).mean()


def hinge_fake(score: torch.Tensor) -> torch.Tensor:
    return torch.relu(1.0 + score).mean()


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """The reference's Gram: all (B * C) maps against each other, divided by B * C * H * W."""
    b, c, h, w = features.shape
    flat = features.reshape(b * c, h * w).float()     # fp32 even under autocast: sums of squares
    return flat @ flat.t() / (b * c * h * w)


class PerceptualStyleLoss(nn.Module):
    """(perceptual, style) between ``output`` and ``target`` over the five VGG19 outputs."""

    def __init__(self, vgg: VGG19Features):
        super().__init__()
        self.vgg = vgg

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out_feats = self.vgg(output)
        with torch.no_grad():
            tgt_feats = self.vgg(target)
        perceptual = output.new_zeros((), dtype=torch.float32)
        style = output.new_zeros((), dtype=torch.float32)
        for o, t in zip(out_feats, tgt_feats):
            perceptual = perceptual + F.l1_loss(o.float(), t.float())
            style = style + F.mse_loss(gram_matrix(o), gram_matrix(t)) * STYLE_SCALE
        return perceptual, style
