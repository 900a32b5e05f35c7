"""The deployed split equals the full forward: ``frame(source(x)) == to_uint8_bgr(FullPipeline(x))``,
and the frame stage is batch invariant. A small random generator (width 8) at 64 x 64 with the
template pose and a procedural gesture; no fixtures needed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from poserender.keypoints.template import gesture_sequence, template_pose
from poserender.models.pose2img import FrameStage, FullPipeline, Pose2ImgGeometry, SourceStage, to_uint8_bgr

H = W = 64
N_FRAMES = 3


def level_report(a: torch.Tensor, b: torch.Tensor):
    """(max level difference, fraction of pixels that differ at all) of two uint8 (B, H, W, 3)."""
    assert a.dtype == b.dtype == torch.uint8 and a.shape == b.shape
    diff = (a.to(torch.int16) - b.to(torch.int16)).abs().amax(dim=-1)   # per pixel
    return int(diff.max()), float((diff > 0).float().mean())


def assert_same_frames(a: torch.Tensor, b: torch.Tensor, what: str):
    """Exactly equal, or within 1 level with >= 99.99 % of pixels exactly equal (float rounding at
    an x.5 boundary of (y + 1) * 127.5 can flip one level)."""
    worst, frac = level_report(a, b)
    assert worst <= 1 and frac <= 1e-4, f"{what}: max {worst} levels, {frac:.4%} of pixels differ"


@pytest.fixture(scope="module", params=["legacy", "exact"])
def setup(request, make_small_generator, default_config, smooth_image):
    geometry = Pose2ImgGeometry(H, W, tuple(default_config.kp_var_root), tuple(default_config.mask_sigma_perp),
                                request.param)
    generator = make_small_generator(width=8, seed=3)
    image = torch.from_numpy(smooth_image(1, H, W, seed=5))
    kp_src = torch.from_numpy(template_pose(H, W).astype(np.float32))[None]
    kp_tgt = torch.from_numpy(gesture_sequence(N_FRAMES, H, W, seed=1).astype(np.float32) + 0.37)
    valid_src = torch.ones(1, 122)
    valid_tgt = torch.ones(N_FRAMES, 122)
    valid_tgt[1, [4, 6, 105]] = 0.0            # some missing joints in one frame
    source = SourceStage(generator, geometry).eval()
    frame = FrameStage(generator, geometry).eval()
    full = FullPipeline(generator, geometry).eval()
    with torch.no_grad():
        parts, background = source(image, kp_src, valid_src)
        frames = frame(kp_tgt, valid_tgt, kp_src, valid_src, parts, background)
        y = full(image.expand(N_FRAMES, -1, -1, -1), kp_src.expand(N_FRAMES, -1, -1),
                 valid_src.expand(N_FRAMES, -1), kp_tgt, valid_tgt)
    return dict(geometry=geometry, generator=generator, frame=frame, kp_src=kp_src, valid_src=valid_src,
                kp_tgt=kp_tgt, valid_tgt=valid_tgt, parts=parts, background=background, frames=frames, y=y)


def test_stage_output_shapes(setup):
    assert setup["parts"].shape == (1, 8, 3, H, W)
    assert setup["background"].shape == (1, 3, H, W)
    assert setup["frames"].shape == (N_FRAMES, H, W, 3) and setup["frames"].dtype == torch.uint8
    assert setup["y"].shape == (N_FRAMES, 3, H, W)


def test_outputs_are_not_trivial(setup):
    """The comparisons below would be vacuous on constant frames."""
    frames = setup["frames"].to(torch.int16)
    assert int(frames.max() - frames.min()) > 20
    assert (frames[0] != frames[2]).float().mean() > 0.01   # different target poses, different frames


def test_split_equals_full_forward(setup):
    assert_same_frames(setup["frames"], to_uint8_bgr(setup["y"]), f"split vs full ({setup['geometry'].warp_mode})")


def test_frame_stage_is_batch_invariant(setup):
    frame, s = setup["frame"], setup
    with torch.no_grad():
        singles = torch.cat([frame(s["kp_tgt"][i:i + 1], s["valid_tgt"][i:i + 1], s["kp_src"], s["valid_src"],
                                   s["parts"], s["background"]) for i in range(N_FRAMES)])
    assert_same_frames(s["frames"], singles, f"batch of {N_FRAMES} vs singles ({s['geometry'].warp_mode})")


def test_missing_joints_change_the_frame(setup):
    """Frame 1 was rendered with three target joints marked missing; rendering it with them valid
    must differ (the validity input reaches the graph)."""
    frame, s = setup["frame"], setup
    with torch.no_grad():
        all_valid = frame(s["kp_tgt"][1:2], torch.ones(1, 122), s["kp_src"], s["valid_src"],
                          s["parts"], s["background"])
    assert not torch.equal(all_valid, s["frames"][1:2])


def test_to_uint8_bgr_rounds_saturates_and_keeps_channel_order():
    """(y + 1) * 127.5, rounded to nearest, saturated to [0, 255]; (B, 3, H, W) -> (B, H, W, 3) with the
    channels in the same (BGR) order."""
    levels = torch.tensor([-1.0, 1.0, -1.5, 2.0, 0.0, 10.4 / 127.5 - 1, 10.6 / 127.5 - 1, 254.7 / 127.5 - 1])
    expected = torch.tensor([0, 255, 0, 255, 128, 10, 11, 255], dtype=torch.uint8)   # 127.5 -> 128 (half to even)
    y = torch.stack([levels, levels.flip(0), torch.zeros(8)]).view(1, 3, 2, 4)     # channel 2 = mid grey
    got = to_uint8_bgr(y)
    assert got.shape == (1, 2, 4, 3) and got.dtype == torch.uint8
    assert torch.equal(got[0, ..., 0].reshape(-1), expected)
    assert torch.equal(got[0, ..., 1].reshape(-1), expected.flip(0))
    assert torch.equal(got[0, ..., 2], torch.full((2, 4), 128, dtype=torch.uint8))
