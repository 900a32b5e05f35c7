"""The exact sub-pixel rewrite of nearest-x2-upsample + 3x3 conv used in exported graphs."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from poserender.models.fuse import UpsampleConv2x, fuse_upsample_convs
from poserender.models.unet import ResUnetGenerator


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("size", [(4, 4), (5, 7), (1, 1)])
def test_upsample_conv_equals_reference(bias, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, 1, 1, bias=bias)
    x = torch.randn(2, 6, *size)
    expected = conv(nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    got = UpsampleConv2x(conv)(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)


def test_rejects_other_convs():
    with pytest.raises(ValueError):
        UpsampleConv2x(nn.Conv2d(3, 3, 5, 1, 2))


def test_fused_unet_matches_and_leaves_original_alone():
    torch.manual_seed(1)
    net = ResUnetGenerator(7, 4, width=8).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.8, 1.2)
    fused = fuse_upsample_convs(net).eval()
    assert sum(isinstance(m, UpsampleConv2x) for m in fused.modules()) == 5      # one per level
    assert not any(isinstance(m, UpsampleConv2x) for m in net.modules())
    x = torch.randn(2, 7, 64, 96)
    with torch.no_grad():
        assert torch.allclose(fused(x), net(x), atol=1e-5)
