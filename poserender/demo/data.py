"""Write generated puppet data in the Pose2Img training layout.

``DIR/images/NNNNNN.png`` (the puppet drawn at the pose, lossless) beside
``DIR/keypoints/NNNNNN.npy`` (OpenPose 3 x 137: x, y, confidence), which is the reference's
per-frame layout that ``poserender train pose2img`` reads (``TRAINING.data.img_extension:
.png``), plus ``DIR/poses.npy`` (T x 3 x 137, the whole clip, for ``render --keypoints``) and
``DIR/info.json`` (seed, frames, size, fps, the gesture schedule). The folder is written under a
temporary name and renamed when complete.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Optional, Union

import cv2
import numpy as np

from ..errors import UserError
from ..fileio import temp_dir_beside
from .gestures import gesture_params, pose122_to_openpose, pose_from_params
from .puppet import draw_puppet

DEMO_FPS = 25.0


def write_dataset(out: Union[str, Path], frames: int, seed: int = 0, size: int = 256, fps: float = DEMO_FPS,
                  overwrite: bool = False, progress: Optional[Callable[[int, int], None]] = None) -> Path:
    """Generate ``frames`` frames of gestures from ``seed`` and write them to ``out``."""
    out = Path(out)
    if frames < 1:
        raise UserError(f"--frames {frames}; expected at least 1")
    if size < 64 or size % 32:
        raise UserError(f"--size {size}; expected a multiple of 32, at least 64")
    if out.exists() and not (out.is_dir() and overwrite):
        raise UserError("already exists; expected a new folder (or --overwrite to replace it)", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    params, schedule = gesture_params(frames, seed, fps)
    work = temp_dir_beside(out)
    try:
        (work / "images").mkdir()
        (work / "keypoints").mkdir()
        clip = np.empty((frames, 3, 137), dtype=np.float32)
        for i, p in enumerate(params):
            pose = pose_from_params(p, size)
            clip[i] = pose122_to_openpose(pose)
            np.save(work / "keypoints" / f"{i:06d}.npy", clip[i])
            cv2.imwrite(str(work / "images" / f"{i:06d}.png"), draw_puppet(pose, size))
            if progress is not None:
                progress(i + 1, frames)
        np.save(work / "poses.npy", clip)
        info = {"generator": "poserender demo-data", "seed": seed, "frames": frames, "size": size, "fps": fps,
                "schedule": [{"frame": f, "gesture": g} for f, g in schedule]}
        (work / "info.json").write_text(json.dumps(info, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out
