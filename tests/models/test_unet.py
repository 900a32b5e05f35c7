"""The residual U-Nets are checkpoint-compatible with the reference: state_dict keys, order, shapes
and dtypes equal the fixture manifest's list (the reference's own ``state_dict()``)."""
from __future__ import annotations

import pytest
import torch

from poserender.models.pose2img import Pose2ImgGenerator
from poserender.models.unet import ResUnetGenerator

#: (in, out) channels of the three nets with 13 clusters and 8 limbs
STAGES = {"unet_stageA": (13 + 3, 8 + 1), "unet_stageC": (3 * 8 + 13, 4), "unet_stageD": (4 + 13, 3)}


def entries(module: torch.nn.Module, prefix: str = ""):
    return [[prefix + k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in module.state_dict().items()]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_state_dict_matches_manifest(manifest, stage):
    expected = [e for e in manifest["state_dict"] if e[0].startswith(stage + ".")]
    assert len(expected) == 261
    in_ch, out_ch = STAGES[stage]
    got = entries(ResUnetGenerator(in_ch, out_ch, width=64), stage + ".")
    assert got == expected


def test_generator_state_dict_matches_manifest_in_order(manifest):
    got = entries(Pose2ImgGenerator())
    assert got == [list(e) for e in manifest["state_dict"]]
    # "131.8 M parameters" in the fixtures' README counts every float tensor (BN running stats too)
    n_float = sum(v.numel() for v in Pose2ImgGenerator().state_dict().values() if v.is_floating_point())
    assert n_float == 131_802_240


@pytest.mark.parametrize("width", [8, 16])
def test_narrow_models_have_the_same_keys(width):
    wide = ResUnetGenerator(16, 9, width=64).state_dict()
    narrow = ResUnetGenerator(16, 9, width=width).state_dict()
    assert list(narrow) == list(wide)
    for key, value in wide.items():
        assert narrow[key].ndim == value.ndim, key
    assert tuple(narrow["model.model.0.weight"].shape) == (width, 16, 3, 3)
    # innermost level: 8 * width channels
    assert max(v.shape[0] for v in narrow.values() if v.ndim == 4) == 8 * width
    assert list(Pose2ImgGenerator(width=width).state_dict()) == list(Pose2ImgGenerator().state_dict())


def test_unet_forward_shape_and_depth():
    net = ResUnetGenerator(5, 3, width=8).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 5, 64, 96)).shape == (2, 3, 64, 96)
        # five stride-2 levels: a side that is not a multiple of 32 cannot be put back together
        with pytest.raises(RuntimeError):
            net(torch.rand(1, 5, 48, 64))
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in net.modules()) == 5
    assert all(m.bias is None for m in net.modules() if isinstance(m, torch.nn.Conv2d))
