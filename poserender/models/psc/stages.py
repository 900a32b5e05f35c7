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

from typing import List, Tuple

import torch
from torch import nn

from ...specs import StageSpec, TensorSpec
from .aa_net import AANet
from .ct_net import SOURCE_FEATURES, CTNet
from .ops import SIGMA, PoseHeatmaps, argmax_labels, extract_peaks, one_hot, to_uint8_bgr
from .pm_net import PMNet

JOINTS = 18
CLASSES = 7
STAGE_NAMES = ("source", "interp", "parsing", "frame")


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


def psc_stages(pm_net: PMNet, aa_net: AANet, ct_net: CTNet, height: int = 256, width: int = 256,
               sigma: float = SIGMA) -> List[Tuple[StageSpec, nn.Module]]:
    """The four stages paired with their StageSpecs, in manifest order, eval mode."""
    modules = {"source": SourceStage(aa_net, ct_net), "interp": InterpStage(pm_net, height, width, sigma),
               "parsing": ParsingStage(aa_net, height, width, sigma), "frame": FrameStage(ct_net)}
    return [(spec, modules[spec.name].eval()) for spec in psc_stage_specs(height, width)]


def psc_stage_specs(height: int = 256, width: int = 256, ngf: int = 16) -> List[StageSpec]:
    if height % 16 or width % 16:
        raise ValueError(f"PSC canvas {height}x{width}: both sides must be multiples of 16")
    q, e, s = (height // 4, width // 4), (height // 8, width // 8), (height // 16, width // 16)
    features = (TensorSpec("parsing_code", "float32", ("batch", ngf * 16) + s, "AA-Net: normalised S0 code"),
                TensorSpec("s0_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: S0 features"),
                TensorSpec("s0_enc_3", "float32", ("batch", ngf * 8) + e, "CT-Net: S0 features"),
                TensorSpec("s0_enc_4", "float32", ("batch", ngf * 16) + s, "CT-Net: S0 features"),
                TensorSpec("body_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: body-masked I0 features"),
                TensorSpec("cloth_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: cloth-masked I0 features"),
                TensorSpec("cloth_grad_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: Sobel-branch features"),
                TensorSpec("style_code", "float32", ("batch", CLASSES, ngf * 4), "CT-Net: per-label style code"))
    one = lambda t: TensorSpec(t.name, t.dtype, (1,) + t.shape[1:], t.doc)  # noqa: E731
    kp = lambda name: TensorSpec(name, "float32", ("batch", JOINTS, 2), "COCO-18 (x, y) canvas pixels")  # noqa: E731
    kv = lambda name: TensorSpec(name, "float32", ("batch", JOINTS), "1 = joint present, 0 = missing")  # noqa: E731
    key = lambda t: TensorSpec(t.name, t.dtype, (1,) + t.shape[1:], t.doc + " (key pose)")  # noqa: E731
    labels = TensorSpec("target_labels", "uint8", ("batch", height, width), f"parsing labels 0..{CLASSES - 1}")
    return [
        StageSpec("source", inputs=(TensorSpec("source_image", "float32", ("batch", 3, height, width), "RGB in [-1, 1]"),
                                    TensorSpec("source_labels", "uint8", ("batch", height, width),
                                               f"S0 parsing labels 0..{CLASSES - 1}")),
                  outputs=features, min_batch=1, opt_batch=1, max_batch=4, file="source.onnx",
                  doc="once per identity: S0 one-hot, AA-Net parsing encoder, CT-Net source encoders, style code"),
        StageSpec("interp", inputs=(key(kp("pose_a")), key(kv("valid_a")), key(kp("pose_b")), key(kv("valid_b")),
                                    TensorSpec("t", "float32", ("batch",), "interpolation parameter, 0 = A, 1 = B")),
                  outputs=(kp("keypoints"), kv("valid")), min_batch=1, opt_batch=4, max_batch=64, file="interp.onnx",
                  doc="PM-Net between two key poses: heat maps, PM-Net, per-joint peak (> 0.5)"),
        StageSpec("parsing", inputs=(kp("target_keypoints"), kv("target_valid"), one(features[0])),
                  outputs=(labels,), min_batch=1, opt_batch=4, max_batch=16, file="parsing.onnx",
                  doc="per frame: peak snap, heat maps (sigma 100), AA-Net, argmax"),
        StageSpec("frame", inputs=(labels,) + tuple(one(f) for f in features[1:]),
                  outputs=(TensorSpec("frames", "uint8", ("batch", height, width, 3), "BGR"),),
                  min_batch=1, opt_batch=4, max_batch=16, file="frame.onnx",
                  doc="per frame: one-hot, CT-Net flows, warps, decoders, to uint8 BGR"),
    ]
