"""Discriminator (reference layout, spectral norm, self-attention), VGG19 loading, losses."""
from __future__ import annotations

import pytest
import torch

from poserender.errors import UserError
from poserender.training.discriminator import Discriminator, blocks_for
from poserender.training.losses import PerceptualStyleLoss, gram_matrix, hinge_fake, hinge_real
from poserender.training.vgg import VGG19Features, load_vgg19


def test_discriminator_has_the_reference_parameter_names():
    d = Discriminator(width=4, blocks=7)
    keys = set(d.state_dict())
    for block in range(1, 8):
        for conv in ("conv_l1", "conv_r1", "conv_r2"):
            for suffix in ("weight_orig", "weight_u", "weight_v", "bias"):
                assert f"resDown{block}.{conv}.{suffix}" in keys
    assert {"self_att.gamma", "self_att.conv_f.weight_orig", "fc.weight", "fc.bias"} <= keys
    assert d.self_att.conv_h.weight_orig.shape[0] == 16          # after block 4: 4 * width


@pytest.mark.parametrize("side, blocks", [(64, 5), (128, 6), (256, 7), (640, 7)])
def test_discriminator_depth_follows_the_canvas(side, blocks):
    assert blocks_for(side, side) == blocks


def test_discriminator_scores_and_attention_is_live():
    torch.manual_seed(0)
    d = Discriminator(width=4, blocks=blocks_for(64, 64))
    with torch.no_grad():
        d.self_att.gamma.fill_(1.0)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    score = d(x)
    assert score.shape == (3, 1) and torch.isfinite(score).all()
    score.sum().backward()
    assert d.self_att.conv_f.weight_orig.grad.abs().sum() > 0


def test_hinge_losses():
    s = torch.tensor([[-2.0], [0.0], [3.0]])
    assert hinge_real(s).item() == pytest.approx((3 + 1 + 0) / 3)
    assert hinge_fake(s).item() == pytest.approx((0 + 1 + 4) / 3)


def test_gram_is_normalised_like_the_reference():
    f = torch.ones(2, 3, 4, 5)
    assert torch.allclose(gram_matrix(f), torch.full((6, 6), 20.0 / (2 * 3 * 4 * 5)))


@pytest.fixture(scope="module")
def torchvision_state():
    """A VGG19 state dict with torchvision's keys and shapes (random values)."""
    torch.manual_seed(0)
    trunk = VGG19Features()
    state = {k: torch.randn_like(v) * 0.05 for k, v in trunk.state_dict().items()}
    state["features.30.weight"] = torch.randn(512, 512, 3, 3)     # conv5_2, beyond relu5_1: ignored
    state["features.30.bias"] = torch.randn(512)
    state["classifier.0.weight"] = torch.randn(8, 8)              # shape irrelevant: ignored
    return state


def test_vgg_loads_a_torchvision_state_dict(tmp_path, torchvision_state):
    state = torchvision_state
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    vgg = load_vgg19(path)
    assert torch.equal(vgg.features[28].weight, state["features.28.weight"])
    assert not any(p.requires_grad for p in vgg.parameters())
    outs = vgg(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512, 512]
    assert [o.shape[-1] for o in outs] == [64, 32, 16, 8, 4]
    loss = PerceptualStyleLoss(vgg)
    x, y = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    same = loss(x, x)
    assert same[0].item() == 0 and same[1].item() == 0
    x.requires_grad_(True)
    perceptual, style = loss(x, y)
    assert perceptual > 0 and style > 0
    (perceptual + style).backward()
    assert x.grad.abs().sum() > 0


def test_vgg_bad_files_are_user_errors(tmp_path, torchvision_state):
    with pytest.raises(UserError, match="not found"):
        load_vgg19(tmp_path / "nope.pth")
    state = dict(torchvision_state)
    state["features.10.weight"] = torch.randn(3, 3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(UserError, match=r"features.10.weight has shape \(3, 3\); expected \(256, 128, 3, 3\)"):
        load_vgg19(tmp_path / "shape.pth")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="VGG19 feature keys missing"):
        load_vgg19(tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(UserError, match="cannot read"):
        load_vgg19(tmp_path / "junk.pth")
