"""The Pose2Img discriminator: residual down blocks with spectral norm and one self-attention.

Same layer layout and parameter names as the reference (``resDown1..7``, ``self_att``, ``fc``;
``nn.utils.spectral_norm`` keeps ``weight_orig/weight_u/weight_v``), so at width 64 and seven
blocks its state dict is the reference's ``'D'``. Each block halves the resolution; fewer
blocks are used when the canvas is too small for seven (640 -> 5 x 5 with seven; a 64 x 64
smoke canvas keeps 2 x 2 with five). The output is one unbounded score per image, trained with
the hinge loss (``losses.py``).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import spectral_norm

#: channel multipliers of the seven blocks at width 64: 64-128-256-256-512-512-512
BLOCK_MULTIPLIERS = (1, 2, 4, 4, 8, 8, 8)
#: self-attention follows this many blocks (the reference: after the fourth, at 40 x 40 for 640)
ATTENTION_AFTER = 4


class ResBlockDown(nn.Module):
    """Shortcut 1x1 conv + avg-pool, plus relu-conv3-relu-conv3-avg-pool; spectral norm on all convs."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv_l1 = spectral_norm(nn.Conv2d(in_channels, out_channels, 1))
        self.conv_r1 = spectral_norm(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.conv_r2 = spectral_norm(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.pool(self.conv_l1(x))
        out = self.conv_r2(torch.relu(self.conv_r1(torch.relu(x))))
        return shortcut + self.pool(out)


class SelfAttention(nn.Module):
    """SAGAN self-attention: ``x + gamma * h @ softmax(f^T g)`` (gamma starts at 0)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_f = spectral_norm(nn.Conv2d(channels, channels // 8, 1))
        self.conv_g = spectral_norm(nn.Conv2d(channels, channels // 8, 1))
        self.conv_h = spectral_norm(nn.Conv2d(channels, channels, 1))
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        f = self.conv_f(x).flatten(2).transpose(1, 2)            # (B, N, C/8)
        g = self.conv_g(x).flatten(2)                            # (B, C/8, N)
        attention = torch.softmax(torch.bmm(f, g), dim=-2)       # columns sum to 1, as the reference
        out = torch.bmm(self.conv_h(x).flatten(2), attention)    # (B, C, N)
        return self.gamma * out.view(b, c, h, w) + x


def blocks_for(height: int, width: int) -> int:
    """Seven blocks where the canvas allows, and never below 2 x 2 at the end."""
    return max(2, min(len(BLOCK_MULTIPLIERS), int(math.log2(min(height, width))) - 1))


class Discriminator(nn.Module):
    """(B, 3, H, W) image in [-1, 1] -> (B, 1) score; ``width`` 64 and 7 blocks = the reference."""

    def __init__(self, width: int = 64, blocks: int = 7):
        super().__init__()
        if not 2 <= blocks <= len(BLOCK_MULTIPLIERS):
            raise ValueError(f"blocks is {blocks}; expected 2..{len(BLOCK_MULTIPLIERS)}")
        self.width, self.blocks = width, blocks
        channels = [3] + [width * m for m in BLOCK_MULTIPLIERS[:blocks]]
        self.attention_after = min(ATTENTION_AFTER, blocks - 1)
        for i in range(blocks):
            setattr(self, f"resDown{i + 1}", ResBlockDown(channels[i], channels[i + 1]))
        self.self_att = SelfAttention(channels[self.attention_after])
        self.fc = nn.Linear(channels[-1], 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = image
        for i in range(self.blocks):
            out = getattr(self, f"resDown{i + 1}")(out)
            if i + 1 == self.attention_after:
                out = self.self_att(out)
        return self.fc(out.mean(dim=(2, 3)))
