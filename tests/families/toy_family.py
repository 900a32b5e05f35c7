"""A toy third model family, defined only here: the proof that a family is one module plus its
registration. A checkpoint is a folder holding ``toy_net.pt``; the identity is one image; a frame
is 5 joints in canvas pixels; ``source`` turns the image into a small feature map once, ``frame``
paints soft blobs at the joints, mixes in the features and returns uint8 BGR frames."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np

from poserender.errors import BadFrame, UserError
from poserender.families.base import ExportPlan, ExportStage, Family, IdentityInput
from poserender.images import read_image
from poserender.keypoints.validate import frame_problem
from poserender.runtime.adapters import KeypointBatches
from poserender.runtime.sources import ArraySource
from poserender.specs import StageSpec, TensorSpec

SIZE, JOINTS, CHANNELS = 32, 5, 4
WEIGHTS = "toy_net.pt"


def stage_specs():
    features = TensorSpec("features", "float32", ("batch", CHANNELS, SIZE // 4, SIZE // 4), "image features")
    return [StageSpec("source", (TensorSpec("source_image", "float32", ("batch", 3, SIZE, SIZE), "BGR in [-1, 1]"),),
                      (features,), 1, 1, 2, "source.onnx", "once per identity"),
            StageSpec("frame", (TensorSpec("target_keypoints", "float32", ("batch", JOINTS, 2), "canvas px"),
                                TensorSpec("target_valid", "float32", ("batch", JOINTS), "1 = present"),
                                TensorSpec("features", "float32", (1, CHANNELS, SIZE // 4, SIZE // 4), "")),
                      (TensorSpec("frames", "uint8", ("batch", SIZE, SIZE, 3), "BGR"),), 1, 2, 8, "frame.onnx",
                      "per frame: blobs at the joints, mixed with the features")]


def modules(state=None):
    import torch
    from torch import nn

    class Source(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, CHANNELS, 4, stride=4)

        def forward(self, source_image):
            return torch.tanh(self.conv(source_image))

    class Frame(nn.Module):
        def __init__(self):
            super().__init__()
            self.mix = nn.Conv2d(CHANNELS + 1, 3, 1)
            grid = torch.arange(SIZE, dtype=torch.float32)
            self.register_buffer("ys", grid.view(1, 1, SIZE, 1))
            self.register_buffer("xs", grid.view(1, 1, 1, SIZE))

        def forward(self, target_keypoints, target_valid, features):
            x = target_keypoints[..., 0].unsqueeze(-1).unsqueeze(-1)
            y = target_keypoints[..., 1].unsqueeze(-1).unsqueeze(-1)
            blobs = torch.exp(-((self.xs - x) ** 2 + (self.ys - y) ** 2) / 8.0) * target_valid[..., None, None]
            heat = blobs.sum(1, keepdim=True)
            up = nn.functional.interpolate(features, scale_factor=4.0, mode="nearest")
            y = torch.tanh(self.mix(torch.cat([up.expand(heat.shape[0], -1, -1, -1), heat], 1)))
            return torch.clamp(torch.round((y + 1) * 127.5), 0, 255).permute(0, 2, 3, 1).to(torch.uint8)

    source, frame = Source().eval(), Frame().eval()
    if state is not None:
        source.load_state_dict(state["source"])
        frame.load_state_dict(state["frame"])
    return {"source": source, "frame": frame}


def write_checkpoint(folder: Path, seed: int = 0) -> Path:
    import torch

    torch.manual_seed(seed)
    nets = modules()
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({name: net.state_dict() for name, net in nets.items()}, folder / WEIGHTS)
    return folder


def _load(folder: Path):
    import torch

    return modules(torch.load(Path(folder) / WEIGHTS, weights_only=True))


def _verification_inputs():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    keypoints = rng.uniform(4, SIZE - 4, (2, JOINTS, 2)).astype(np.float32)
    return {"source_image": image, "target_keypoints": keypoints, "target_valid": np.ones((2, JOINTS), np.float32)}


class ToyAdapter(KeypointBatches):
    family = "toy"
    identity_stages = ("source",)
    frame_stages = ("frame",)
    canvas_hw = (SIZE, SIZE)

    def __init__(self, source: Path):
        image = cv2.resize(read_image(source, cv2.IMREAD_COLOR, "source image"), (SIZE, SIZE))
        self._image = np.ascontiguousarray((image.astype(np.float32) / 127.5 - 1).transpose(2, 0, 1)[None])

    def identity_feed(self):
        return {"source_image": self._image}

    def open_file(self, path: Path, fps: float):
        poses = np.load(path, allow_pickle=False)
        if poses.ndim != 3 or poses.shape[1:] != (JOINTS, 2):
            raise UserError(f"array has shape {poses.shape}; expected (T, {JOINTS}, 2)", path)
        return ArraySource(poses, fps, length=len(poses), description=str(path), valid=np.ones(poses.shape[:2], bool))

    def normalise(self, frame):
        if frame.xy.shape != (JOINTS, 2):
            raise BadFrame(f"{frame.xy.shape[0]} joints; expected {JOINTS}", kind="shape", frame=frame.index)
        problem = frame_problem(frame.xy)
        if problem is not None:
            raise BadFrame(problem[1], kind=problem[0], frame=frame.index)
        return frame.xy.astype(np.float32), frame.valid.astype(np.float32)


class ToyFamily(Family):
    name = "toy"
    identity_inputs = (IdentityInput("source", "image"),)
    identity_stages = ("source",)
    frame_stages = ("frame",)

    def is_checkpoint(self, path: Path) -> bool:
        return Path(path).is_dir() and (Path(path) / WEIGHTS).is_file()

    def export_plan(self, checkpoint: Path, options: Mapping[str, Any], log) -> ExportPlan:
        nets, inputs = _load(checkpoint), _verification_inputs()
        source, frame = stage_specs()
        stages = [ExportStage(source, nets["source"], nets["source"], lambda outputs: {"source_image": inputs["source_image"]}),
                  ExportStage(frame, nets["frame"], nets["frame"],
                              lambda outputs: {"target_keypoints": inputs["target_keypoints"],
                                               "target_valid": inputs["target_valid"], **outputs["source"]})]
        return ExportPlan(stages, {"canvas": [SIZE, SIZE], "precision": "fp32", "config": {"joints": JOINTS},
                                   "checkpoint": {"path": str(Path(checkpoint).resolve())}})

    def adapter(self, manifest, identity, warn=lambda message: None):
        return ToyAdapter(identity["source"])

    def torch_stage(self, manifest, stage_name: str):
        return _load(Path(manifest["checkpoint"]["path"]))[stage_name]

    def verification_inputs(self, manifest):
        return _verification_inputs()
