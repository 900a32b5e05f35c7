"""What the cells of one model feed it, for any family, read the way ``render`` reads it.

Given files (``--source`` and the family's other identity inputs, ``--keypoints``): the family
checks the identity (``Family.check_identity``) and builds its runtime adapter
(``Family.adapter``); the keypoint file is read by the adapter's reader (``open_file``) and each
frame normalised by it (``normalise``), exactly as a stream does. Without files: the family's
verification inputs (``export.verify.stage_feeds``: a smooth image, template poses, ...) held by
:class:`FeedAdapter`, an adapter over ready tensors, so the cells run the same code either way:
``adapter.run_identity(engines)``, ``adapter.prepare(frames)``, the per-frame stages, and
``adapter.frames(feed)`` (the adapter protocol of runtime/adapters.py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .. import families
from ..errors import BadFrame, UserError
from ..manifest import stage_specs
from ..runtime.adapters import KeypointBatches
from ..runtime.sources import ArraySource, Frame, FrameSource

#: target frames of the default inputs when --frames is not given
DEFAULT_FRAMES = 64
#: frame rate of the keypoint files read for the synchronous cells (it does not change the frames)
READ_FPS = 25.0
SYNTHETIC = "synthetic: the family's verification inputs (export.verify.stage_feeds)"


@dataclasses.dataclass
class BenchInputs:
    """One identity and its target frames, ready for any cell of one model.

    ``adapter`` has the identity read; ``frames`` are the target frames as ``adapter.normalise``
    returned them (``adapter.prepare`` stacks any of them into a batch). A stream cell makes a
    fresh adapter with ``new_adapter()`` (a stream reads its identity, as ``render`` does) and
    reads ``keypoints`` (None: the frames stream from memory, :meth:`stream_source`)."""

    adapter: Any
    frames: List[Any]
    described: Dict[str, Any]
    new_adapter: Callable[[], Any]
    keypoints: Optional[Path] = None
    max_frames: Optional[int] = None

    def stream_source(self, fps: float) -> Optional[FrameSource]:
        """The frames a stream renders when there is no keypoint file: each carries only its
        index, and the :class:`FeedAdapter` of ``new_adapter()`` looks its tensors up."""
        if self.keypoints is not None:
            return None
        n = len(self.frames)
        return ArraySource(np.zeros((n, 0, 2)), fps, length=n, description="the bench inputs, in memory",
                           valid=np.zeros((n, 0), dtype=bool))


def load_inputs(manifest: Mapping[str, Any], identity: Optional[Mapping[str, Optional[Path]]] = None,
                keypoints: Optional[Path] = None, frames: Optional[int] = None,
                warn: Callable[[str], None] = lambda message: None) -> BenchInputs:
    """The user's files when given (the identity inputs and ``keypoints`` together, as ``render``
    takes them), else the family's verification inputs; ``frames``: the first N usable frames."""
    family = families.of(manifest)
    identity = dict(identity or {})
    given = [key for key, value in identity.items() if value is not None]
    if keypoints is None and not given:
        return default_inputs(manifest, frames)
    if keypoints is None:
        options = ", ".join(i.option for i in family.identity_inputs)
        raise UserError(f"--keypoints (the target poses) goes with {options}: bench reads its inputs the way render "
                        "does; give none of them to use the model family's verification inputs")
    checked = family.check_identity(identity, families.others(family))

    def new_adapter():
        return family.adapter(manifest, checked, warn)

    adapter = new_adapter()
    good, bad = read_frames(adapter, Path(keypoints))
    if frames:
        good = good[:frames]
    if not good:
        raise UserError("no usable target frame", keypoints)
    described = {**{key: str(path) for key, path in checked.items()},
                 "targets": f"{keypoints} ({bad} bad frames left out)", "target_frames": len(good)}
    return BenchInputs(adapter, good, described, new_adapter, Path(keypoints), frames)


def read_frames(adapter, path: Path) -> Tuple[List[Any], int]:
    """(normalised frames, number of bad ones) of a keypoint file, read and normalised by the
    family's adapter as a stream reads it; bad frames are left out and counted."""
    source = adapter.open_file(path, READ_FPS)
    good: List[Any] = []
    bad = 0
    try:
        for frame in source:
            if frame.bad is not None:
                bad += 1
                continue
            try:
                good.append(adapter.normalise(frame))
            except BadFrame:
                bad += 1
    finally:
        source.close()
    return good, bad


def default_inputs(manifest: Mapping[str, Any], frames: Optional[int] = None) -> BenchInputs:
    """The family's verification inputs as one identity and ``frames`` target frames (its
    distinct verification frames, repeated)."""
    from ..export.verify import stage_feeds

    family = families.of(manifest)
    specs = stage_specs(manifest)
    index = {spec.name: i for i, spec in enumerate(specs)}
    identity: Dict[str, np.ndarray] = {}
    per_frame: Dict[str, np.ndarray] = {}
    constants: Dict[str, np.ndarray] = {}
    known = set()       # outputs of the stages before (the pipeline feeds them) and inputs already taken
    for name in family.identity_stages + family.frame_stages:
        spec, feed = specs[index[name]], stage_feeds(manifest, index[name], {})
        for tensor in spec.inputs:
            if tensor.name in known:
                continue
            known.add(tensor.name)
            batched = bool(tensor.shape) and tensor.shape[0] == "batch"
            value = np.ascontiguousarray(feed[tensor.name])
            if name in family.identity_stages:
                identity[tensor.name] = value[:1] if batched else value     # one identity
            else:
                (per_frame if batched else constants)[tensor.name] = value
        known.update(spec.output_names)
    adapter = FeedAdapter(family, manifest["canvas"], identity, per_frame, constants)
    count = frames or DEFAULT_FRAMES
    described = {**{i.key: SYNTHETIC for i in family.identity_inputs},
                 "targets": f"synthetic: the family's {adapter.distinct} verification frame(s) "
                            "(export.verify.stage_feeds), repeated",
                 "target_frames": count}
    return BenchInputs(adapter, list(range(count)), described,
                       lambda: FeedAdapter(family, manifest["canvas"], identity, per_frame, constants), None, frames)


class FeedAdapter(KeypointBatches):
    """A runtime adapter over ready tensors (the default inputs). A normalised frame is its index;
    a batch takes the per-frame tensors of those indices (cycling through the distinct ones), and
    the identity carries, besides the identity stages' outputs, the identity inputs and the
    constants the per-frame stages also take (Pose2Img's frame stage takes the source keypoints)."""

    def __init__(self, family, canvas, identity: Dict[str, np.ndarray], per_frame: Dict[str, np.ndarray],
                 constants: Dict[str, np.ndarray]):
        self.family = family.name
        self.identity_stages, self.frame_stages = tuple(family.identity_stages), tuple(family.frame_stages)
        self.canvas_hw = tuple(int(v) for v in canvas)
        self._feed, self._per_frame, self._constants = identity, per_frame, constants
        self.distinct = min((len(v) for v in per_frame.values()), default=1)
        self._identity = None

    def identity_feed(self) -> Dict[str, np.ndarray]:
        return dict(self._feed)

    def keep_identity(self, outputs: Mapping[str, np.ndarray]) -> None:
        self._identity = {**self._constants, **self._feed, **outputs}

    def normalise(self, frame: Frame) -> int:
        return int(frame.index)

    def frame_feed(self, frames) -> Dict[str, np.ndarray]:
        pick = np.asarray(frames, dtype=np.int64) % self.distinct
        return {name: np.ascontiguousarray(values[pick]) for name, values in self._per_frame.items()}

    def open_file(self, path: Path, fps: float) -> FrameSource:
        raise UserError("the default bench inputs are in memory; give --keypoints with the identity inputs to read "
                        "a file", path)
