"""Read keypoint files into one form: a :class:`KeypointSequence` of 122 joints per frame, in
SOURCE-IMAGE pixels (the full video frame, e.g. 1280x720 for Oliver, before the crop), and move
them onto the network canvas with :func:`canvas_transform`.

Bad input policy (docs/streaming.md, "Bad frames"): a problem with the whole file (missing,
unreadable, wrong key, wrong shape, no frames, wrong joint count) raises :class:`UserError` with
one line naming the file. A frame whose values fail :mod:`.validate` (NaN/inf, or a coordinate
beyond its range) is not fatal: it is marked in ``bad`` (with a reason in ``bad_reasons`` and a
kind in ``bad_kinds``), its coordinates are set to 0 and its joints to invalid, so the renderer
can apply ``--on-bad-frame`` (default: hold the last good pose). Frame numbers (``index``) are
kept as the input gives them (an OpenPose folder with a missing file has a jump there); the
stream's one gap policy decides what a jump means.
"""
from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ..config import Pose2ImgConfig
from ..errors import BadFrame, UserError
from .validate import frame_problem, sequence_problems
from .layout import N_BODY25, N_FACE, N_HAND, N_JOINTS, N_NPZ_JOINTS, N_OPENPOSE, NECK, OPENPOSE_TO_122

PathLike = Union[str, Path]

ACCEPTED_FORMATS = ("a folder of OpenPose JSON files", ".json (one OpenPose frame)",
                    ".npz (Speech Drives Templates poses_pred_batch)", ".npy (3x137 or 2x122, or T of them)")
NPZ_KEY = "poses_pred_batch"
#: OpenPose JSON keys in 137-column order, with the number of points each must hold
OPENPOSE_PARTS = (("pose_keypoints_2d", N_BODY25), ("face_keypoints_2d", N_FACE),
                  ("hand_left_keypoints_2d", N_HAND), ("hand_right_keypoints_2d", N_HAND))
_OPENPOSE_FRAME = re.compile(r"(\d+)_keypoints\.json$", re.IGNORECASE)
_MAP = np.asarray(OPENPOSE_TO_122)


@dataclasses.dataclass(frozen=True, eq=False)
class KeypointSequence:
    """T frames of the 122-joint layout.

    ``xy``: float64 (T, 122, 2), (x, y) in source-image pixels (origin top-left, y down).
    ``valid``: bool (T, 122), False for joints the detector did not find and for bad frames.
    ``bad``: bool (T,), frames that could not be used (NaN/inf or out-of-range values);
    ``bad_reasons`` maps such a row to a short reason and ``bad_kinds`` to its kind (``nan``,
    ``range``). ``index``: int64 (T,), each row's frame number counted from the first (an
    OpenPose folder with a missing file jumps there; other inputs are 0..T-1). ``fps`` is None
    when the file does not say.
    """

    xy: np.ndarray
    valid: np.ndarray
    path: str
    fps: Optional[float] = None
    bad: Optional[np.ndarray] = None
    bad_reasons: Dict[int, str] = dataclasses.field(default_factory=dict)
    bad_kinds: Dict[int, str] = dataclasses.field(default_factory=dict)
    index: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        t = self.xy.shape[0]
        if self.xy.shape != (t, N_JOINTS, 2) or self.valid.shape != (t, N_JOINTS):
            raise ValueError(f"KeypointSequence wants xy (T, {N_JOINTS}, 2) and valid (T, {N_JOINTS}); "
                             f"got {self.xy.shape} and {self.valid.shape}")
        if self.bad is None:
            object.__setattr__(self, "bad", np.zeros(t, dtype=bool))
        if self.index is None:
            object.__setattr__(self, "index", np.arange(t, dtype=np.int64))

    def __len__(self) -> int:
        return self.xy.shape[0]

    def canvas_xy(self, config: Pose2ImgConfig) -> np.ndarray:
        """(T, 122, 2) float64 canvas pixels, see :func:`canvas_transform`."""
        return canvas_transform(self.xy, config)


def canvas_transform(xy: np.ndarray, config: Pose2ImgConfig) -> np.ndarray:
    """Source-image pixels -> network-canvas pixels, float64, any leading shape (..., K, 2).

    Subtract the crop offset (``w_bias``, ``h_bias``), then divide by ``config.scale``, in that
    order and in float64, exactly as the reference does for source and target keypoints
    (canvas pixel (u, v) at scale s is image pixel (u * s + w_bias, v * s + h_bias)).
    """
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim < 1 or xy.shape[-1] != 2:
        raise ValueError(f"canvas_transform wants (..., 2) (x, y) pixels; got shape {xy.shape}")
    return (xy - np.array([config.w_bias, config.h_bias], dtype=np.float64)) / config.scale


def validate_frame(xy: np.ndarray, valid: np.ndarray, index: int, path: Optional[PathLike] = None) -> None:
    """Check one frame of a stream: (122, 2) finite coordinates and a (122,) mask.

    Raises :class:`BadFrame` (kind ``shape`` or ``nan``) for the ``--on-bad-frame`` policy.
    """
    xy, valid = np.asarray(xy), np.asarray(valid)
    if xy.shape != (N_JOINTS, 2) or valid.shape != (N_JOINTS,):
        raise BadFrame(f"keypoints have shape {xy.shape} (mask {valid.shape}); expected ({N_JOINTS}, 2)",
                       kind="shape", frame=index, path=path)
    problem = frame_problem(xy)
    if problem:
        raise BadFrame(problem[1], kind=problem[0], frame=index, path=path)


def _sequence(xy: np.ndarray, valid: np.ndarray, path: PathLike, conf: Optional[np.ndarray] = None,
              index: Optional[np.ndarray] = None) -> KeypointSequence:
    """Mark the frames of (T, 122, 2) ``xy`` (and (T, 122) ``conf``) that fail the value check bad:
    xy 0, valid False, with their reason and kind."""
    problems = sequence_problems(xy, conf)
    bad = np.zeros(len(xy), dtype=bool)
    bad[list(problems)] = True
    xy = np.where(bad[:, None, None], 0.0, xy)
    valid = valid & ~bad[:, None]
    return KeypointSequence(xy=xy, valid=valid, path=str(path), bad=bad,
                            bad_reasons={t: reason for t, (_, reason) in problems.items()},
                            bad_kinds={t: kind for t, (kind, _) in problems.items()}, index=index)


def openpose_validity(xy: np.ndarray, conf: Optional[np.ndarray]) -> np.ndarray:
    """Public name of the OpenPose missing-joint rule, for live streams (see below)."""
    return _openpose_validity(xy, conf)


def _openpose_validity(xy: np.ndarray, conf: Optional[np.ndarray]) -> np.ndarray:
    """A joint is missing when its confidence is 0, it sits at (0, 0), or x or y is the -1 marker."""
    x, y = xy[..., 0], xy[..., 1]
    with np.errstate(invalid="ignore"):
        valid = ~((x == 0) & (y == 0)) & (x != -1) & (y != -1)
        if conf is not None:
            valid &= conf > 0
    return valid


def openpose137_to_122(rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """OpenPose (x, y, confidence) rows (..., 3, 137) in source-image pixels -> the 122 layout:
    float64 xy (..., 122, 2) (same pixels) and the bool validity mask (..., 122)."""
    kept = np.asarray(rows, dtype=np.float64)[..., _MAP]
    xy = np.ascontiguousarray(np.swapaxes(kept[..., :2, :], -1, -2))
    return xy, _openpose_validity(xy, kept[..., 2, :])


def _load_array_file(path: Path, what: str):
    if not path.exists():
        raise UserError(f"file not found; expected {what}", path)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"cannot read ({type(exc).__name__}: {_first_line(exc)}); expected {what}", path) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def read_npz(path: PathLike, config: Pose2ImgConfig, batch_index: int = 0) -> KeypointSequence:
    """Speech Drives Templates poses: ``poses_pred_batch`` (N, T, 2, 121), neck-relative, no neck.

    Like the reference's ``NPZ_infer``: insert a zero neck at index 1, divide by
    ``config.infer_scale``, add ``config.root_node``; the result is in source-image pixels with
    the neck exactly at ``root_node``. All joints are valid (the format has no confidence).
    """
    path = Path(path)
    expected = f"a Speech Drives Templates .npz with {NPZ_KEY} of shape (N, T, 2, {N_NPZ_JOINTS})"
    data = _load_array_file(path, expected)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UserError(f"is a single .npy array, not an .npz archive; expected {expected}", path)
    with data:
        if NPZ_KEY not in data.files:
            raise UserError(f"has keys {sorted(data.files)}, no {NPZ_KEY}; expected {expected}", path)
        try:
            batch = data[NPZ_KEY]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise UserError(f"cannot read {NPZ_KEY} ({_first_line(exc)})", path) from None
    if batch.ndim != 4 or batch.shape[2] != 2 or batch.shape[3] != N_NPZ_JOINTS:
        raise UserError(f"{NPZ_KEY} has shape {batch.shape}; expected (N, T, 2, {N_NPZ_JOINTS})", path)
    if not np.issubdtype(batch.dtype, np.number) or np.issubdtype(batch.dtype, np.complexfloating):
        raise UserError(f"{NPZ_KEY} has dtype {batch.dtype}; expected float", path)
    if not 0 <= batch_index < batch.shape[0]:
        raise UserError(f"{NPZ_KEY} holds {batch.shape[0]} sequence(s); batch index {batch_index} "
                        f"is out of range (expected 0..{batch.shape[0] - 1})", path)
    if batch.shape[1] == 0:
        raise UserError(f"{NPZ_KEY} has shape {batch.shape}: zero frames; expected T >= 1", path)
    poses = np.insert(batch[batch_index].astype(np.float64), NECK, 0.0, axis=2)  # (T, 2, 122)
    root = np.array(config.root_node, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        xy = (poses / config.infer_scale + root).transpose(0, 2, 1)
    return _sequence(np.ascontiguousarray(xy), np.ones(xy.shape[:2], dtype=bool), path)


def read_npy(path: PathLike) -> KeypointSequence:
    """A ``.npy`` of one frame or T frames, in source-image pixels.

    Accepted: (3, 137) OpenPose x/y/confidence rows (validity as OpenPose: confidence 0, (0, 0)
    or -1 means missing), (2, 122) or (122, 2) (missing only when (0, 0) or -1), and sequences
    (T, 3, 137), (T, 2, 122), (T, 122, 2). A single frame gives a sequence of length 1.
    """
    path = Path(path)
    expected = "(3, 137), (2, 122), (122, 2), (T, 3, 137), (T, 2, 122) or (T, 122, 2)"
    arr = _load_array_file(path, f"a keypoint array of shape {expected}")
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise UserError(f"is an .npz archive, not an .npy array; expected shape {expected}", path)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise UserError(f"has dtype {arr.dtype}; expected float keypoints of shape {expected}", path)
    seq = arr.astype(np.float64)[None] if arr.ndim == 2 else arr.astype(np.float64)
    frame_shape = seq.shape[1:] if seq.ndim == 3 else None
    if frame_shape not in ((3, N_OPENPOSE), (2, N_JOINTS), (N_JOINTS, 2)):
        raise UserError(f"array has shape {arr.shape}; expected {expected}", path)
    if len(seq) == 0:
        raise UserError(f"array has shape {arr.shape}: zero frames; expected T >= 1", path)
    if frame_shape == (3, N_OPENPOSE):
        xy, valid = openpose137_to_122(seq)
        return _sequence(xy, valid, path, conf=seq[:, 2, _MAP])
    xy = np.ascontiguousarray(seq.transpose(0, 2, 1)) if frame_shape == (2, N_JOINTS) else seq
    return _sequence(xy, _openpose_validity(xy, None), path)


def openpose_rows(doc: object, path: Optional[PathLike] = None, stream: bool = False) -> Optional[np.ndarray]:
    """One OpenPose JSON document -> (3, 137) rows of ``people[0]``, or None when nobody was found.

    A malformed document raises :class:`UserError` naming ``path``; with ``stream=True`` it is a
    :class:`BadFrame` of kind ``decode`` (not an OpenPose document) or ``shape`` (a part with
    the wrong number of points), so a live stream can apply its bad-frame policy instead.
    """
    def bad(message: str, kind: str) -> UserError:
        return BadFrame(message, kind=kind, path=path) if stream else UserError(message, path)

    if not isinstance(doc, dict) or not isinstance(doc.get("people"), list):
        raise bad("has no 'people' list; expected an OpenPose keypoints JSON", "decode")
    if not doc["people"]:
        return None
    person = doc["people"][0]
    if not isinstance(person, dict):
        raise bad(f"people[0] is {type(person).__name__}; expected an object with *_keypoints_2d", "decode")
    parts = []
    for key, n in OPENPOSE_PARTS:
        try:
            values = np.asarray(person.get(key, []), dtype=np.float64)
        except (TypeError, ValueError):
            raise bad(f"people[0].{key} is not a list of numbers", "decode") from None
        if values.shape != (n * 3,):
            hint = " (run OpenPose with --face --hand)" if values.size == 0 and key != "pose_keypoints_2d" else ""
            raise bad(f"people[0].{key} has {values.size} values; expected {n * 3} "
                      f"({n} points x (x, y, confidence)){hint}", "shape")
        parts.append(values.reshape(n, 3))
    return np.concatenate(parts).T



def _read_json_doc(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("file not found; expected an OpenPose keypoints JSON", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read as JSON ({_first_line(exc)}); expected an OpenPose keypoints JSON",
                        path) from None


def _natural_key(name: str) -> List[Union[int, str]]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def openpose_json_files(folder: Path) -> List[Tuple[int, Path]]:
    """The JSON files of an OpenPose output folder in frame order, each with its frame number
    counted from the first.

    With OpenPose names (``*_<frame>_keypoints.json``) the number comes from the name, so a
    missing file leaves a jump (the stream's gap policy decides what it means; nothing here
    allocates per missing frame, so 0 and 100000000 in one folder are two entries); otherwise the
    files are numbered 0, 1, ... in natural sort order.
    """
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.suffix.lower() == ".json" and p.is_file()]
    if not files:
        raise UserError("folder has no .json files; expected OpenPose keypoints JSON, one per frame", folder)
    numbers = [_OPENPOSE_FRAME.search(p.name) for p in files]
    if not all(numbers):
        return list(enumerate(sorted(files, key=lambda p: _natural_key(p.name))))
    by_frame: Dict[int, Path] = {}
    for match, p in zip(numbers, files):
        frame = int(match.group(1))
        if frame in by_frame:
            raise UserError(f"frame {frame} appears twice ({by_frame[frame].name}, {p.name}); "
                            "expected one OpenPose JSON per frame", folder)
        by_frame[frame] = p
    first = min(by_frame)
    return [(frame - first, by_frame[frame]) for frame in sorted(by_frame)]


def read_openpose_json(path: PathLike) -> KeypointSequence:
    """OpenPose ``--face --hand`` output: a folder of per-frame JSON files, or one JSON file.

    Uses ``people[0]`` (OpenPose's first detection) of each frame; a frame with no people gives
    all joints invalid. Coordinates are source-image pixels as OpenPose writes them; ``index``
    holds the frame numbers (a missing file is a jump, see :func:`openpose_json_files`).
    """
    path = Path(path)
    if not path.exists():
        raise UserError("not found; expected an OpenPose JSON file or a folder of them", path)
    numbered = openpose_json_files(path) if path.is_dir() else [(0, path)]
    rows = np.zeros((len(numbered), 3, N_OPENPOSE))
    for t, (_, file) in enumerate(numbered):
        frame_rows = openpose_rows(_read_json_doc(file), file)
        if frame_rows is not None:
            rows[t] = frame_rows
    xy, valid = openpose137_to_122(rows)
    return _sequence(xy, valid, path, rows[:, 2, _MAP], np.array([n for n, _ in numbered], dtype=np.int64))


def read_keypoints(path: PathLike, config: Pose2ImgConfig, batch_index: int = 0) -> KeypointSequence:
    """Read any accepted keypoint file by what it is: a folder (OpenPose JSON), ``.json``,
    ``.npz`` (needs ``config`` for the root node) or ``.npy``. Source-image pixels out."""
    path = Path(path)
    if path.is_dir():
        return read_openpose_json(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_openpose_json(path)
    if suffix == ".npz":
        return read_npz(path, config, batch_index)
    if suffix == ".npy":
        return read_npy(path)
    if not path.exists():
        raise UserError(f"not found; expected one of: {'; '.join(ACCEPTED_FORMATS)}", path)
    raise UserError(f"unknown keypoint format {suffix or '(no suffix)'!r}; expected one of: "
                    f"{'; '.join(ACCEPTED_FORMATS)}", path)
