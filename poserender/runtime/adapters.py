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

A family plugs in by implementing this protocol. :class:`Pose2ImgAdapter`: ``source`` once,
``frame`` per batch. :class:`PSCAdapter`: ``source`` (I0, S0) once, then ``parsing`` (AA-Net:
target pose -> target labels) and ``frame`` (CT-Net) per batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..config import Pose2ImgConfig
from ..engines.base import Engine
from ..errors import BadFrame, UserError
from ..keypoints import OPENPOSE_TO_122, canvas_transform, read_keypoints
from ..keypoints.coco18 import BODY25_TO_COCO18, MISSING, N_COCO18
from ..keypoints.layout import N_JOINTS, N_OPENPOSE
from ..keypoints.validate import frame_problem
from .render import load_source_image, load_source_keypoints
from .sources import Coco18FileSource, Frame, FrameSource, OpenPoseFolderSource, SequenceSource

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


class _KeypointBatches:
    """What both families share: a batch of normalised (keypoints, validity) frames plus the
    identity stage's outputs is the per-frame feed; the last stage's ``frames`` is the output."""

    _identity: Optional[Feed] = None

    def prepare(self, frames: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Feed:
        if self._identity is None:
            raise RuntimeError("run_identity() must run before prepare()")
        return {"target_keypoints": np.stack([f[0] for f in frames]),
                "target_valid": np.stack([f[1] for f in frames]), **self._identity}

    def frames(self, feed: Feed) -> np.ndarray:
        return feed["frames"]


class Pose2ImgAdapter(_KeypointBatches):
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
        problem = frame_problem(xy)         # sources check too; an array source may not have
        if problem is not None:
            raise BadFrame(problem[1], kind=problem[0], frame=frame.index)
        if not valid.any():
            raise BadFrame("no person detected (no valid joint)", kind="empty", frame=frame.index)
        return canvas_transform(xy, self.config).astype(np.float32), valid.astype(np.float32)



class PSCAdapter(_KeypointBatches):
    """PSC: the ``source`` stage once per identity (I0 image, S0 parsing), then per batch the
    ``parsing`` stage (target pose -> target labels) and the ``frame`` stage (-> BGR frames).

    Accepted per-frame points, in PSC canvas pixels: the 18 COCO joints, or OpenPose BODY_25 /
    137-point rows (their COCO-18 joints are picked). A frame in which no joint is valid is bad
    (kind ``empty``), NaN/inf coordinates are bad (kind ``nan``).
    """

    family = "psc"
    identity_stages = ("source",)
    frame_stages = ("parsing", "frame")

    def __init__(self, manifest: Mapping, source_image: Path, source_parsing: Path,
                 warn: Callable[[str], None] = lambda message: None):
        from .psc_render import load_psc_image, load_psc_parsing

        height, width = (int(v) for v in manifest["canvas"])
        self.canvas_hw = (height, width)
        # read and check the identity before anything else exists (bad input -> no output)
        self._image = load_psc_image(Path(source_image), height, width, warn)
        self._labels = load_psc_parsing(Path(source_parsing), height, width, int(manifest["config"]["classes"]))
        self._identity: Optional[Feed] = None

    def open_file(self, path: Path, fps: float) -> FrameSource:
        """PSC csv (a file or a folder of them; a pose with a NaN/inf or out-of-range value is a bad
        frame, not an error), OpenPose JSON (folder or file) or .npy."""
        return Coco18FileSource(Path(path), fps)

    def run_identity(self, engines: Mapping[str, Engine]) -> None:
        self._identity = engines["source"].infer({"source_image": self._image, "source_labels": self._labels})

    def normalise(self, frame: Frame) -> Tuple[np.ndarray, np.ndarray]:
        """(18, 2) float32 canvas pixels (missing joints at -1) and (18,) float32 validity."""
        xy, valid = frame.xy, frame.valid
        if xy.shape[0] in (25, N_OPENPOSE):
            pick = list(BODY25_TO_COCO18)
            xy, valid = xy[pick], valid[pick]
        elif xy.shape[0] != N_COCO18:
            raise BadFrame(f"{xy.shape[0]} joints; expected {N_COCO18} (COCO-18), 25 (BODY_25) or {N_OPENPOSE} "
                           "(OpenPose body+face+hands)", kind="shape", frame=frame.index)
        problem = frame_problem(xy[valid])
        if problem is not None:
            raise BadFrame(problem[1], kind=problem[0], frame=frame.index)
        if not valid.any():
            raise BadFrame("no person detected (no valid joint)", kind="empty", frame=frame.index)
        xy = np.where(valid[:, None], xy, MISSING)
        return xy.astype(np.float32), valid.astype(np.float32)



def adapter_for(manifest: Mapping, source_image: Optional[Path], source_keypoints: Optional[Path],
                source_parsing: Optional[Path] = None,
                warn: Callable[[str], None] = lambda message: None) -> ModelAdapter:
    """The adapter of an exported model's family, with its identity inputs loaded and checked."""
    family = manifest.get("family", "pose2img")
    if family == "pose2img":
        if source_image is None or source_keypoints is None:
            raise UserError("a pose2img model needs --source (image) and --source-keypoints")
        if source_parsing is not None:
            raise UserError("--source-parsing is for PSC models; this is a pose2img model")
        return Pose2ImgAdapter(Pose2ImgConfig.from_dict(manifest["config"]), source_image, source_keypoints)
    if family == "psc":
        if source_image is None or source_parsing is None:
            raise UserError("a PSC model needs --source (I0 image) and --source-parsing (S0 label PNG)")
        if source_keypoints is not None:
            raise UserError("--source-keypoints is for pose2img models; a PSC model takes --source-parsing")
        return PSCAdapter(manifest, source_image, source_parsing, warn)
    raise UserError(f"the streaming renderer has no adapter for model family {family!r}; "
                    "expected pose2img or psc")
