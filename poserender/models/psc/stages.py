"""PSC as deployment stages, each one ONNX graph with its pre/post-processing inside.

    source  (once per identity)  I0 + S0 labels -> AA-Net parsing code + CT-Net source features
    interp  (interpolation only) key poses A, B + t (B,) -> PM-Net -> peaks -> keypoints (B, 18, 2)
    parsing (per frame)          keypoints -> peak snap -> heat maps -> AA-Net -> labels (B, H, W) uint8
    frame   (per frame)          labels -> one-hot -> CT-Net -> frames (B, H, W, 3) uint8 BGR

Between stages only keypoints (~150 B) or a label map (H x W bytes) travel per frame. The
parsing stage re-extracts peaks of every pose as the reference does (for t = 1 it runs
joint2transfer on P1's own maps), so interp output and raw poses take the same path.
``frame(parsing(...), source(...))`` equals the reference-signature forwards (tests prove it).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from .aa_net import AANet
from .ct_net import SOURCE_FEATURES, CTNet
from .ops import SIGMA, PoseHeatmaps, argmax_labels, extract_peaks, one_hot, to_uint8_bgr
from .pm_net import PMNet

CLASSES = 7


class SourceStage(nn.Module):
    """(1, 3, H, W) RGB [-1, 1] + (1, H, W) uint8 labels -> parsing_code + CT-Net source features."""

    def __init__(self, aa_net: AANet, ct_net: CTNet, classes: int = CLASSES):
        super().__init__()
        self.aa_net, self.ct_net, self.classes = aa_net, ct_net, classes

    def forward(self, source_image: torch.Tensor, source_labels: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        parsing = one_hot(source_labels, self.classes)
        features = self.ct_net.encode_source(parsing, source_image)
        return (self.aa_net.encode_parsing(parsing),) + tuple(features[name] for name in SOURCE_FEATURES)


class InterpStage(nn.Module):
    """Key poses A and B (1, 18, 2) + validity + t (B,) -> PM-Net -> peaks: keypoints (B, 18, 2), valid (B, 18).
    Key-pose features are computed once per call and broadcast over the t values."""

    def __init__(self, pm_net: PMNet, height: int, width: int, sigma: float = SIGMA):
        super().__init__()
        self.pm_net = pm_net
        self.heatmaps = PoseHeatmaps(height, width, sigma)

    def pose_maps(self, pose_a, valid_a, pose_b, valid_b, t) -> torch.Tensor:
        """PM-Net's output heat maps (B, 18, H, W) before peak extraction."""
        features_a = self.pm_net.key_features(self.heatmaps(pose_a, valid_a))
        features_b = self.pm_net.key_features(self.heatmaps(pose_b, valid_b))
        return self.pm_net.interpolate(features_a, features_b, t)

    def forward(self, pose_a, valid_a, pose_b, valid_b, t) -> Tuple[torch.Tensor, torch.Tensor]:
        return extract_peaks(self.pose_maps(pose_a, valid_a, pose_b, valid_b, t))


class ParsingStage(nn.Module):
    """Target keypoints (B, 18, 2) + validity (B, 18) + parsing code -> target labels (B, H, W) uint8."""

    def __init__(self, aa_net: AANet, height: int, width: int, sigma: float = SIGMA):
        super().__init__()
        self.aa_net = aa_net
        self.heatmaps = PoseHeatmaps(height, width, sigma)

    def probabilities(self, target_keypoints, target_valid, parsing_code) -> torch.Tensor:
        keypoints, valid = self.heatmaps.snap(target_keypoints, target_valid)
        return self.aa_net.decode(parsing_code, self.heatmaps(keypoints, valid))

    def forward(self, target_keypoints, target_valid, parsing_code) -> torch.Tensor:
        return argmax_labels(self.probabilities(target_keypoints, target_valid, parsing_code))


class FrameStage(nn.Module):
    """Target labels (B, H, W) uint8 + CT-Net source features -> frames (B, H, W, 3) uint8 BGR."""

    def __init__(self, ct_net: CTNet, classes: int = CLASSES):
        super().__init__()
        self.ct_net, self.classes = ct_net, classes

    def forward(self, target_labels: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        source = dict(zip(SOURCE_FEATURES, features))
        return to_uint8_bgr(self.ct_net.decode(source, one_hot(target_labels, self.classes))["image"])


def psc_modules(pm_net: PMNet, aa_net: AANet, ct_net: CTNet, height: int = 256, width: int = 256,
                sigma: float = SIGMA) -> Dict[str, nn.Module]:
    """The four stage modules by name (their StageSpecs are the family's: families.psc.stage_specs), eval mode."""
    modules = {"source": SourceStage(aa_net, ct_net), "interp": InterpStage(pm_net, height, width, sigma),
               "parsing": ParsingStage(aa_net, height, width, sigma), "frame": FrameStage(ct_net)}
    return {name: module.eval() for name, module in modules.items()}
