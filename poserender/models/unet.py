"""The residual U-Net of Pose2Img, state-dict compatible with the reference checkpoints.

Each of the three nets (stages A, C, D) is a five-level U-Net: a 3x3 stride-2 conv goes down,
nearest x2 upsampling plus a 3x3 conv goes up, two residual blocks follow every down and up
conv, and every level but the outermost returns ``cat([x, level(x)])``. Convs have no bias.
The reference's ``num_downs=3`` argument has no effect (its loop adds ``num_downs - 5`` extra
levels, i.e. none), so the depth is fixed at five and H, W must be multiples of 32.

Parameter names mirror the reference (``model.model.4.model.5...``) because the module
indices inside each ``nn.Sequential`` are part of the checkpoint format; the builder below
lays the layers out in exactly that order.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

#: channel multipliers of the five levels, outermost first (64-128-256-512-512 at width 64)
LEVEL_MULTIPLIERS = (1, 2, 4, 8, 8)


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input, then ReLU (``block.0/1/3/4`` in the checkpoint)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.block(x) + x)


class UNetLevel(nn.Module):
    """One level: down conv (+norm) -> 2 res blocks -> [inner level] -> up -> (+norm, 2 res blocks).

    ``outermost`` levels have no norm after the down conv and end in a bare up conv (the
    network's raw output); the ``innermost`` level has no norm after its down conv and no
    inner level. All other levels return ``cat([x, level(x)])`` so the parent's up conv sees
    twice the channels.
    """

    def __init__(self, outer_channels: int, inner_channels: int, in_channels: Optional[int] = None,
                 inner: Optional["UNetLevel"] = None, outermost: bool = False):
        super().__init__()
        self.outermost = outermost
        innermost = inner is None
        in_channels = outer_channels if in_channels is None else in_channels
        up_in = inner_channels if innermost else 2 * inner_channels

        layers: List[nn.Module] = [nn.Conv2d(in_channels, inner_channels, 3, 2, 1, bias=False)]
        if not (outermost or innermost):
            layers.append(nn.BatchNorm2d(inner_channels))
        layers += [nn.ReLU(inplace=True), ResidualBlock(inner_channels), ResidualBlock(inner_channels)]
        if inner is not None:
            layers.append(inner)
        layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                   nn.Conv2d(up_in, outer_channels, 3, 1, 1, bias=False)]
        if not outermost:
            layers += [nn.BatchNorm2d(outer_channels), nn.ReLU(inplace=True),
                       ResidualBlock(outer_channels), ResidualBlock(outer_channels)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class ResUnetGenerator(nn.Module):
    """Five-level residual U-Net: ``in_channels`` -> ``out_channels`` at the input resolution.

    ``width`` is the channel count of the outermost level (64 in the reference; the slim demo
    model uses less). Input H and W must be multiples of 32.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 64):
        super().__init__()
        chans = [width * m for m in LEVEL_MULTIPLIERS]
        level = UNetLevel(chans[4], chans[4])                      # innermost: 512 -> 512
        for outer, inner in ((chans[2], chans[3]), (chans[1], chans[2]), (chans[0], chans[1])):
            level = UNetLevel(outer, inner, inner=level)
        self.model = UNetLevel(out_channels, chans[0], in_channels=in_channels, inner=level,
                               outermost=True)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
