"""PSC's own render modes, beside the pose stream every family has:

* reference layout: a folder with I0/ S0/ P0/ P1/ and t values -> one image per sample and t
  (t >= 1 uses P1 itself, as the reference does), optionally the reference's process strip;
  not a stream (each sample has its own identity and writes named images), so it runs directly
  on the engines (:class:`PSCModel`): source -> [interp] -> parsing -> frame, in batches;
* interpolation: two key poses and N in-between frames via PM-Net: the interp stage makes the
  poses (:func:`interpolated_poses`), which then stream through the pipeline like any pose file.

Inputs are all read and checked before any output exists; outputs are written under temporary
names. No torch here.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..errors import UserError
from ..fileio import temp_dir_beside
from ..keypoints.coco18 import JOINT_COLORS_RGB, LIMBS, read_psc_pose
from .psc_io import load_psc_image, load_psc_parsing

#: the reference's parsing colours (network/psc_model.py par2img), RGB, label 0..6
PARSING_COLORS_RGB = ((0, 0, 0), (255, 255, 0), (0, 255, 255), (255, 0, 255), (0, 0, 255), (0, 255, 0), (255, 0, 0))
LAYOUT_FOLDERS = ("I0", "S0", "P0", "P1")
Warn = Callable[[str], None]


class PSCModel:
    """The stages of an exported PSC model as engines, with batching. ``engines`` maps stage name
    -> an active Engine (see engines/select.stage_engines)."""

    def __init__(self, engines: Dict[str, Any], manifest: Dict[str, Any]):
        self.engines = engines
        self.height, self.width = manifest["canvas"]
        self.classes = int(manifest["config"]["classes"])

    def _max_batch(self, stage: str, requested: int) -> int:
        return max(1, min(int(requested), self.engines[stage].spec.max_batch))

    def source(self, image: np.ndarray, labels: np.ndarray) -> Dict[str, np.ndarray]:
        return self.engines["source"].infer({"source_image": image, "source_labels": labels})

    def interpolate(self, pose_a: Tuple[np.ndarray, np.ndarray], pose_b: Tuple[np.ndarray, np.ndarray],
                    ts: Sequence[float], batch: int = 16) -> Tuple[np.ndarray, np.ndarray]:
        """Keypoints (N, 18, 2) and validity (N, 18) of PM-Net's poses at ``ts`` (all < 1)."""
        feed = {"pose_a": pose_a[0][None].astype(np.float32), "valid_a": pose_a[1][None].astype(np.float32),
                "pose_b": pose_b[0][None].astype(np.float32), "valid_b": pose_b[1][None].astype(np.float32)}
        ts = np.asarray(ts, np.float32)
        step = self._max_batch("interp", batch)
        outs = [self.engines["interp"].infer({**feed, "t": ts[i:i + step]}) for i in range(0, len(ts), step)]
        return np.concatenate([o["keypoints"] for o in outs]), np.concatenate([o["valid"] for o in outs])

    def render(self, source: Dict[str, np.ndarray], keypoints: np.ndarray, valid: np.ndarray,
               batch: int = 4) -> Tuple[np.ndarray, np.ndarray]:
        """Frames (B, H, W, 3) uint8 BGR and target labels (B, H, W) for poses (B, 18, 2)/(B, 18)."""
        frames, labels = [], []
        step = min(self._max_batch("parsing", batch), self._max_batch("frame", batch))
        features = {k: v for k, v in source.items() if k != "parsing_code"}
        for i in range(0, len(keypoints), step):
            target = self.engines["parsing"].infer({"target_keypoints": keypoints[i:i + step].astype(np.float32),
                                                    "target_valid": valid[i:i + step].astype(np.float32),
                                                    "parsing_code": source["parsing_code"]})["target_labels"]
            frames.append(self.engines["frame"].infer({"target_labels": target, **features})["frames"])
            labels.append(target)
        return np.concatenate(frames), np.concatenate(labels)


# -- panels (the reference's process strip) ----------------------------------------------------------------

def skeleton_image(xy: np.ndarray, valid: np.ndarray, height: int, width: int) -> np.ndarray:
    """The reference's map2img, BGR uint8: white anti-aliased limbs, joints as radius-6 coloured discs."""
    canvas = np.zeros((height, width, 3), np.uint8)
    pts = [tuple(int(v) for v in np.trunc(p)) for p in xy]
    for a, b in LIMBS:
        if valid[a] and valid[b]:
            cv2.line(canvas, pts[a], pts[b], (255, 255, 255), 1, cv2.LINE_AA)
    for j, (p, ok) in enumerate(zip(pts, valid)):
        if ok:
            cv2.circle(canvas, p, 6, JOINT_COLORS_RGB[j][::-1], -1)
    return canvas


def parsing_image(labels: np.ndarray) -> np.ndarray:
    """(H, W) labels -> BGR uint8 with the reference's parsing colours."""
    return np.asarray(PARSING_COLORS_RGB, np.uint8)[:, ::-1][labels]


def image_to_bgr8(image: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) RGB [-1, 1] -> (H, W, 3) BGR uint8."""
    return np.clip(np.round((image[0].transpose(1, 2, 0)[:, :, ::-1] + 1) * 127.5), 0, 255).astype(np.uint8)


def panel_strip(p0, p1, s0_labels, i0, pt, st_labels, output) -> np.ndarray:
    """P0 skeleton | P1 skeleton | S0 parsing | I0 | Pt skeleton | St parsing | output (BGR uint8)."""
    h, w = s0_labels.shape
    return np.concatenate([skeleton_image(*p0, h, w), skeleton_image(*p1, h, w), parsing_image(s0_labels),
                           image_to_bgr8(i0), skeleton_image(*pt, h, w), parsing_image(st_labels), output], axis=1)


# -- mode 1: reference layout -------------------------------------------------------------------------------

@dataclasses.dataclass
class LayoutSample:
    stem: str
    image: np.ndarray
    labels: np.ndarray
    p0: Tuple[np.ndarray, np.ndarray]
    p1: Tuple[np.ndarray, np.ndarray]


def read_reference_layout(folder: Path, height: int, width: int, classes: int, warn: Warn) -> List[LayoutSample]:
    """Pair I0/S0/P0/P1 by file stem (sorted; quirk listdir-pairing) and read and check everything."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError("not a folder; expected the reference layout with I0/ S0/ P0/ P1/", folder)
    stems: Dict[str, Dict[str, Path]] = {}
    for name in LAYOUT_FOLDERS:
        sub = folder / name
        if not sub.is_dir():
            raise UserError(f"has no {name}/ folder; expected I0/ (images), S0/ (parsings), P0/ and P1/ (pose csv)", folder)
        stems[name] = {p.stem: p for p in sorted(sub.iterdir()) if p.is_file() and not p.name.startswith(".")}
    images = stems["I0"]
    if not images:
        raise UserError("I0/ has no images", folder)
    for name in LAYOUT_FOLDERS[1:]:
        missing = sorted(set(images) - set(stems[name]))
        extra = sorted(set(stems[name]) - set(images))
        if missing or extra:
            detail = (f"missing {', '.join(missing[:3])}" if missing else "") + \
                     ("; " if missing and extra else "") + (f"no image for {', '.join(extra[:3])}" if extra else "")
            raise UserError(f"{len(stems[name])} files for {len(images)} images in I0/ ({detail}); every I0 "
                            f"image needs an S0, P0 and P1 file of the same name", folder / name)
    samples = []
    for stem in sorted(images):
        samples.append(LayoutSample(stem, load_psc_image(images[stem], height, width, warn),
                                    load_psc_parsing(stems["S0"][stem], height, width, classes),
                                    read_psc_pose(stems["P0"][stem]), read_psc_pose(stems["P1"][stem])))
    return samples


def render_reference_layout(model: PSCModel, data_dir: Path, output: Path, ts: Sequence[float],
                            panels: bool = False, fmt: str = "png", batch: int = 4, warn: Warn = lambda s: None,
                            progress: Callable[[int, int], Any] = lambda d, n: None) -> Dict[str, Any]:
    """One image ``<stem>_<t>.<fmt>`` per sample and t in ``output/`` (and the process strips in
    ``output/process/`` with ``panels``); returns a summary dict."""
    if not ts or any(not np.isfinite(t) or t <= 0 for t in ts):
        raise UserError(f"--t {','.join(map(str, ts))}: expected positive values (1 = P1 itself)")
    if fmt not in ("png", "jpg"):
        raise UserError(f"format {fmt!r}: the reference layout writes images; expected png or jpg")
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError("output exists and is not an empty folder; choose a new folder", output)
    samples = read_reference_layout(data_dir, model.height, model.width, model.classes, warn)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = temp_dir_beside(output)
    started, written = time.perf_counter(), 0
    try:
        if panels:
            (work / "process").mkdir()
        for n, sample in enumerate(samples):
            source = model.source(sample.image, sample.labels)
            inner = [t for t in ts if t < 1]
            kp, kv = (model.interpolate(sample.p0, sample.p1, inner) if inner
                      else (np.zeros((0, 18, 2), np.float32), np.zeros((0, 18), np.float32)))
            n_end = len(ts) - len(inner)
            kp = np.concatenate([kp, np.repeat(sample.p1[0][None], n_end, 0)]).astype(np.float32)
            kv = np.concatenate([kv, np.repeat(sample.p1[1][None], n_end, 0)]).astype(np.float32)
            order = [t for t in ts if t < 1] + [t for t in ts if t >= 1]
            frames, labels = model.render(source, kp, kv, batch)
            for t, frame, lab, xy, ok in zip(order, frames, labels, kp, kv):
                name = f"{sample.stem}_{t:.2f}.{fmt}"
                _imwrite(work / name, frame)
                if panels:
                    pt = (xy, ok > 0) if t < 1 else _snapped(xy, ok, model.height, model.width)
                    strip = panel_strip((sample.p0[0], sample.p0[1]), (sample.p1[0], sample.p1[1]), sample.labels[0],
                                        sample.image, pt, lab, frame)
                    _imwrite(work / "process" / name, strip)
                written += 1
            progress(n + 1, len(samples))
        if output.exists():
            output.rmdir()   # checked empty above
        os.replace(work, output)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return {"path": output, "images": written, "samples": len(samples), "seconds": time.perf_counter() - started}


def _snapped(xy: np.ndarray, valid: np.ndarray, height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Host twin of the parsing stage's peak snap, for drawing only (truncate, clamp, keep if > 0.5)."""
    t = np.trunc(xy)
    c = np.clip(t, 0, [width - 1, height - 1])
    d2 = ((c - t) ** 2).sum(-1)
    return c, (valid > 0) & (np.exp(-d2 / 20000.0) > 0.5)


def _imwrite(path: Path, image: np.ndarray) -> None:
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if path.suffix == ".jpg" else []
    if not cv2.imwrite(str(path), np.ascontiguousarray(image), params):
        raise UserError("could not write the image (disk full?)", path)


# -- interpolation: the poses, for the pipeline -----------------------------------------------

def interpolated_poses(model: PSCModel, pose_a: Path, pose_b: Path, frames: int) -> Tuple[np.ndarray, np.ndarray]:
    """Key pose A, ``frames`` PM-Net poses at t = i / (frames + 1), key pose B: (frames + 2, 18, 2)
    keypoints and validity, in canvas pixels, ready to stream through the pipeline."""
    if frames < 1:
        raise UserError(f"--frames {frames}: expected at least 1 in-between frame")
    a, b = read_psc_pose(pose_a), read_psc_pose(pose_b)
    ts = np.arange(1, frames + 1, dtype=np.float64) / (frames + 1)
    kp, kv = model.interpolate(a, b, ts, batch=16)
    xy = np.concatenate([a[0][None], kp, b[0][None]]).astype(np.float32)
    valid = np.concatenate([a[1][None], kv, b[1][None]]).astype(np.float32)
    return xy, valid


# -- the modes as the render command selects them ------------------------------------------------

def _parse_ts(text: Optional[str]) -> Tuple[float, ...]:
    try:
        return tuple(float(v) for v in (text or "0.2,0.4,0.6,0.8,1").split(",") if v.strip())
    except ValueError:
        raise UserError(f"--t {text!r}: expected comma-separated numbers, e.g. 0.2,0.4,0.6,0.8,1") from None


def _engines(manifest, request, names: Sequence[str], torch_stages):
    from ..engines.select import stage_engines

    backend, engines = stage_engines(Path(manifest.dir), manifest, request.backend, torch_stages=torch_stages)
    return backend, {e.spec.name: e for e in engines if e.spec.name in names}


def select_mode(options: Dict[str, Any], torch_stages):
    """The PSC render mode ``options`` select (--psc-data: reference layout; --key-poses:
    interpolation), None for a pose stream; one line for options that do not go together.
    ``torch_stages`` builds stages for the torch backends (the family's)."""
    from .base import RenderMode

    psc_data, key_poses, frames = options.get("psc_data"), options.get("key_poses"), options.get("frames")
    if psc_data and key_poses:
        raise UserError("PSC renders one of: --psc-data DIR (reference layout), --keypoints POSES (sequence) or "
                        "--key-poses A B --frames N (interpolation); got --psc-data and --key-poses")
    if key_poses and frames is None:
        raise UserError("--key-poses needs --frames N (in-between frames)")
    if frames is not None and not key_poses:
        raise UserError("--frames applies to --key-poses (interpolation)")
    if not psc_data and (options.get("t_values") or options.get("panels")):
        raise UserError("--t and --panels apply to --psc-data (the reference layout)")
    if psc_data:
        return RenderMode("--psc-data", run=lambda manifest, identity, request, log, progress: _layout(
            manifest, identity, request, log, progress, Path(psc_data), _parse_ts(options.get("t_values")),
            bool(options.get("panels")), torch_stages))
    if key_poses:
        return RenderMode("--key-poses", source=lambda manifest, identity, request, log: _interpolation(
            manifest, identity, request, [Path(p) for p in key_poses], int(frames), torch_stages),
            stream_options=("stdout", "realtime", "precision", "preview", "metrics", "devices", "replicate"))
    return None


def _layout(manifest, identity, request, log, progress, data: Path, ts, panels: bool, torch_stages) -> List[str]:
    if request.keypoints:
        raise UserError("PSC renders one of: --psc-data DIR (reference layout), --keypoints POSES (sequence) or "
                        "--key-poses A B --frames N (interpolation); got --psc-data and --keypoints")
    if any(identity.values()):
        raise UserError("--psc-data takes its sources from I0/ and S0/; drop --source/--source-parsing")
    if request.audio or request.stream.max_frames:
        raise UserError("--audio and --max-frames apply to video modes, not to --psc-data")
    if request.fmt == "raw":
        raise UserError("--format raw applies to pose streams (--keypoints); expected mp4, png or jpg here")
    backend, engines = _engines(manifest, request, ("source", "interp", "parsing", "frame"), torch_stages)
    for engine in engines.values():
        engine.activate()
    try:
        model = PSCModel(engines, manifest)
        result = render_reference_layout(model, data, Path(request.output), ts, panels, request.fmt or "png",
                                         request.stream.batch, lambda message: log(f"poserender: warning: {message}"),
                                         progress)
    finally:
        for engine in engines.values():
            engine.deactivate()
    h, w = manifest.canvas
    return [f"rendered {result['images']} images of {result['samples']} samples to {result['path']} in "
            f"{result['seconds']:.1f} s, backend {backend}, psc {h}x{w}, AA-Net norm "
            f"{manifest.config.get('aa_norm', 'authors')}"]


def _interpolation(manifest, identity, request, key_poses: List[Path], frames: int, torch_stages):
    from ..runtime.sources import ArraySource

    if request.keypoints:
        raise UserError("PSC renders one of: --psc-data DIR (reference layout), --keypoints POSES (sequence) or "
                        "--key-poses A B --frames N (interpolation); got --keypoints and --key-poses")
    if request.stream.max_frames:
        raise UserError("--max-frames applies to pose streams (--keypoints); use --frames with --key-poses")
    if request.follow:
        raise UserError("--follow applies to a folder of poses (--keypoints); not to --key-poses")
    _, engines = _engines(manifest, request, ("interp",), torch_stages)
    with engines["interp"]:
        xy, valid = interpolated_poses(PSCModel(engines, manifest), key_poses[0], key_poses[1], frames)
    source = ArraySource(xy, request.stream.fps, length=len(xy), description=f"{key_poses[0]} -> {key_poses[1]}",
                         valid=valid > 0)
    return source, f"interpolation: {len(xy)} frames ({frames} in-between) from {key_poses[0]} to {key_poses[1]}"
