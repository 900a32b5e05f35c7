"""The plain sequential loop over an exported Pose2Img model: the baseline the streaming
pipeline is measured against (benchmarks/bench_stream.py), not part of the runtime.

source image + source keypoints -> source stage (once) -> target frames in batches -> frame
stage -> sink, one step after another. `poserender render` uses the streaming pipeline
(poserender/runtime/pipeline.py: overlapping stages, live inputs, real time). The identity
preprocessing is the family's own (poserender.families.pose2img), so both read inputs alike.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np

from poserender.config import Pose2ImgConfig
from poserender.errors import UserError
from poserender.families.pose2img import load_source_image, load_source_keypoints
from poserender.keypoints import KeypointSequence, canvas_transform, read_keypoints
from poserender.runtime.policy import BAD_FRAME_POLICIES
from poserender.runtime.sinks import open_sink


@dataclasses.dataclass
class RenderStats:
    frames_in: int = 0
    frames_out: int = 0
    held: int = 0
    skipped: int = 0
    seconds: float = 0.0
    source_seconds: float = 0.0
    interrupted: bool = False


def target_batches(seq: KeypointSequence, config: Pose2ImgConfig, batch: int, policy: str,
                   stats: RenderStats) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yield (B, 122, 2) canvas keypoints and (B, 122) validity, applying the bad-frame policy."""
    if policy not in BAD_FRAME_POLICIES:
        raise UserError(f"--on-bad-frame {policy!r}; expected one of {', '.join(BAD_FRAME_POLICIES)}")
    canvas = canvas_transform(seq.xy, config).astype(np.float32)
    valid = seq.valid.astype(np.float32)
    # a frame without a single detected joint (OpenPose found no person) is a bad frame too
    bad = seq.bad | ~seq.valid.any(axis=1)
    good = np.flatnonzero(~bad)
    if good.size == 0:
        raise UserError("no usable frame in the keypoint file (every frame is bad)", seq.path)
    last_good = int(good[0])
    pending_xy, pending_valid = [], []
    for t in range(len(seq)):
        stats.frames_in += 1
        if bad[t]:
            reason = seq.bad_reasons.get(t, "no person detected" if not seq.bad[t] else "bad frame")
            if policy == "error":
                raise UserError(f"frame {t}: {reason} (--on-bad-frame error)", seq.path)
            if policy == "skip":
                stats.skipped += 1
                continue
            stats.held += 1
            src = last_good
        else:
            src = last_good = t
        pending_xy.append(canvas[src])
        pending_valid.append(valid[src])
        if len(pending_xy) == batch:
            yield np.stack(pending_xy), np.stack(pending_valid)
            pending_xy, pending_valid = [], []
    if pending_xy:
        yield np.stack(pending_xy), np.stack(pending_valid)


def render_sequence(engines, config: Pose2ImgConfig, source_image: Path, source_keypoints: Path,
                    keypoints: Path, output: Path, fmt: Optional[str] = None, fps: float = 15.0,
                    audio: Optional[Path] = None, batch: int = 4, on_bad_frame: str = "hold",
                    max_frames: Optional[int] = None,
                    progress: Callable[[int, int], Any] = lambda done, total: None) -> Tuple[RenderStats, Any]:
    """Render every frame of ``keypoints``; returns (stats, sink summary). Inputs are all read
    and checked before the output is opened, so bad input never leaves a partial file."""
    source_engine, frame_engine = engines
    image = load_source_image(source_image, config)
    src_xy, src_valid = load_source_keypoints(source_keypoints, config)
    seq = read_keypoints(keypoints, config)
    if max_frames is not None:
        seq = dataclasses.replace(seq, xy=seq.xy[:max_frames], valid=seq.valid[:max_frames],
                                  bad=seq.bad[:max_frames])
    batch = max(1, min(int(batch), frame_engine.spec.max_batch))
    stats = RenderStats()
    started = time.perf_counter()
    with source_engine, frame_engine:
        source_out = source_engine.infer({"source_image": image, "source_keypoints": src_xy,
                                          "source_valid": src_valid})
        stats.source_seconds = time.perf_counter() - started
        feed_identity: Dict[str, np.ndarray] = {"source_keypoints": src_xy, "source_valid": src_valid,
                                                **source_out}
        batches = target_batches(seq, config, batch, on_bad_frame, stats)
        first = next(batches)   # validate the policy/frames before creating the output
        with open_sink(output, fmt, fps=fps, audio=audio) as sink:
            try:
                for target_xy, target_valid in _chain(first, batches):
                    frames = frame_engine.infer({"target_keypoints": target_xy, "target_valid": target_valid,
                                                 **feed_identity})["frames"]
                    sink.write(frames)
                    stats.frames_out += len(frames)
                    progress(stats.frames_in, len(seq))
            except KeyboardInterrupt:
                # Ctrl-C: keep what was rendered as a valid, complete file (docs/streaming.md)
                stats.interrupted = True
                if sink.frames_written == 0:
                    raise
            summary = sink.close()
    stats.seconds = time.perf_counter() - started
    return stats, summary


def _chain(first, rest):
    yield first
    yield from rest
