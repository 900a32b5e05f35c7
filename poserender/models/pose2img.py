"""The Pose2Img generator and its source/frame split.

``Pose2ImgGenerator`` holds the three U-Nets under the reference's attribute names
(``unet_stageA/C/D``), so ``{'G': state_dict}`` checkpoints load strictly. Its ``forward``
has the reference ``WarpModel.forward`` signature (pre-computed heat maps, prior and
``trans_in``) and is what the parity tests and the reference-style baseline run.

For deployment the work is split by what it depends on:

* ``SourceStage`` (once per identity): limb-mask prior, source heat maps, stage A (mask
  refinement), the masked source image per limb, and stage D (background).
* ``FrameStage`` (per target frame): target heat maps, limb transforms, warps, stage C,
  fusion with the background, and conversion to uint8 BGR, ``(B, H, W, 3)``.

``frame(source(x))`` equals the full forward (tests prove it).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Tuple

import torch
from torch import nn

from ..config import N_CLUSTERS, N_LIMBS, Pose2ImgConfig
from .preprocess import ClusterHeatmaps, LimbMaskPrior, LimbTransforms, transforms_from_reference_layout
from .unet import ResUnetGenerator
from .warp import LimbWarp


@dataclasses.dataclass(frozen=True)
class Pose2ImgGeometry:
    """Everything the in-graph pre/post-processing needs besides the weights."""

    height: int
    width: int
    kp_var_root: Tuple[float, ...]
    mask_sigma_perp: Tuple[float, ...]
    warp_mode: str = "legacy"

    @classmethod
    def from_config(cls, config: Pose2ImgConfig, warp_mode: str = "legacy") -> "Pose2ImgGeometry":
        h, w = config.canvas_hw
        return cls(h, w, tuple(config.kp_var_root), tuple(config.mask_sigma_perp), warp_mode)


class Pose2ImgGenerator(nn.Module):
    """Stages A (mask), C (foreground) and D (background); ``width`` 64 is the published size."""

    def __init__(self, n_joints: int = N_CLUSTERS, n_limbs: int = N_LIMBS, width: int = 64):
        super().__init__()
        self.n_joints, self.n_limbs, self.width = n_joints, n_limbs, width
        self.unet_stageA = ResUnetGenerator(n_joints + 3, n_limbs + 1, width)
        self.unet_stageC = ResUnetGenerator(3 * n_limbs + n_joints, 4, width)
        self.unet_stageD = ResUnetGenerator(4 + n_joints, 3, width)

    # -- pieces shared by the full forward and the stages ---------------------------------
    def source_mask(self, src_in: torch.Tensor, pose_src: torch.Tensor, mask_prior: torch.Tensor) -> torch.Tensor:
        return torch.softmax(mask_prior + self.unet_stageA(torch.cat([src_in, pose_src], 1)), dim=1)

    def background(self, src_in: torch.Tensor, src_mask: torch.Tensor, pose_src: torch.Tensor) -> torch.Tensor:
        bg_mask = src_mask[:, :1]
        return torch.tanh(self.unet_stageD(torch.cat([src_in * bg_mask, bg_mask, pose_src], 1)))

    def foreground(self, warped: torch.Tensor, pose_tgt: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out = self.unet_stageC(torch.cat([warped, pose_tgt], 1))
        return torch.tanh(out[:, :3]), torch.sigmoid(out[:, 3:4])

    def forward(self, src_in, pose_src, pose_tgt, mask_prior, trans_in, warp_mode: str = "legacy"):
        """The reference ``WarpModel.forward``: y in [-1, 1], BGR, (B, 3, H, W)."""
        return self.forward_intermediates(src_in, pose_src, pose_tgt, mask_prior, trans_in, warp_mode)["y"]

    def forward_intermediates(self, src_in, pose_src, pose_tgt, mask_prior, trans_in,
                              warp_mode: str = "legacy") -> Dict[str, torch.Tensor]:
        H, W = src_in.shape[-2:]
        src_mask = self.source_mask(src_in, pose_src, mask_prior)
        parts = src_in.unsqueeze(1) * src_mask[:, 1:].unsqueeze(2)     # (B, K, 3, H, W)
        warped = _cached_warp(int(H), int(W), warp_mode, str(src_in.device))(
            parts, transforms_from_reference_layout(trans_in))
        fg, fg_mask = self.foreground(warped, pose_tgt)
        bg = self.background(src_in, src_mask, pose_src)
        y = fg * fg_mask + bg * (1 - fg_mask)
        return {"src_mask": src_mask, "warped_stack": torch.cat([src_in * src_mask[:, :1], warped], 1),
                "fg_tgt": fg, "fg_mask": fg_mask.expand(-1, 3, -1, -1), "bg_tgt": bg, "y": y}


@functools.lru_cache(maxsize=8)
def _cached_warp(height: int, width: int, mode: str, device: str) -> LimbWarp:
    """The full forward's warp module (its grid and corner tables), built once per canvas."""
    return LimbWarp(height, width, mode).to(device)


def to_uint8_bgr(y: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, ``clip(round((y + 1) * 127.5))``.

    Same as the reference's ``((y + 1) / 2) * 255`` written by ``cv2.imwrite`` (round to
    nearest, saturate). Channels stay BGR: the networks work in OpenCV order. The cast comes last:
    TensorRT accepts a uint8 network output only straight from a Cast (NVIDIA/TensorRT#3985).
    """
    return torch.clamp(torch.round((y + 1.0) * 127.5), 0, 255).permute(0, 2, 3, 1).to(torch.uint8)


class SourceStage(nn.Module):
    """Per identity: ``source_image (S,3,H,W) [-1,1] BGR``, ``source_keypoints (S,122,2)``,
    ``source_valid (S,122)`` -> ``source_parts (S,8,3,H,W)``, ``background (S,3,H,W)``."""

    def __init__(self, generator: Pose2ImgGenerator, geometry: Pose2ImgGeometry):
        super().__init__()
        self.generator = generator
        self.heatmaps = ClusterHeatmaps(geometry.height, geometry.width, geometry.kp_var_root)
        self.prior = LimbMaskPrior(geometry.height, geometry.width, geometry.mask_sigma_perp)

    def forward(self, source_image, source_keypoints, source_valid):
        pose_src = self.heatmaps(source_keypoints, source_valid)
        mask_prior = self.prior(source_keypoints, source_valid)
        src_mask = self.generator.source_mask(source_image, pose_src, mask_prior)
        parts = source_image.unsqueeze(1) * src_mask[:, 1:].unsqueeze(2)
        background = self.generator.background(source_image, src_mask, pose_src)
        return parts, background


class FrameStage(nn.Module):
    """Per frame: target keypoints (B,122,2) + validity (B,122), with the identity's
    source keypoints/validity (1,122,...), source_parts (1,8,3,H,W) and background (1,3,H,W)
    -> frames (B, H, W, 3) uint8 BGR."""

    def __init__(self, generator: Pose2ImgGenerator, geometry: Pose2ImgGeometry):
        super().__init__()
        self.generator = generator
        self.heatmaps = ClusterHeatmaps(geometry.height, geometry.width, geometry.kp_var_root)
        self.transforms = LimbTransforms()
        self.warp = LimbWarp(geometry.height, geometry.width, geometry.warp_mode)

    def forward(self, target_keypoints, target_valid, source_keypoints, source_valid, source_parts, background):
        pose_tgt = self.heatmaps(target_keypoints, target_valid)
        transforms = self.transforms(source_keypoints, source_valid, target_keypoints, target_valid)
        warped = self.warp(source_parts, transforms)
        fg, fg_mask = self.generator.foreground(warped, pose_tgt)
        y = fg * fg_mask + background * (1 - fg_mask)
        return to_uint8_bgr(y)


class FullPipeline(nn.Module):
    """Keypoints to y the way the reference runs it: every net, every frame (batch of
    sources and targets of equal size). Used as the baseline and to check the split."""

    def __init__(self, generator: Pose2ImgGenerator, geometry: Pose2ImgGeometry):
        super().__init__()
        self.generator = generator
        self.geometry = geometry
        self.heatmaps = ClusterHeatmaps(geometry.height, geometry.width, geometry.kp_var_root)
        self.prior = LimbMaskPrior(geometry.height, geometry.width, geometry.mask_sigma_perp)
        self.transforms = LimbTransforms()

    def forward(self, source_image, source_keypoints, source_valid, target_keypoints, target_valid):
        pose_src = self.heatmaps(source_keypoints, source_valid)
        pose_tgt = self.heatmaps(target_keypoints, target_valid)
        prior = self.prior(source_keypoints, source_valid)
        trans = self.transforms(source_keypoints, source_valid, target_keypoints, target_valid)
        trans_in = trans.permute(0, 2, 3, 1)
        return self.generator(source_image, pose_src, pose_tgt, prior, trans_in, self.geometry.warp_mode)
