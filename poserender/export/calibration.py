"""Calibration inputs for INT8, for any family: real poses through the model's own FP32 stages.

:class:`CalibrationData` is one identity (read by the family's adapter, exactly as ``render``
reads it) and the usable frames of a keypoint sequence, normalised onto the canvas by the same
adapter. :func:`stage_feeds` turns a batch of them into the inputs of any stage: the identity
stages run once (ONNX Runtime CPU, FP32), then the per-frame stages before the wanted one, so a
quantized stage is calibrated and gated on the tensors it sees in a render, never on random ones.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import BadFrame, UserError


@dataclasses.dataclass
class CalibrationData:
    """``adapter``: the family's runtime adapter with the identity read; ``frames``: normalised
    per-frame inputs (what ``adapter.prepare`` stacks); ``described``: the files they came from
    (recorded in the manifest)."""

    adapter: Any
    frames: List[Any]
    described: Dict[str, Any]

    def __len__(self) -> int:
        return len(self.frames)


def calibration_data(family, manifest: Mapping[str, Any], keypoints: Path, identity: Mapping[str, Path],
                     warn: Callable[[str], None] = lambda message: None) -> CalibrationData:
    """Real calibration inputs, read the way `poserender render` reads them: the identity through
    the family's adapter, the keypoint file's frames normalised by it, bad frames left out."""
    adapter = family.adapter(manifest, identity, warn)
    frames, bad = [], 0
    for frame in adapter.open_file(Path(keypoints), 25.0):
        try:
            if frame.bad is not None:
                raise frame.bad
            frames.append(adapter.normalise(frame))
        except BadFrame:
            bad += 1
    if not frames:
        raise UserError("has no usable frame to calibrate on", keypoints)
    described = {"keypoints": str(Path(keypoints).resolve()), "usable_frames": len(frames), "bad_frames_left_out": bad}
    described.update({("source_image" if key == "source" else key): str(Path(path).resolve())
                      for key, path in identity.items()})
    return CalibrationData(adapter, frames, described)


def stage_feeds(model_dir: Path, manifest: Mapping[str, Any], data: CalibrationData, stage_name: str,
                log: Callable[[str], None] = lambda s: None) -> Callable[[Sequence[int]], Dict[str, np.ndarray]]:
    """``indices -> feed`` of stage ``stage_name`` for those calibration frames: the identity stages
    once on ``data``'s identity, then per batch the per-frame stages before ``stage_name`` (all FP32,
    ONNX Runtime CPU)."""
    from ..engines.ort_engine import OrtEngine

    adapter = data.adapter
    before = list(adapter.frame_stages[:list(adapter.frame_stages).index(stage_name)])
    specs = {spec.name: spec for spec in manifest.stages}
    engines = {name: OrtEngine(specs[name], Path(model_dir) / specs[name].file)
               for name in list(adapter.identity_stages) + before}
    for engine in engines.values():
        engine.activate()
    log(f"INT8: running the FP32 {' and '.join(engines)} stage{'s' if len(engines) > 1 else ''} on "
        f"{data.described.get('source_image', 'the identity')}")
    adapter.run_identity(engines)
    wanted = specs[stage_name].input_names

    def feed(indices: Sequence[int]) -> Dict[str, np.ndarray]:
        values = adapter.prepare([data.frames[i] for i in indices])
        for name in before:
            values.update(engines[name].infer(values))
        return {name: np.ascontiguousarray(values[name]) for name in wanted}
    return feed


@dataclasses.dataclass
class FrameSplit:
    calibration: List[int]
    selection: List[int]
    gate: List[int]


def _spread(n: int, k: int) -> np.ndarray:
    """``k`` distinct positions in ``range(n)`` spread evenly from the first to the last."""
    if k == 1:
        return np.array([n // 2])
    return np.floor(np.arange(k) * (n - 1) / (k - 1) + 0.5).astype(int)


def split_frames(total: int, calibration: int, gate: int, selection: int = 0) -> FrameSplit:
    """Disjoint frame indices: calibration frames spread over the head of the sequence, gate and
    selection frames spread over its tail (the last quarter, or more when they need it), so the
    gate sees poses that are not neighbours of a calibration pose."""
    need = calibration + gate + selection
    if min(calibration, gate) < 1 or selection < 0:
        raise UserError(f"calibration frames {calibration}, gate frames {gate}: expected at least 1 each")
    if total < need:
        raise UserError(f"the keypoint sequence has {total} usable frames; calibration ({calibration}) + "
                        f"held-out gate ({gate})" + (f" + method selection ({selection})" if selection else "")
                        + f" need {need} (use --frames to calibrate on fewer)")
    tail = min(max(gate + selection, -(-total // 4)), total - calibration)
    cal = _spread(total - tail, calibration)
    held = np.arange(total - tail, total)[_spread(tail, gate + selection)]
    gate_mask = np.zeros(len(held), bool)
    gate_mask[_spread(len(held), gate)] = True
    return FrameSplit(cal.tolist(), held[~gate_mask].tolist(), held[gate_mask].tolist())


def _batches(indices: Sequence[int], batch: int) -> List[List[int]]:
    return [list(indices[i:i + batch]) for i in range(0, len(indices), batch)]


class FeedReader:
    """onnxruntime CalibrationDataReader over frame-stage feeds (one batch each); ``set_range``
    lets the calibrator take one batch at a time (CalibStridedMinMax), so memory stays at one
    batch's intermediate tensors whatever the number of frames."""

    def __init__(self, feeds: List[Dict[str, np.ndarray]]):
        self.feeds, self.start, self.end, self.cursor = feeds, 0, len(feeds), 0

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        if self.start + self.cursor >= self.end:
            return None
        self.cursor += 1
        return self.feeds[self.start + self.cursor - 1]

    def __iter__(self):
        return self

    def __next__(self):
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.cursor = start_index, min(end_index, len(self.feeds)), 0


