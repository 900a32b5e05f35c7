"""AA-Net (parsing inference): source parsing S0 + target pose heat maps -> target parsing
probabilities (softmax over 7 labels).

State-dict compatible with the authors' ``aa.pth`` (BatchNorm entries, the dead ``bottle2_neck3``
and the unused ``adain3`` included). The parsing encoder depends on S0 only:
:meth:`AANet.encode_parsing` runs once per identity, :meth:`AANet.decode` per target pose.

BatchNorm statistics (``bn_stats``, see :data:`blocks.BN_STATS`): the authors never call
``.eval()``, so their BatchNorm normalises with batch statistics; at batch 1 that is an instance
norm with the BN affine, which is what ``"sample"`` (the default) computes for every batch size.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import BN_STATS, BlockBottle, GetMatrix, PSCBatchNorm2d, ResidualBlock, SEAttention, feature_normalize

AA_CLASSES = 7   # quirk aa-output-7-softmax: the last conv has 7 outputs whatever sg_num says


def _down(cin: int, cout: int, stats: str, first: bool) -> nn.Sequential:
    """Quirk aa-encoder-first: the first stage has no BN after its strided conv."""
    conv = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
    head = [conv, nn.ReLU()] if first else [conv, PSCBatchNorm2d(cout, stats), nn.ReLU()]
    return nn.Sequential(*head, ResidualBlock(cout, stats), ResidualBlock(cout, stats))


def _up(cin: int, cout: int, stats: str) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                         PSCBatchNorm2d(cout, stats), nn.ReLU(), ResidualBlock(cout, stats), ResidualBlock(cout, stats))


class AANet(nn.Module):
    def __init__(self, classes: int = AA_CLASSES, joints: int = 18, ngf: int = 16, bn_stats: str = "sample"):
        super().__init__()
        widths = [ngf * 2, ngf * 4, ngf * 8, ngf * 16]
        for branch, cin in (("encoder1", classes), ("encoder2", joints)):
            for i, cout in enumerate(widths):
                self.add_module(f"{branch}_conv{i + 1}", _down(cin if i == 0 else widths[i - 1], cout, bn_stats, i == 0))
        for branch in ("bottle1", "bottle2"):
            for i in range(3):   # quirk aa-bottle-nc-unused: always 3 stages
                self.add_module(f"{branch}_neck{i + 1}", BlockBottle(ngf * 16, ngf * 16))
        self.adain1, self.adain2, self.adain3 = GetMatrix(ngf * 16), GetMatrix(ngf * 16), GetMatrix(ngf * 16)
        self.se_att = SEAttention(256)   # quirk aa-se-hardcoded
        self.decoder_conv1 = _up(ngf * 16, ngf * 8, bn_stats)
        self.decoder_conv2 = _up(ngf * 8, ngf * 4, bn_stats)
        self.decoder_conv3 = _up(ngf * 4, ngf * 2, bn_stats)
        self.decoder_conv4 = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                           nn.Conv2d(ngf * 2, AA_CLASSES, 3, 1, 1, bias=False), nn.Softmax(dim=1))
        self.set_bn_stats(bn_stats)

    def set_bn_stats(self, bn_stats: str) -> "AANet":
        if bn_stats not in BN_STATS:
            raise ValueError(f"bn_stats {bn_stats!r}; expected one of {BN_STATS}")
        self.bn_stats = bn_stats
        for module in self.modules():
            if isinstance(module, PSCBatchNorm2d):
                module.stats = bn_stats
        return self

    def encode_parsing(self, parsing: torch.Tensor) -> torch.Tensor:
        """S0 one-hot (B, 7, H, W) -> the normalised parsing code (B, 256, H/16, W/16)."""
        x = self.encoder1_conv4(self.encoder1_conv3(self.encoder1_conv2(self.encoder1_conv1(parsing))))
        return feature_normalize(x)

    @staticmethod
    def _modulate(code: torch.Tensor, adain: GetMatrix, pose: torch.Tensor) -> torch.Tensor:
        # quirk aa-adain-swap: code * (1 + get_gamma(pose)) + get_beta(pose), 1-channel maps
        return code * (1 + adain.get_gamma(pose)) + adain.get_beta(pose)

    def decode(self, parsing_code: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Parsing code (1 or B, 256, h, w) + target heat maps (B, 18, H, W) -> softmax (B, 7, H, W)."""
        pose = self.encoder2_conv4(self.encoder2_conv3(self.encoder2_conv2(self.encoder2_conv1(pose))))
        x = self.bottle1_neck1(self._modulate(parsing_code, self.adain1, pose))
        pose = self.bottle2_neck1(pose)
        x = self.bottle1_neck2(self._modulate(feature_normalize(x), self.adain2, pose))
        pose = self.bottle2_neck2(pose)
        # quirk aa-adain1-reused: stage 3 uses adain1 again; quirk aa-dead-branch: bottle2_neck3's
        # output is discarded by the reference, so it is not computed
        x = self.bottle1_neck3(self._modulate(feature_normalize(x), self.adain1, pose))
        x = self.se_att(x)
        return self.decoder_conv4(self.decoder_conv3(self.decoder_conv2(self.decoder_conv1(x))))

    def forward(self, sg_1: torch.Tensor, p_t: torch.Tensor) -> torch.Tensor:
        """The reference call ``aa_net(s0, pt_map)``."""
        return self.decode(self.encode_parsing(sg_1), p_t)
