"""Building blocks of the PSC nets, with the reference's module layout (so the authors'
``pm.pth``/``aa.pth``/``ct.pth`` state dicts load strictly) and its arithmetic.

The quirks named here are those of ``../shared/fixtures/psc/README.md``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

#: ``sys.float_info.epsilon`` added to the L2 norm by the reference's feature_normalize
FLOAT64_EPS = 2.220446049250313e-16

#: AA-Net BatchNorm statistics: "sample" = per-sample batch statistics (what the authors' test.py
#: computes, as it never calls .eval(): equal to train-mode BatchNorm at batch 1 and never mixing
#: frames of a batch), "running" = the stored running statistics (eval mode), "batch" = literal
#: train-mode BatchNorm over the whole batch (mixes frames; for training, where it also updates the
#: running statistics while the module is in training mode, and to prove the equivalence at batch 1)
BN_STATS = ("sample", "running", "batch")


def _lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(0.2)


class BlockEncoder(nn.Module):
    """IN, LReLU(0.2), conv4x4 s2 p1, IN, LReLU, conv3x3 (quirk ``encoder-norm-channels``: both
    instance norms are parameter-free; the reference declares the second with the output channel
    count, which is unused, so it is declared here with the count it sees)."""

    def __init__(self, input_nc: int, output_nc: int, hidden_nc: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.InstanceNorm2d(input_nc), _lrelu(), nn.Conv2d(input_nc, hidden_nc, 4, 2, 1),
            nn.InstanceNorm2d(hidden_nc), _lrelu(), nn.Conv2d(hidden_nc, output_nc, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class BlockBottle(nn.Module):
    """conv3x3 (no bias), IN (affine), ReLU, conv3x3 (no bias), IN (affine); no residual."""

    def __init__(self, input_nc: int, output_nc: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(input_nc, output_nc, 3, 1, 1, bias=False), nn.InstanceNorm2d(output_nc, affine=True),
            nn.ReLU(), nn.Conv2d(output_nc, output_nc, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(output_nc, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class ResBlockDecoder(nn.Module):
    """[IN, LReLU, conv3x3, IN, LReLU, ConvT3x3 s2] + ConvT3x3 s2 shortcut (quirk ``decoder-block``)."""

    def __init__(self, input_nc: int, output_nc: int, hidden_nc: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.InstanceNorm2d(input_nc), _lrelu(), nn.Conv2d(input_nc, hidden_nc, 3, 1, 1),
            nn.InstanceNorm2d(hidden_nc), _lrelu(),
            nn.ConvTranspose2d(hidden_nc, output_nc, 3, 2, 1, output_padding=1))
        self.shortcut = nn.Sequential(nn.ConvTranspose2d(input_nc, output_nc, 3, 2, 1, output_padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) + self.shortcut(x)


class OutputHead(nn.Module):
    """IN, LReLU, ReflectionPad(1), conv3x3, tanh. The conv is registered twice, as ``conv1`` and as
    ``model.3`` (quirk ``ct-output-alias``); loading a state dict assigns ``conv1`` first and then
    ``model.3``, so the effective weights are ``model.3``'s, as in the reference."""

    def __init__(self, input_nc: int, output_nc: int):
        super().__init__()
        self.conv1 = nn.Conv2d(input_nc, output_nc, 3, 1, 0, bias=True)
        self.model = nn.Sequential(nn.InstanceNorm2d(input_nc), _lrelu(), nn.ReflectionPad2d(1), self.conv1, nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PSCBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose statistics follow ``stats`` (see :data:`BN_STATS`); keeps the reference's
    state-dict entries (weight, bias, running_mean, running_var, num_batches_tracked)."""

    def __init__(self, num_features: int, stats: str = "sample"):
        super().__init__(num_features, eps=1e-5)
        self.stats = stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stats == "sample":
            # instance norm with the BN affine: per-sample, per-channel statistics over H x W,
            # biased variance, as train-mode BatchNorm computes them for a batch of one
            return F.instance_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        if self.stats == "running":
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if self.stats == "batch":
            # as nn.BatchNorm2d in training mode: batch statistics, and (only while the module is in
            # training mode, i.e. when training) the running statistics are updated with momentum
            if self.training:
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
                return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True,
                                    self.momentum, self.eps)
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        raise ValueError(f"BatchNorm stats {self.stats!r}; expected one of {BN_STATS}")


class ResidualBlock(nn.Module):
    """x + [conv3x3, BN, ReLU, conv3x3, BN](x), then ReLU (AA-Net)."""

    def __init__(self, features: int, stats: str = "sample"):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(features, features, 3, 1, 1, bias=False), PSCBatchNorm2d(features, stats), nn.ReLU(),
            nn.Conv2d(features, features, 3, 1, 1, bias=False), PSCBatchNorm2d(features, stats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.block(x) + x)


class GetMatrix(nn.Module):
    """Two 1x1 convs (no bias) to one channel each; the AdaIN modulation maps (quirk ``aa-adain-swap``)."""

    def __init__(self, dim_in: int, dim_out: int = 1):
        super().__init__()
        self.get_gamma = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)
        self.get_beta = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)


class SEAttention(nn.Module):
    """Squeeze-and-excitation: GAP, Linear C->C/16, ReLU, Linear C/16->C, sigmoid, scale."""

    def __init__(self, channel: int = 256, reduction: int = 16):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channel, channel // reduction, bias=False), nn.ReLU(),
                                nn.Linear(channel // reduction, channel, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc(x.mean(dim=(2, 3)))
        return x * scale[:, :, None, None]


def feature_normalize(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel L2 normalisation over channels, x / (||x|| + float64 eps) (quirk ``aa-feature-normalize``)."""
    return x / (torch.linalg.vector_norm(x, 2, dim=1, keepdim=True) + FLOAT64_EPS)


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """|Sobel| of the grey level 0.299R + 0.587G + 0.144B (quirk ``sobel-gray-0.144``), zero padding 1."""
    gray = (image[:, 0] * 0.299 + image[:, 1] * 0.587 + image[:, 2] * 0.144).unsqueeze(1)
    kx = gray.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    ky = gray.new_tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]).view(1, 1, 3, 3)
    gx = F.conv2d(gray, kx, padding=1)
    gy = F.conv2d(gray, ky, padding=1)
    return torch.sqrt(gx * gx + gy * gy)


def warp_base_grid(height: int, width: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """(1, H, W, 2) base grid of the reference's bilinear_warp: arange / (n - 1) * 2 - 1."""
    x = torch.arange(width, dtype=torch.float32, device=device) / (width - 1)
    y = torch.arange(height, dtype=torch.float32, device=device) / (height - 1)
    grid = torch.stack([x.view(1, -1).expand(height, -1), y.view(-1, 1).expand(-1, width)], dim=-1)
    return (2 * grid - 1).unsqueeze(0)


def broadcast_batch(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` (1 or B, C, h, w) repeated to ``like``'s batch B, as x * ones(B, 1, 1, 1): exact, and
    unlike Expand it keeps the channel count known to ONNX shape inference (InstanceNorm needs it)."""
    return x * torch.ones_like(like[:, :1, :1, :1])


def bilinear_warp(source: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """The reference warp (quirk ``warp-align-corners``): base grid + 2 * flow / [w, h], sampled with
    grid_sample(bilinear, zeros, align_corners=False). ``flow`` is (B, 2, h, w) in pixels, channel
    0 = x; a (1, ...) source is broadcast over the flow's batch."""
    h, w = source.shape[-2:]
    scale = flow.new_tensor([w, h]).view(1, 2, 1, 1)
    grid = warp_base_grid(h, w, flow.device) + (2 * flow / scale).permute(0, 2, 3, 1)
    return F.grid_sample(broadcast_batch(source, flow), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)
