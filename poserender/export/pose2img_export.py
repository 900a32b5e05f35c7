"""``poserender export``: Pose2Img checkpoint + config -> DIR with source.onnx, frame.onnx and
manifest.json. Each graph is verified against torch with ONNX Runtime before the directory is
written; the numbers go into the manifest."""
from __future__ import annotations

import datetime
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import numpy as np
import torch

from .. import __version__
from ..config import Pose2ImgConfig
from ..errors import UserError
from ..fileio import check_writable, output_error, temp_dir_beside
from ..keypoints.template import gesture_sequence, template_pose
from ..manifest import MANIFEST, sha256_file
from ..models.checkpoint import load_generator
from ..models.fuse import fuse_upsample_convs
from ..models.pose2img import Pose2ImgGenerator, Pose2ImgGeometry
from ..models.warp import WARP_MODES
from .onnx_export import OPSET, export_stage, publish
from .stages import pose2img_stages
from .trt_check import check_onnx
from .verify import compare_outputs, passes, run_onnx, run_torch


def verification_inputs(height: int, width: int, frames: int = 2, seed: int = 0):
    """A smooth synthetic source image and template poses: realistic ranges for every input."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, size=(3, max(height // 16, 2), max(width // 16, 2))).astype(np.float32)
    image = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None], size=(height, width),
                                            mode="bilinear", align_corners=False).numpy()
    source = template_pose(height, width)[None].astype(np.float32)
    targets = gesture_sequence(frames, height, width, seed=seed).astype(np.float32)
    ones = lambda n: np.ones((n, source.shape[1]), np.float32)  # noqa: E731
    return ({"source_image": image, "source_keypoints": source, "source_valid": ones(1)},
            {"target_keypoints": targets, "target_valid": ones(frames)})


def resolve_warp_mode(requested: Optional[str], meta: Dict[str, Any]) -> str:
    mode = requested or meta.get("warp_mode") or "legacy"   # the authors' checkpoints use legacy
    if mode not in WARP_MODES:
        raise UserError(f"warp mode {mode!r}; expected one of {', '.join(WARP_MODES)}")
    return mode


def export_generator(generator: Pose2ImgGenerator, config: Pose2ImgConfig, out_dir: Union[str, Path],
                     warp_mode: str = "legacy", checkpoint: Optional[Dict[str, Any]] = None,
                     log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Export, verify, and write ``out_dir`` (built in a temp sibling, renamed at the end)."""
    out_dir = Path(out_dir)
    config.check_canvas()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise UserError("exists and is not an exported model folder; choose a new or empty -o folder", out_dir)
    geometry = Pose2ImgGeometry.from_config(config, warp_mode)
    # graphs are traced from an exactly rewritten copy (fewer multiply-adds) and verified
    # against the unmodified reference-layout modules
    (source_spec, source_module), (frame_spec, frame_module) = pose2img_stages(generator, geometry)
    deploy = dict((spec.name, module) for spec, module in pose2img_stages(fuse_upsample_convs(generator), geometry))
    source_feed, target_feed = verification_inputs(geometry.height, geometry.width)
    check_writable(out_dir, "the exported model")
    work = temp_dir_beside(out_dir)
    try:
        stages = []
        source_ref = run_torch(source_module, source_spec, source_feed)
        frame_feed = {**target_feed,
                      "source_keypoints": source_feed["source_keypoints"],
                      "source_valid": source_feed["source_valid"], **source_ref}
        for spec, module, feed, ref in ((source_spec, source_module, source_feed, source_ref),
                                        (frame_spec, frame_module, frame_feed, None)):
            started = time.perf_counter()
            log(f"exporting {spec.name} stage to {spec.file} ...")
            export_stage(deploy[spec.name], spec, work / spec.file,
                         {k: v[:1] if k.startswith("target") else v for k, v in feed.items()})
            ref = ref if ref is not None else run_torch(module, spec, feed)
            report = compare_outputs(ref, run_onnx(work / spec.file, feed))
            if not passes(report):
                raise UserError(f"{spec.name} stage: ONNX Runtime disagrees with torch: {report}")
            readiness = check_onnx(work / spec.file, spec)   # recorded, not fatal: CPU backends do not need it
            log(f"  {readiness.summary()}")
            stages.append({**spec.to_dict(), "sha256": sha256_file(work / spec.file),
                           "tensorrt_readiness": readiness.to_dict(),
                           "verification": {"backend": "ort-cpu", "batch": int(next(iter(feed.values())).shape[0]),
                                            "outputs": report},
                           "export_seconds": round(time.perf_counter() - started, 2)})
            log(f"  {spec.name}: verified against torch, " + ", ".join(
                f"{k} max|err| {v['max_abs_error']:.2g}" for k, v in report.items()))
        import onnx

        manifest = {
            "family": "pose2img", "format_version": 1, "poserender": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "canvas": [geometry.height, geometry.width], "warp_mode": warp_mode, "width": generator.width,
            "precision": "fp32", "opset": OPSET, "graph_rewrites": ["upsample_conv_to_subpixel_2x2"], "config": config.to_dict(), "checkpoint": checkpoint or {},
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__},
            "stages": stages,
        }
        return publish(work, out_dir, manifest)
    except OSError as exc:     # disk full, ulimit -f, ...: nothing is left behind
        raise output_error(exc, out_dir, "the exported model") from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def export_checkpoint(checkpoint_path: Union[str, Path], config: Optional[Pose2ImgConfig], out_dir: Union[str, Path],
                      warp_mode: Optional[str] = None, log: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """Export a reference-format checkpoint (ours or the authors'); ``config`` may be None only
    for our checkpoints, which carry their config."""
    generator, meta = load_generator(checkpoint_path)
    log(f"exporting {checkpoint_path} to {out_dir}")
    if config is None:
        if not meta.get("config"):
            raise UserError("has no embedded config (an authors' checkpoint?); pass --config CFG.yaml",
                            checkpoint_path)
        config = Pose2ImgConfig.from_dict(meta["config"])
    mode = resolve_warp_mode(warp_mode, meta)
    info = {"path": str(Path(checkpoint_path).resolve()), "sha256": sha256_file(checkpoint_path),
            "meta": {k: v for k, v in meta.items() if k != "config"}}
    return export_generator(generator, config, out_dir, mode, info, log)
