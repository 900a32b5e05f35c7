"""PM-Net (pose manifold): two key poses and t in [0, 1] -> an in-between pose as 18 heat maps.

State-dict compatible with the authors' ``pm.pth``. The work is split by what it depends on:
:meth:`PMNet.key_features` (encoder + the shared ``bottle_pose`` chain) depends on one key pose
only, :meth:`PMNet.interpolate` on t; ``forward`` is the reference signature and composes them.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from .blocks import BlockBottle, BlockEncoder, ResBlockDecoder

PM_NGF = 16          # quirk pm-ngf-hardcoded: the reference always builds PM-Net with ngf=16
PM_BOTTLENECKS = 3   # opt.pm_bottle_nc in the test options


class PMNet(nn.Module):
    def __init__(self, joints: int = 18, ngf: int = PM_NGF, bottlenecks: int = PM_BOTTLENECKS):
        super().__init__()
        self.bottlenecks = bottlenecks
        self.encoder_conv1 = BlockEncoder(joints, ngf * 2, ngf)
        self.encoder_conv2 = BlockEncoder(ngf * 2, ngf * 4, ngf * 4)
        self.encoder_conv3 = BlockEncoder(ngf * 4, ngf * 8, ngf * 8)
        self.encoder_conv4 = BlockEncoder(ngf * 8, ngf * 16, ngf * 16)
        self.bottle_pose = BlockBottle(ngf * 16, ngf * 16)
        self.bottle_manifold1 = BlockBottle(ngf * 16, ngf * 16)
        self.bottle_manifold2 = BlockBottle(ngf * 32, ngf * 16)
        self.decoder_conv1 = ResBlockDecoder(ngf * 16, ngf * 8, ngf * 16)
        self.decoder_conv2 = ResBlockDecoder(ngf * 8, ngf * 4, ngf * 4)
        self.decoder_conv3 = ResBlockDecoder(ngf * 4, ngf * 2, ngf * 2)
        self.decoder_conv4 = ResBlockDecoder(ngf * 2, ngf, ngf)
        self.output = nn.Sequential(nn.Conv2d(ngf, joints, 7, 1, 3, bias=False), nn.Sigmoid())

    def key_features(self, pose: torch.Tensor) -> List[torch.Tensor]:
        """Encoder output and its ``bottle_pose`` iterates, one per bottleneck iteration."""
        feature = self.encoder_conv4(self.encoder_conv3(self.encoder_conv2(self.encoder_conv1(pose))))
        features = [feature]
        for _ in range(self.bottlenecks - 1):   # the last iterate is never used (dead in the reference)
            features.append(self.bottle_pose(features[-1]))
        return features

    def interpolate(self, features_a: List[torch.Tensor], features_b: List[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
        """Quirk pm-bottleneck-loop: iteration i mixes the i-th iterates as f_a * (1 - t) + f_b * t;
        iteration 0 goes through ``bottle_manifold1``, later ones through the shared
        ``bottle_manifold2`` of [mix, previous]. ``t`` is one value per output sample, shape (B,);
        key features of batch 1 are broadcast over it."""
        t = t.reshape(-1, 1, 1, 1)
        manifold = None
        for i in range(self.bottlenecks):
            mixed = features_a[i] * (1 - t) + features_b[i] * t
            manifold = (self.bottle_manifold1(mixed) if i == 0
                        else self.bottle_manifold2(torch.cat([mixed, manifold], 1)))
        out = self.decoder_conv4(self.decoder_conv3(self.decoder_conv2(self.decoder_conv1(manifold))))
        return self.output(out)

    def forward(self, pose_1: torch.Tensor, pose_2: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The reference call ``pm_net(p0, p1, t)``: heat maps (B, 18, H, W) in (0, 1)."""
        return self.interpolate(self.key_features(pose_1), self.key_features(pose_2), t)
