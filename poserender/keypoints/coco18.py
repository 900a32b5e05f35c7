"""The 18-joint COCO layout PSC uses (OpenPose ``COCO`` order): its csv poses, conversion from
OpenPose BODY_25 / the 137-point rows, and pose streams for rendering.

Coordinates are pixels of the PSC canvas (the 256 x 256 image), x = column, y = row. A joint is
missing when x or y is exactly -1 (the reference's marker, quirk ``pose-csv``); any other value,
even off the canvas, is a joint. Arrays: ``xy`` float64 (N, 18, 2), ``valid`` bool (N, 18).
"""
from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ..errors import UserError
from .validate import NAN, sequence_problems

PathLike = Union[str, Path]
N_COCO18 = 18
COCO18_NAMES = ("nose", "neck", "right shoulder", "right elbow", "right wrist", "left shoulder", "left elbow",
                "left wrist", "right hip", "right knee", "right ankle", "left hip", "left knee", "left ankle",
                "right eye", "left eye", "right ear", "left ear")
#: BODY_25 index of each COCO-18 joint (BODY_25 adds MidHip at 8 and six foot points at 19-24)
BODY25_TO_COCO18 = (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
#: limbs and colours of the reference's skeleton drawing (network/psc_model.py map2img), RGB
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17))
JOINT_COLORS_RGB = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
MISSING = -1.0


@dataclasses.dataclass(frozen=True, eq=False)
class Coco18Sequence:
    """N poses: ``xy`` float64 (N, 18, 2) canvas pixels, ``valid`` bool (N, 18); ``bad`` marks frames
    that cannot be used (NaN/inf or out-of-range values, nobody detected), with a reason and a kind
    (``nan``, ``range``, ``empty``) per row; ``index`` int64 (N,) the frame numbers (an OpenPose
    folder with a missing file jumps there; otherwise 0..N-1)."""

    xy: np.ndarray
    valid: np.ndarray
    path: str
    bad: np.ndarray
    bad_reasons: Dict[int, str] = dataclasses.field(default_factory=dict)
    bad_kinds: Dict[int, str] = dataclasses.field(default_factory=dict)
    index: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.index is None:
            object.__setattr__(self, "index", np.arange(len(self.xy), dtype=np.int64))

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def head(self, n: int) -> "Coco18Sequence":
        return Coco18Sequence(self.xy[:n], self.valid[:n], self.path, self.bad[:n],
                              {k: v for k, v in self.bad_reasons.items() if k < n},
                              {k: v for k, v in self.bad_kinds.items() if k < n}, self.index[:n])


def _float(cell: str, path: Path, row: int, col: int, nonfinite_ok: bool = False) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise UserError(f"row {row + 1}, column {col + 1}: {cell.strip()!r} is not a number; expected "
                        "a PSC pose csv (per pose an x row and a y row: an index then 18 numbers)", path) from None
    if not math.isfinite(value) and not nonfinite_ok:
        raise UserError(f"row {row + 1}, column {col + 1}: {cell.strip()!r} is not finite; expected "
                        "pixel coordinates, -1 for a missing joint", path)
    return value


def read_psc_csv(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Every pose of a PSC csv: rows in pairs (x row, y row), each an index column then 18 numbers
    (quirk pose-csv). Returns xy float64 (N, 18, 2) and valid bool (N, 18). Anything else
    (non-numbers, NaN/inf, a coordinate out of range, a wrong column count, an odd row count, no
    rows) is a UserError."""
    xy, valid, _ = _parse_psc_csv(Path(path), nonfinite_ok=False)
    problems = sequence_problems(xy)
    if problems:
        pose, (_, reason) = next(iter(problems.items()))
        raise UserError(f"pose {pose + 1}: {reason}", path)
    return xy, valid


def read_psc_csv_stream(path: PathLike) -> Tuple[np.ndarray, np.ndarray, Dict[int, Tuple[str, str]]]:
    """:func:`read_psc_csv` for a pose stream, where one bad pose must not stop the others: a
    NaN/inf cell or an out-of-range coordinate makes its pose bad, with every joint missing.
    Returns xy, valid and {pose: (kind, reason)} of the bad poses; every other defect is refused
    the same way."""
    xy, valid, bad = _parse_psc_csv(Path(path), nonfinite_ok=True)
    problems = {int(i): (NAN, "NaN/inf coordinates") for i in np.flatnonzero(bad)}
    problems.update(sequence_problems(np.where(bad[:, None, None], 0.0, xy)))
    for i in problems:
        xy[i], valid[i] = MISSING, False
    return xy, valid, problems


def _parse_psc_csv(path: Path, nonfinite_ok: bool) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not path.is_file():
        raise UserError("pose csv not found; expected a PSC pose csv (x row, y row)", path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read as csv ({exc}); expected a PSC pose csv", path) from None
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()   # trailing blank lines
    if not rows:
        raise UserError("is empty; expected a PSC pose csv: an x row and a y row of 1 + 18 numbers", path)
    if len(rows) % 2:
        raise UserError(f"has {len(rows)} rows; expected an even number (an x row and a y row per pose)", path)
    values = np.empty((len(rows), N_COCO18 + 1))
    for r, row in enumerate(rows):
        if len(row) != N_COCO18 + 1:
            raise UserError(f"row {r + 1} has {len(row)} columns; expected {N_COCO18 + 1} (an index, then "
                            f"{N_COCO18} COCO-18 joints)", path)
        values[r] = [_float(c, path, r, k, nonfinite_ok) for k, c in enumerate(row)]
    finite = np.isfinite(values)
    bad = ~(finite[0::2].all(1) & finite[1::2].all(1))          # per pose: its x or y row
    values[~finite] = MISSING
    xy = np.stack([values[0::2, 1:], values[1::2, 1:]], axis=-1)
    xy[bad] = MISSING                                            # a bad pose has no joints
    valid = (xy[..., 0] != MISSING) & (xy[..., 1] != MISSING)
    return xy, valid, bad


def read_psc_pose(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """The single pose of a P0/P1 file: xy (18, 2), valid (18,)."""
    xy, valid = read_psc_csv(path)
    if len(xy) != 1:
        raise UserError(f"holds {len(xy)} poses ({2 * len(xy)} rows); expected one pose: an x row and a y row",
                        path)
    return xy[0], valid[0]


def write_psc_csv(path: PathLike, xy: np.ndarray) -> Path:
    """Write poses as a PSC csv, what :func:`read_psc_csv` reads: per pose an x row and a y row,
    each an index (0) then 18 values, 3 decimals. ``xy``: (18, 2) or (N, 18, 2); -1 marks a
    missing joint."""
    poses = np.asarray(xy, dtype=np.float64).reshape(-1, N_COCO18, 2)
    rows = [[0.0] + list(pose[:, k]) for pose in poses for k in (0, 1)]
    path = Path(path)
    path.write_text("\n".join(",".join(f"{v:.3f}" for v in row) for row in rows) + "\n")
    return path


def body25_to_coco18(rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """OpenPose (..., 25 or 137, 3) rows of (x, y, confidence), or (..., 18, 3) from OpenPose's COCO
    model, -> COCO-18 xy (..., 18, 2) and valid (..., 18): a joint is missing at confidence 0 (its
    xy is set to the PSC marker -1)."""
    rows = np.asarray(rows, dtype=np.float64)
    n = rows.shape[-2]
    if rows.shape[-1] != 3 or n not in (N_COCO18, 25, 137):
        raise ValueError(f"OpenPose rows of shape {rows.shape}; expected (..., 18|25|137, 3)")
    picked = rows if n == N_COCO18 else rows[..., list(BODY25_TO_COCO18), :]
    valid = picked[..., 2] > 0
    xy = np.where(valid[..., None], picked[..., :2], MISSING)
    return xy, valid


def _sequence_from_openpose(rows: np.ndarray, present: np.ndarray, path: PathLike,
                            index: Optional[np.ndarray] = None) -> Coco18Sequence:
    """OpenPose rows (N, 18|25|137, 3) -> poses; a row that fails the value check, or where nobody
    was detected (not ``present``, or no joint with confidence), is a bad frame."""
    problems = sequence_problems(rows[..., :2], rows[..., 2])
    xy, valid = body25_to_coco18(np.nan_to_num(rows, nan=0.0, posinf=0.0, neginf=0.0))
    bad = ~present | ~valid.any(axis=-1)
    bad[list(problems)] = True
    kinds = {t: kind for t, (kind, _) in problems.items()}
    reasons = {t: reason for t, (_, reason) in problems.items()}
    for i in np.flatnonzero(bad):
        kinds.setdefault(int(i), "empty")
        reasons.setdefault(int(i), "no person detected")
    xy = np.where(bad[:, None, None], MISSING, xy)
    return Coco18Sequence(xy, valid & ~bad[:, None], str(path), bad, reasons, kinds, index)


def read_pose_stream(path: PathLike) -> Coco18Sequence:
    """A pose sequence for PSC: a csv (one or more poses), a folder of csv files (name order), a
    folder of OpenPose JSON files or one JSON (BODY_25 or COCO ``pose_keypoints_2d``), or an
    ``.npy`` of OpenPose rows ((3, 137), (T, 3, 137), (T, 25, 3), (T, 18, 3)) or COCO-18 xy (T, 18, 2).
    A pose that fails the value check (NaN/inf, out of range) is a bad frame, not an error."""
    from .readers import _natural_key, _read_json_doc, openpose_json_files

    path = Path(path)
    if not path.exists():
        raise UserError("not found; expected a PSC csv, a folder of csv or OpenPose JSON files, or .npy", path)
    if path.is_dir():
        csvs = sorted((p for p in path.iterdir() if p.suffix.lower() == ".csv"), key=lambda p: _natural_key(p.name))
        if csvs:
            return _csv_stream(path, csvs)
        numbered = openpose_json_files(path)
        return _openpose_files([f for _, f in numbered], path, _read_json_doc,
                               np.array([n for n, _ in numbered], dtype=np.int64))
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_stream(path, [path])
    if suffix == ".json":
        return _openpose_files([path], path, _read_json_doc)
    if suffix == ".npy":
        return _read_npy(path)
    raise UserError(f"unknown pose format {path.suffix!r}; expected .csv, .json, .npy or a folder", path)


def _csv_stream(path: Path, files: List[Path]) -> Coco18Sequence:
    """The poses of PSC csv files in order, a bad pose kept as a bad frame (with its file's name)."""
    xys, valids, reasons, kinds, offset = [], [], {}, {}, 0
    for f in files:
        xy, valid, problems = read_psc_csv_stream(f)
        for k, (kind, reason) in problems.items():
            reasons[offset + k], kinds[offset + k] = f"{reason} in {f.name}", kind
        xys.append(xy), valids.append(valid)
        offset += len(xy)
    bad = np.zeros(offset, bool)
    bad[list(kinds)] = True
    return Coco18Sequence(np.concatenate(xys), np.concatenate(valids), str(path), bad, reasons, kinds)


def _openpose_files(files: List[Path], path: Path, read_doc, index: Optional[np.ndarray] = None) -> Coco18Sequence:
    rows = np.zeros((len(files), 25, 3))
    present = np.zeros(len(files), bool)
    for t, file in enumerate(files):
        doc = read_doc(file)
        people = doc.get("people") if isinstance(doc, dict) else None
        if not isinstance(people, list):
            raise UserError("has no 'people' list; expected an OpenPose keypoints JSON", file)
        if not people:
            continue
        try:
            body = np.asarray(people[0].get("pose_keypoints_2d", []), dtype=np.float64)
        except (AttributeError, TypeError, ValueError):
            raise UserError("people[0].pose_keypoints_2d is not a list of numbers", file) from None
        if body.size == N_COCO18 * 3:   # OpenPose's COCO model: already the 18 joints
            body = np.insert(body.reshape(N_COCO18, 3), 8, 0.0, axis=0)
            body = np.concatenate([body, np.zeros((25 - body.shape[0], 3))])
        elif body.size != 25 * 3:
            raise UserError(f"people[0].pose_keypoints_2d has {body.size} values; expected 75 (BODY_25) or "
                            "54 (COCO), as (x, y, confidence) triples", file)
        rows[t] = body.reshape(25, 3)
        present[t] = True
    return _sequence_from_openpose(rows, present, path, index)


def _read_npy(path: Path) -> Coco18Sequence:
    expected = "(3, 137), (T, 3, 137), (T, 25, 3), (T, 18, 3) or (T, 18, 2)"
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"cannot read as .npy ({exc}); expected keypoints of shape {expected}", path) from None
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"is not a numeric array; expected keypoints of shape {expected}", path)
    arr = arr.astype(np.float64)
    if arr.shape == (3, 137):
        arr = arr[None]
    if arr.ndim != 3 or len(arr) == 0:
        raise UserError(f"array has shape {arr.shape}; expected {expected}", path)
    if arr.shape[1:] == (3, 137):
        arr = np.swapaxes(arr, 1, 2)
    if arr.shape[1:] in ((25, 3), (N_COCO18, 3), (137, 3)):
        return _sequence_from_openpose(arr, np.ones(len(arr), bool), path)
    if arr.shape[1:] == (N_COCO18, 2):
        problems = sequence_problems(arr)
        bad = np.zeros(len(arr), bool)
        bad[list(problems)] = True
        valid = (arr[..., 0] != MISSING) & (arr[..., 1] != MISSING) & ~bad[:, None]
        return Coco18Sequence(np.where(bad[:, None, None], MISSING, arr), valid, str(path), bad,
                              {t: r for t, (_, r) in problems.items()}, {t: k for t, (k, _) in problems.items()})
    raise UserError(f"array has shape {arr.shape}; expected {expected}", path)


def template_pose(height: int = 256, width: int = 256) -> np.ndarray:
    """A standing figure (18, 2) in canvas pixels, for export verification and tests."""
    unit = np.array([[0.50, 0.12], [0.50, 0.24], [0.40, 0.25], [0.36, 0.40], [0.35, 0.54], [0.60, 0.25],
                     [0.64, 0.40], [0.65, 0.54], [0.44, 0.55], [0.43, 0.73], [0.43, 0.90], [0.56, 0.55],
                     [0.57, 0.73], [0.57, 0.90], [0.48, 0.10], [0.52, 0.10], [0.46, 0.11], [0.54, 0.11]])
    return unit * np.array([width, height], dtype=np.float64)
