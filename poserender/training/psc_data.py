"""PSC training data in the reference's ``data/train`` layout, checked whole at start.

``<root>/{right,front,left,back,mid0,mid1,mid2,mid3}_img/<name>.jpg`` (RGB), the same views
under ``*_sg/<name>.png`` (label maps, first channel), ``joint/<name>.csv`` (8 poses: the
eight views in that order) and ``joint_interpolation/<name>.csv`` (12 poses: the four key
views, then two in-between poses per key view with their t in column 0). A pose is two csv
rows, x then y, of a leading value and 18 COCO joints; -1 marks a missing joint.

Which files a stage reads (the reference's): pm: ``joint_interpolation``; aa: ``joint`` and
the eight ``*_sg``; ct: the eight ``*_sg`` and ``*_img``. Differences from the reference loader,
on purpose: files are paired by name (the reference pairs separate, unsorted directory
listings by position), and ``midK_img`` pairs with ``midK_sg`` (the reference's CT loader swaps
mid1 and mid3 images; in the demo data ``midK_img`` matches ``midK_sg``).

Everything is resized to the training canvas: images bilinearly (area when shrinking), parsings
by nearest neighbour, coordinates by the same factor (the heat maps truncate them, like the
reference's ``int()``).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from ..errors import UserError
from ..images import read_image
from .pose2img_data import DatasetError

VIEWS = ("right", "front", "left", "back", "mid0", "mid1", "mid2", "mid3")
JOINTS = 18
CLASSES = 7
STAGES = ("pm", "aa", "ct")
#: poses per csv: joint (the eight views), joint_interpolation (four key views + eight in-between)
POSES = {"joint": 8, "joint_interpolation": 12}


def stage_files(stage: str) -> List[Tuple[str, str]]:
    """(folder, suffix) pairs a stage reads for every sample."""
    if stage == "pm":
        return [("joint_interpolation", ".csv")]
    if stage == "aa":
        return [("joint", ".csv")] + [(f"{v}_sg", ".png") for v in VIEWS]
    if stage == "ct":
        return [(f"{v}_sg", ".png") for v in VIEWS] + [(f"{v}_img", ".jpg") for v in VIEWS]
    raise ValueError(f"stage {stage!r}; expected one of {STAGES}")


def read_pose_csv(path: Path, poses: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[str]]:
    """(leading values (P,), xy (P, 18, 2) float64, valid (P, 18) bool, problems)."""
    problems: List[str] = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
        values = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return np.zeros(0), np.zeros((0, JOINTS, 2)), np.zeros((0, JOINTS), bool), \
            [f"{path}: cannot read as numbers ({str(exc).splitlines()[0][:80]})"]
    if values.shape != (2 * poses, JOINTS + 1):
        return np.zeros(0), np.zeros((0, JOINTS, 2)), np.zeros((0, JOINTS), bool), \
            [f"{path}: has {values.shape[0]} rows x {values.shape[1] if values.ndim == 2 else '?'} columns; "
             f"expected {2 * poses} rows ({poses} poses, x row then y row) x {JOINTS + 1} columns"]
    if not np.isfinite(values).all():
        problems.append(f"{path}: has NaN/inf values")
    lead = values[0::2, 0]
    if not np.array_equal(lead, values[1::2, 0]):
        problems.append(f"{path}: the x and y rows of a pose carry different leading values")
    xy = np.stack([values[0::2, 1:], values[1::2, 1:]], axis=-1)
    valid = (xy[..., 0] != -1) & (xy[..., 1] != -1)
    return lead, xy, valid, problems


def _read_labels(path: Path, problems: List[str]) -> Optional[np.ndarray]:
    try:
        image = read_image(path, cv2.IMREAD_UNCHANGED, "parsing")
    except UserError as exc:
        problems.append(str(exc))
        return None
    labels = image if image.ndim == 2 else image[..., 2 if image.shape[2] >= 3 else 0]   # R (first channel)
    if labels.max() >= CLASSES:
        problems.append(f"{path}: has label {int(labels.max())}; expected labels 0..{CLASSES - 1}")
    return labels


def _read_image(path: Path, problems: List[str]) -> Optional[np.ndarray]:
    try:
        image = read_image(path, cv2.IMREAD_COLOR)
    except UserError as exc:
        problems.append(str(exc))
        return None
    return image[..., ::-1]                  # RGB, as the reference reads it with PIL


def _resize(array: np.ndarray, size: int, nearest: bool) -> np.ndarray:
    if array.shape[:2] == (size, size):
        return np.ascontiguousarray(array)
    shrink = array.shape[0] > size
    mode = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return cv2.resize(np.ascontiguousarray(array), (size, size), interpolation=mode)


class PscTrainData(torch.utils.data.Dataset):
    """One stage's samples, decoded and resized up front (the PSC sets are small).

    Items (tensors, per sample): pm: ``keypoints`` (12, 18, 2) canvas px, ``valid`` (12, 18),
    ``t`` (8,); aa: ``keypoints`` (8, 18, 2), ``valid`` (8, 18), ``labels`` (8, H, W) int64;
    ct: ``labels`` (8, H, W) int64, ``images`` (8, 3, H, W) RGB in [-1, 1].
    """

    def __init__(self, root: Path, stage: str, size: int):
        self.root, self.stage, self.size = Path(root), stage, size
        problems: List[str] = []
        if not self.root.is_dir():
            raise DatasetError([f"{self.root}: not a folder; expected PSC's data/train layout"], str(self.root))
        files = stage_files(stage)
        names = set()
        for folder, suffix in files:
            if not (self.root / folder).is_dir():
                problems.append(f"{self.root / folder}: missing folder (the {stage} stage reads it)")
                continue
            names |= {p.stem for p in (self.root / folder).iterdir() if p.suffix.lower() == suffix}
        if not problems and not names:
            problems.append(f"{self.root}: no samples in {', '.join(f for f, _ in files)}")
        self.names = sorted(names)
        self.samples: List[Dict[str, np.ndarray]] = []
        source_size = None
        for name in self.names:
            sample: Dict[str, np.ndarray] = {}
            missing = [self.root / f / (name + s) for f, s in files if not (self.root / f / (name + s)).is_file()]
            problems += [f"{p}: missing (sample {name} is in the other folders)" for p in missing
                         if p.parent.is_dir()]
            if missing:
                continue
            for folder, suffix in files:
                path = self.root / folder / (name + suffix)
                if suffix == ".csv":
                    lead, xy, valid, csv_problems = read_pose_csv(path, POSES[folder])
                    problems += csv_problems
                    if csv_problems:
                        continue
                    if folder == "joint_interpolation":
                        t = lead[4:]
                        if not ((t > 0) & (t < 1)).all():
                            problems.append(f"{path}: in-between poses have t = {t.round(3).tolist()}; "
                                            "expected 0 < t < 1")
                        sample["t"] = t.astype(np.float32)
                    sample["xy"], sample["valid"] = xy, valid
                    continue
                array = _read_labels(path, problems) if suffix == ".png" else _read_image(path, problems)
                if array is None:
                    continue
                if source_size is None:
                    source_size = array.shape[:2]
                if array.shape[:2] != source_size or source_size[0] != source_size[1]:
                    problems.append(f"{path}: is {array.shape[1]} x {array.shape[0]}; expected square images "
                                    f"of one size ({source_size[1]} x {source_size[0]}, like the first one)")
                    continue
                sample.setdefault("labels" if suffix == ".png" else "images", []).append(
                    _resize(array, size, nearest=suffix == ".png"))
            self.samples.append(sample)
        if problems:
            raise DatasetError(problems, str(self.root))
        # csv coordinates are pixels of the dataset's images (256 x 256 in the reference)
        self.scale = size / (source_size[0] if source_size else 256.0)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        s = self.samples[int(index)]
        item: Dict[str, torch.Tensor] = {}
        if "xy" in s:
            xy = np.where(s["valid"][..., None], s["xy"] * self.scale, -1.0)
            item["keypoints"] = torch.from_numpy(xy.astype(np.float32))
            item["valid"] = torch.from_numpy(s["valid"].astype(np.float32))
        if "t" in s:
            item["t"] = torch.from_numpy(s["t"])
        if "labels" in s:
            item["labels"] = torch.from_numpy(np.stack(s["labels"]).astype(np.int64))
        if "images" in s:
            images = np.stack(s["images"]).astype(np.float32).transpose(0, 3, 1, 2)
            item["images"] = torch.from_numpy(images / 127.5 - 1.0)   # (v / 255 - 0.5) / 0.5
        return item


def sample_order(n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> Sequence[int]:
    """This rank's shuffled samples of ``epoch`` (DistributedSampler: seeded, padded, sharded)."""
    sampler = torch.utils.data.DistributedSampler(range(n), num_replicas=world_size, rank=rank, shuffle=True,
                                                  seed=seed, drop_last=world_size > 1 and n >= world_size)
    sampler.set_epoch(epoch)
    return list(sampler)
