"""Model adapters: what the streaming pipeline needs to know about a model family.

The pipeline (pipeline.py) is family-agnostic. It runs a model through this small protocol:

1. ``identity_stages`` run once per identity (the source image), before the stream starts:
   ``run_identity(engines)`` keeps whatever the per-frame stages need from them;
2. ``normalise(frame)`` turns one source :class:`Frame` into the model's per-frame input on its
   canvas (or raises :class:`BadFrame`), on the host, one frame at a time;
3. ``prepare(frames)`` stacks a batch of normalised frames into the feed of the first per-frame
   stage (host side, numpy);
4. ``frame_stages`` run in order on each batch; each stage's outputs are merged into the feed
   of the next by tensor name;
5. ``frames(feed)`` returns the finished frames: uint8 BGR (B, H, W, 3).

A family plugs in by implementing this protocol (the PSC adapter: AA-Net/CT-Net as frame
stages, its I0/S0/P0 inputs in ``run_identity``). :class:`Pose2ImgAdapter` is the Pose2Img one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..config import Pose2ImgConfig
from ..engines.base import Engine
from ..errors import BadFrame, UserError
from ..keypoints import OPENPOSE_TO_122, canvas_transform, read_keypoints
from ..keypoints.layout import N_JOINTS, N_OPENPOSE
from .render import load_source_image, load_source_keypoints
from .sources import Frame, FrameSource, OpenPoseFolderSource, SequenceSource

Feed = Dict[str, np.ndarray]
_OPENPOSE_MAP = np.asarray(OPENPOSE_TO_122)


class ModelAdapter(Protocol):
    family: str
    identity_stages: Tuple[str, ...]
    frame_stages: Tuple[str, ...]
    canvas_hw: Tuple[int, int]

    def open_file(self, path: Path, fps: float) -> FrameSource:
        """A source for this family's keypoint files (live inputs are handled by the pipeline)."""

    def run_identity(self, engines: Mapping[str, Engine]) -> None:
        """Run the identity stages (engines already active) and keep their outputs."""

    def normalise(self, frame: Frame):
        """One good frame -> the model's per-frame input; raise BadFrame when it is unusable."""

    def prepare(self, frames: Sequence) -> Feed:
        """A batch of normalised frames -> the first frame stage's feed."""

    def frames(self, feed: Feed) -> np.ndarray:
        """The last stage's outputs -> uint8 BGR frames (B, H, W, 3)."""


class Pose2ImgAdapter:
    """Pose2Img: the ``source`` stage once per identity, the ``frame`` stage per batch.

    Accepted per-frame points: the 137 OpenPose points (body, face, hands; mapped to the 122
    used) or the 122-point model layout, in source-image pixels; they are moved onto the canvas
    with the config's crop biases and scale. A frame in which no joint is valid is bad
    (kind ``empty``: OpenPose found nobody).
    """

    family = "pose2img"
    identity_stages = ("source",)
    frame_stages = ("frame",)

    def __init__(self, config: Pose2ImgConfig, source_image: Path, source_keypoints: Path):
        self.config = config
        self.canvas_hw = tuple(config.canvas_hw)
        # read and check the identity before anything else exists (bad input -> no output)
        self._image = load_source_image(source_image, config)
        self._source_xy, self._source_valid = load_source_keypoints(source_keypoints, config)
        self._identity: Optional[Feed] = None

    def open_file(self, path: Path, fps: float) -> FrameSource:
        """A folder of OpenPose JSON is parsed file by file; .npz/.npy/.json are read whole."""
        if Path(path).is_dir():
            return OpenPoseFolderSource(Path(path), fps)
        return SequenceSource(read_keypoints(path, self.config), fps)

    def run_identity(self, engines: Mapping[str, Engine]) -> None:
        outputs = engines["source"].infer({"source_image": self._image, "source_keypoints": self._source_xy,
                                           "source_valid": self._source_valid})
        self._identity = {"source_keypoints": self._source_xy, "source_valid": self._source_valid, **outputs}

    def normalise(self, frame: Frame) -> Tuple[np.ndarray, np.ndarray]:
        """(122, 2) float32 canvas pixels and (122,) float32 validity."""
        xy, valid = frame.xy, frame.valid
        if xy.shape[0] == N_OPENPOSE:
            xy, valid = xy[_OPENPOSE_MAP], valid[_OPENPOSE_MAP]
        elif xy.shape[0] != N_JOINTS:
            raise BadFrame(f"{xy.shape[0]} joints; expected {N_OPENPOSE} (OpenPose body+face+hands) "
                           f"or {N_JOINTS}", kind="shape", frame=frame.index)
        if not np.isfinite(xy).all():
            raise BadFrame(f"{int((~np.isfinite(xy)).sum())} NaN/inf coordinates", kind="nan", frame=frame.index)
        if not valid.any():
            raise BadFrame("no person detected (no valid joint)", kind="empty", frame=frame.index)
        return canvas_transform(xy, self.config).astype(np.float32), valid.astype(np.float32)

    def prepare(self, frames: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Feed:
        if self._identity is None:
            raise RuntimeError("run_identity() must run before prepare()")
        return {"target_keypoints": np.stack([f[0] for f in frames]),
                "target_valid": np.stack([f[1] for f in frames]), **self._identity}

    def frames(self, feed: Feed) -> np.ndarray:
        return feed["frames"]


def adapter_for(manifest: Mapping, source_image: Optional[Path], source_keypoints: Optional[Path]) -> ModelAdapter:
    """The adapter of an exported model's family, with its identity inputs loaded and checked."""
    family = manifest.get("family", "pose2img")
    if family == "pose2img":
        if source_image is None or source_keypoints is None:
            raise UserError("a pose2img model needs --source (image) and --source-keypoints")
        return Pose2ImgAdapter(Pose2ImgConfig.from_dict(manifest["config"]), source_image, source_keypoints)
    raise UserError(f"the streaming renderer has no adapter for model family {family!r} yet; "
                    "expected pose2img")
