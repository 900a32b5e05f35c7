"""Pose2Img training data: frames of one person with per-frame OpenPose keypoints.

Two layouts are accepted:

* the reference's: ``keypoints`` is a folder of per-frame ``.npy`` (3 x 137 or 2 x 122) or
  OpenPose ``.json`` files, and ``frames`` a folder holding ``<stem><img_extension>`` for each
  (``x_keypoints.json`` pairs with ``x.jpg``). Frames are sorted by name.
* a video: ``frames`` is a video file and ``keypoints`` one sequence with a pose per video
  frame (``.npz`` from Speech Drives Templates, a ``.npy`` sequence or an OpenPose JSON folder).
  The Oliver demo is ``varying_tmplt_rgb.mp4`` with ``varying_tmplt.npz``.

A frame of exactly ``img_H x img_W`` is taken as the crop itself (the demo video is already
cropped); a larger frame is cropped at ``(W_bias, H_bias)`` as the reference does. The crop is
mapped to [-1, 1] (BGR, as OpenCV reads it) and resized bilinearly to the canvas; keypoints go
through :func:`canvas_transform`. The first ``val_frames`` frames are the validation set and the
rest the training set (the reference: the first 64 files). Everything is checked when the
dataset is built, and every problem is listed in one error.

Pairing follows the reference: a training sample is (source = frame i, target = a uniformly
drawn other frame); a validation sample is (source = the first validation frame, target =
frame i). The draw happens in :class:`PairSampler`, from a generator seeded by (seed, epoch),
so an epoch's pairs are the same in every worker, on every rank and after ``--resume``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..config import Pose2ImgConfig
from ..errors import UserError
from ..images import read_image
from ..keypoints import canvas_transform
from ..keypoints.readers import read_keypoints, read_npy, read_openpose_json
from .config import DataConfig

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
MAX_LISTED = 20


class DatasetError(UserError):
    """Every problem found in a dataset, one per line."""

    def __init__(self, problems: Sequence[str], where: str):
        self.problems = list(problems)
        shown = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(shown)
        lines = "\n  ".join(shown + ([f"... and {more} more"] if more else []))
        super().__init__(f"training data has {len(self.problems)} problem(s):\n  {lines}", where)


@dataclasses.dataclass
class FrameTable:
    """Frames in canvas space: ``keypoints`` (N, 122, 2) float32 canvas pixels, ``valid``
    (N, 122) float32, and a way to get image i as (3, H, W) float32 BGR in [-1, 1]."""

    names: List[str]
    keypoints: np.ndarray
    valid: np.ndarray
    images: Optional[np.ndarray] = None            # (N, 3, H, W) when decoded up front
    image_paths: Optional[List[Path]] = None
    geometry: Optional[Pose2ImgConfig] = None
    cache: Optional[Dict[int, np.ndarray]] = None

    def __len__(self) -> int:
        return len(self.names)

    def image(self, i: int) -> np.ndarray:
        if self.images is not None:
            return self.images[i]
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        raw = read_image(self.image_paths[i], cv2.IMREAD_COLOR)     # checked at start; changed under us?
        out = crop_to_canvas(raw, self.geometry)
        if self.cache is not None:
            self.cache[i] = out
        return out


def crop_to_canvas(image: np.ndarray, geometry: Pose2ImgConfig) -> np.ndarray:
    """uint8 BGR (h, w, 3) -> (3, H, W) float32 in [-1, 1] on the canvas (see module doc)."""
    if image.shape[:2] != (geometry.img_h, geometry.img_w):
        top, left = int(geometry.h_bias), int(geometry.w_bias)
        image = image[top:top + geometry.img_h, left:left + geometry.img_w]
    crop = image.astype(np.float64) / 255.0 * 2.0 - 1.0
    height, width = geometry.canvas_hw
    if crop.shape[:2] != (height, width):
        crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(crop.transpose(2, 0, 1).astype(np.float32))


def _crop_problem(shape: Tuple[int, ...], geometry: Pose2ImgConfig) -> Optional[str]:
    h, w = shape[:2]
    if (h, w) == (geometry.img_h, geometry.img_w):
        return None
    need_h, need_w = int(geometry.h_bias) + geometry.img_h, int(geometry.w_bias) + geometry.img_w
    if h < need_h or w < need_w or geometry.h_bias < 0 or geometry.w_bias < 0:
        return (f"frame is {w} x {h}; expected the {geometry.img_w} x {geometry.img_h} crop itself or a "
                f"frame of at least {need_w} x {need_h} (crop at W_bias {geometry.w_bias:g}, "
                f"H_bias {geometry.h_bias:g})")
    return None


def _to_canvas(xy: np.ndarray, valid: np.ndarray, geometry: Pose2ImgConfig) -> Tuple[np.ndarray, np.ndarray]:
    return canvas_transform(xy, geometry).astype(np.float32), valid.astype(np.float32)


def _stem_of_keypoint_file(path: Path) -> str:
    stem = path.stem
    return stem[:-len("_keypoints")] if stem.endswith("_keypoints") else stem


def load_frame_folder(frames: Path, keypoints: Path, data: DataConfig, geometry: Pose2ImgConfig) -> FrameTable:
    """The reference layout, checked file by file (every image is decoded once)."""
    problems: List[str] = []
    if not keypoints.is_dir():
        raise DatasetError([f"{keypoints}: not a folder; with a folder of frames, expected a folder of "
                            "per-frame .npy or OpenPose .json keypoint files"], str(keypoints))
    if not frames.is_dir():
        raise DatasetError([f"{frames}: not a folder; expected the folder of frame images"], str(frames))
    files = sorted(p for p in keypoints.iterdir() if p.suffix.lower() in (".npy", ".json") and p.is_file())
    if not files:
        raise DatasetError([f"{keypoints}: no .npy or .json keypoint files"], str(keypoints))
    names, xys, valids, paths = [], [], [], []
    skipped = 0
    for kp_file in files:
        image_path = frames / (_stem_of_keypoint_file(kp_file) + data.img_extension)
        try:
            seq = read_npy(kp_file) if kp_file.suffix.lower() == ".npy" else read_openpose_json(kp_file)
        except UserError as exc:
            problems.append(str(exc))
            continue
        if len(seq) != 1:
            problems.append(f"{kp_file}: holds {len(seq)} frames; expected one frame per file")
            continue
        if seq.bad[0]:
            problems.append(f"{kp_file}: {seq.bad_reasons.get(0, 'unusable keypoints')}")
            continue
        if not image_path.is_file():
            problems.append(f"{image_path}: missing; expected the frame for {kp_file.name}")
            continue
        try:
            image = read_image(image_path, cv2.IMREAD_COLOR)
        except UserError as exc:
            problems.append(str(exc))
            continue
        crop_problem = _crop_problem(image.shape, geometry)
        if crop_problem:
            problems.append(f"{image_path}: {crop_problem}")
            continue
        if not seq.valid[0].any():
            skipped += 1       # nobody detected: not a file problem, just nothing to learn from
            continue
        xy, valid = _to_canvas(seq.xy[0], seq.valid[0], geometry)
        names.append(kp_file.name)
        xys.append(xy)
        valids.append(valid)
        paths.append(image_path)
    if problems:
        raise DatasetError(problems, str(keypoints))
    return FrameTable(names, np.stack(xys), np.stack(valids), image_paths=paths, geometry=geometry,
                      cache={} if data.cache else None)


def decode_video(path: Path, max_frames: int = 0) -> Iterator[np.ndarray]:
    """uint8 BGR frames of a video, in order (PyAV)."""
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise DatasetError([f"{path}: cannot open as a video ({exc})"], str(path)) from None
    with container:
        if not container.streams.video:
            raise DatasetError([f"{path}: has no video stream"], str(path))
        for n, frame in enumerate(container.decode(video=0)):
            if max_frames and n >= max_frames:
                break
            yield frame.to_ndarray(format="bgr24")


def load_video(frames: Path, keypoints: Path, data: DataConfig, geometry: Pose2ImgConfig) -> FrameTable:
    """A video and one keypoint sequence with a pose per frame; frames decoded up front."""
    problems: List[str] = []
    try:
        seq = read_keypoints(keypoints, geometry)
    except UserError as exc:
        raise DatasetError([str(exc)], str(keypoints)) from None
    images: List[np.ndarray] = []
    for n, frame in enumerate(decode_video(frames, data.max_frames)):
        problem = _crop_problem(frame.shape, geometry)
        if problem:
            raise DatasetError([f"{frames}: {problem}"], str(frames))
        images.append(crop_to_canvas(frame, geometry))
    limit = min(len(seq), data.max_frames) if data.max_frames else len(seq)
    if len(images) != limit:
        problems.append(f"{frames}: has {len(images)} frames but {keypoints} has {len(seq)} poses; "
                        "expected one pose per video frame")
    for t, reason in sorted(seq.bad_reasons.items()):
        if t < limit:
            problems.append(f"{keypoints}: frame {t}: {reason}")
    if problems:
        raise DatasetError(problems, str(frames))
    keep = [t for t in range(limit) if seq.valid[t].any()]
    xy, valid = _to_canvas(seq.xy[keep], seq.valid[keep], geometry)
    return FrameTable([f"frame {t}" for t in keep], xy, valid, images=np.stack([images[t] for t in keep]),
                      geometry=geometry)


def load_frames(data: DataConfig, geometry: Pose2ImgConfig) -> FrameTable:
    frames, keypoints = Path(data.frames), Path(data.keypoints)
    if not frames.exists():
        raise DatasetError([f"{frames}: not found; expected a video or a folder of frames"], str(frames))
    if not keypoints.exists():
        raise DatasetError([f"{keypoints}: not found; expected keypoints for the frames"], str(keypoints))
    if frames.is_file() and frames.suffix.lower() in VIDEO_SUFFIXES:
        return load_video(frames, keypoints, data, geometry)
    if frames.is_file():
        raise DatasetError([f"{frames}: unknown frames source {frames.suffix!r}; expected a video "
                            f"({', '.join(VIDEO_SUFFIXES)}) or a folder of images"], str(frames))
    return load_frame_folder(frames, keypoints, data, geometry)


class Pose2ImgPairs(torch.utils.data.Dataset):
    """Index ``(source, target)`` -> the tensors of one training pair (all on the canvas)."""

    def __init__(self, table: FrameTable, indices: Sequence[int]):
        self.table = table
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, pair: Tuple[int, int]) -> Dict[str, torch.Tensor]:
        src, tgt = (self.indices[int(i)] for i in pair)
        t = self.table
        return {
            "source_image": torch.from_numpy(t.image(src)),
            "source_keypoints": torch.from_numpy(t.keypoints[src]),
            "source_valid": torch.from_numpy(t.valid[src]),
            "target_image": torch.from_numpy(t.image(tgt)),
            "target_keypoints": torch.from_numpy(t.keypoints[tgt]),
            "target_valid": torch.from_numpy(t.valid[tgt]),
        }


def split(table: FrameTable, val_frames: int, where: str) -> Tuple[Pose2ImgPairs, Pose2ImgPairs]:
    """(train, val): the first ``val_frames`` frames validate, the rest train (as the reference)."""
    if len(table) < val_frames + 2:
        raise DatasetError([f"{len(table)} usable frames; need more than val_frames ({val_frames}) + 1, "
                            "so that the training set has at least two frames to pair"], where)
    return (Pose2ImgPairs(table, range(val_frames, len(table))), Pose2ImgPairs(table, range(val_frames)))


class PairSampler(torch.utils.data.Sampler):
    """Training pairs of one epoch for one rank, from ``start`` (in samples) on.

    Order: :class:`torch.utils.data.DistributedSampler` (shuffled by seed + epoch, padded and
    sharded by rank; with one process it is a plain seeded shuffle). Targets: one draw per
    source of a different frame, ``(i + randint(1, n)) % n``, from a generator seeded by
    (seed, epoch), identical on every rank. ``start`` skips samples already trained on when a
    run resumes mid-epoch.
    """

    def __init__(self, n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1, start: int = 0):
        self.n, self.seed, self.epoch, self.start = n, seed, epoch, start
        self.order = torch.utils.data.DistributedSampler(range(n), num_replicas=world_size, rank=rank,
                                                         shuffle=True, seed=seed, drop_last=True)
        self.order.set_epoch(epoch)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        offsets = torch.randint(1, self.n, (self.n,), generator=g).tolist()
        sources = list(self.order)[self.start:]
        return iter([(i, (i + offsets[i]) % self.n) for i in sources])

    def __len__(self) -> int:
        return len(self.order) - self.start


def validation_pairs(n: int) -> List[Tuple[int, int]]:
    """Source = the first validation frame, target = each validation frame (the reference)."""
    return [(0, i) for i in range(n)]
