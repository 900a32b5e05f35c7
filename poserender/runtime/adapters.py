"""Model adapters: what the streaming pipeline needs to know about a model, and nothing more.

The pipeline (pipeline.py) is family-blind. It runs a model through this small protocol, which
each family implements in its own module (poserender/families/):

1. ``identity_stages`` run once per identity (the source image), before the stream starts:
   ``run_identity(engines)`` keeps whatever the per-frame stages need from them;
2. ``normalise(frame)`` turns one source :class:`Frame` into the model's per-frame input on its
   canvas (or raises :class:`BadFrame`), on the host, one frame at a time;
3. ``prepare(frames)`` stacks a batch of normalised frames into the feed of the first per-frame
   stage (host side, numpy);
4. ``frame_stages`` run in order on each batch; each stage's outputs are merged into the feed
   of the next by tensor name;
5. ``frames(feed)`` returns the finished frames: uint8 BGR (B, H, W, 3).

``open_file(path, fps)`` gives the family's reader for keypoint files (live inputs, stdin and
TCP, are the pipeline's own). :class:`KeypointBatches` is the common implementation of 1, 3 and 5
for families whose identity stages take the adapter's ``identity_feed()`` and whose frames are
(keypoints, validity) pairs.
"""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Dict, Mapping, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..engines.base import Engine
from .sources import Frame, FrameSource

Feed = Dict[str, np.ndarray]


class ModelAdapter(Protocol):
    family: str
    identity_stages: Tuple[str, ...]
    frame_stages: Tuple[str, ...]
    canvas_hw: Tuple[int, int]

    def open_file(self, path: Path, fps: float) -> FrameSource:
        """A source for this family's keypoint files (live inputs are handled by the pipeline)."""

    def identity_feed(self) -> Feed:
        """The identity stages' inputs (the identity as read and checked)."""

    def run_identity(self, engines: Mapping[str, Engine]) -> None:
        """Run the identity stages (engines already active) and keep their outputs."""

    def normalise(self, frame: Frame):
        """One good frame -> the model's per-frame input; raise BadFrame when it is unusable."""

    def prepare(self, frames: Sequence) -> Feed:
        """A batch of normalised frames -> the first frame stage's feed."""

    def frames(self, feed: Feed) -> np.ndarray:
        """The last stage's outputs -> uint8 BGR frames (B, H, W, 3)."""


class KeypointBatches(abc.ABC):
    """The identity stages run in order on ``identity_feed()`` (each also seeing the outputs of the
    ones before it); ``keep_identity`` keeps their outputs (by default all of them); a batch of
    normalised (keypoints, validity) frames plus those outputs is the first frame stage's feed;
    the last stage's ``frames`` is the output."""

    identity_stages: Tuple[str, ...] = ()
    _identity: Optional[Feed] = None

    @abc.abstractmethod
    def identity_feed(self) -> Feed:
        """Each family's adapter reads and checks its own identity inputs."""

    def keep_identity(self, outputs: Mapping[str, np.ndarray]) -> None:
        self._identity = dict(outputs)

    def run_identity(self, engines: Mapping[str, Engine]) -> None:
        feed, outputs = self.identity_feed(), {}
        for name in self.identity_stages:
            outputs.update(engines[name].infer({**feed, **outputs}))
        self.keep_identity(outputs)

    def frame_feed(self, frames: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Feed:
        """The batch's own tensors (without the identity's)."""
        return {"target_keypoints": np.stack([f[0] for f in frames]), "target_valid": np.stack([f[1] for f in frames])}

    def prepare(self, frames: Sequence[Tuple[np.ndarray, np.ndarray]]) -> Feed:
        if self._identity is None:
            raise RuntimeError("run_identity() must run before prepare()")
        return {**self.frame_feed(frames), **self._identity}

    def frames(self, feed: Feed) -> np.ndarray:
        return feed["frames"]
