"""Pose2Img (Speech Drives Templates, ICCV 2021): a generator of three U-Nets and limb warps.

Stages: ``source`` (once per identity: limb-mask prior, stage A, masked parts, stage D) and
``frame`` (per target frame: heat maps, limb transforms, warps, stage C, fusion, to uint8 BGR).
Identity: the source image (a video frame containing the config's crop) and its OpenPose
keypoints. Frames: OpenPose 137 points or the 122 used ones, in source-image pixels, moved onto
the canvas with the config's crop biases and scale. A checkpoint is a ``.pth`` holding
``{'G': state_dict}`` (the authors', with their YAML config, or ours, which embeds it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import cv2
import numpy as np

from ..config import Pose2ImgConfig
from ..errors import BadFrame, UserError
from ..images import read_image
from ..keypoints import OPENPOSE_TO_122, canvas_transform, read_keypoints
from ..keypoints.layout import N_JOINTS, N_OPENPOSE
from ..keypoints.validate import frame_problem
from ..runtime.adapters import KeypointBatches
from ..runtime.sources import Frame, FrameSource, OpenPoseFolderSource, SequenceSource
from ..specs import StageSpec, TensorSpec
from .base import ExportPlan, ExportStage, Family, IdentityInput, Int8Plan, Log, TrainingPlan, Warn

_OPENPOSE_MAP = np.asarray(OPENPOSE_TO_122)


def stage_specs(height: int, width: int, n_joints: int = 122, n_limbs: int = 8) -> Tuple[StageSpec, StageSpec]:
    """The two Pose2Img stages for a canvas of ``height`` x ``width`` pixels."""
    kp = TensorSpec("source_keypoints", "float32", ("batch", n_joints, 2), "canvas pixels (x, y)")
    kv = TensorSpec("source_valid", "float32", ("batch", n_joints), "1 = joint present, 0 = missing")
    source = StageSpec(
        "source",
        inputs=(TensorSpec("source_image", "float32", ("batch", 3, height, width), "BGR in [-1, 1]"), kp, kv),
        outputs=(TensorSpec("source_parts", "float32", ("batch", n_limbs, 3, height, width),
                            "source image times each limb's refined mask"),
                 TensorSpec("background", "float32", ("batch", 3, height, width), "stage D output, [-1, 1]")),
        min_batch=1, opt_batch=1, max_batch=4, file="source.onnx",
        doc="once per identity: limb-mask prior, source heat maps, stage A, masked parts, stage D")
    frame = StageSpec(
        "frame",
        inputs=(TensorSpec("target_keypoints", "float32", ("batch", n_joints, 2), "canvas pixels (x, y)"),
                TensorSpec("target_valid", "float32", ("batch", n_joints), "1 = joint present, 0 = missing"),
                TensorSpec("source_keypoints", "float32", (1, n_joints, 2), "canvas pixels (x, y)"),
                TensorSpec("source_valid", "float32", (1, n_joints), "1 = joint present"),
                TensorSpec("source_parts", "float32", (1, n_limbs, 3, height, width), "from the source stage"),
                TensorSpec("background", "float32", (1, 3, height, width), "from the source stage")),
        outputs=(TensorSpec("frames", "uint8", ("batch", height, width, 3), "BGR"),),
        min_batch=1, opt_batch=4, max_batch=16, file="frame.onnx",
        doc="per target frame: heat maps, limb transforms, warps, stage C, fusion, to uint8 BGR")
    return source, frame


# -- identity inputs ------------------------------------------------------------------------------

def load_source_image(path: Path, config: Pose2ImgConfig) -> np.ndarray:
    """The reference's source preprocessing: (1, 3, H, W) float32 BGR in [-1, 1] on the canvas.

    Read with OpenCV (BGR), crop rows ``h_bias:h_bias+img_h`` and columns
    ``w_bias:w_bias+img_w``, map to [-1, 1] in float64, resize bilinearly to the canvas.
    """
    path = Path(path)
    image = read_image(path, cv2.IMREAD_COLOR, "source image")
    top, left = int(config.h_bias), int(config.w_bias)
    need_h, need_w = top + config.img_h, left + config.img_w
    if image.shape[0] < need_h or image.shape[1] < need_w or top < 0 or left < 0:
        raise UserError(f"image is {image.shape[1]} x {image.shape[0]} (w x h); the config crops columns "
                        f"{left}..{need_w - 1} and rows {top}..{need_h - 1}, so expected at least "
                        f"{need_w} x {need_h}", path)
    crop = image[top:need_h, left:need_w].astype(np.float64) / 255.0 * 2.0 - 1.0
    height, width = config.canvas_hw
    if (height, width) != crop.shape[:2]:
        crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(crop.transpose(2, 0, 1)[None].astype(np.float32))


def load_source_keypoints(path: Path, config: Pose2ImgConfig) -> Tuple[np.ndarray, np.ndarray]:
    """First frame of ``path`` in canvas pixels: (1, 122, 2) float32, validity (1, 122) float32."""
    seq = read_keypoints(path, config)
    if seq.bad[0]:
        raise UserError(f"source keypoints are unusable ({seq.bad_reasons.get(0, 'bad frame')})", path)
    if not seq.valid[0].any():
        raise UserError("source keypoints have no valid joint (no person detected?)", path)
    xy = canvas_transform(seq.xy[:1], config).astype(np.float32)
    return xy, seq.valid[:1].astype(np.float32)


class Pose2ImgAdapter(KeypointBatches):
    """The runtime adapter: ``source`` once per identity, ``frame`` per batch.

    Accepted per-frame points: the 137 OpenPose points (body, face, hands; mapped to the 122
    used) or the 122-point model layout, in source-image pixels; they are moved onto the canvas
    with the config's crop biases and scale. A frame in which no joint is valid is bad
    (kind ``empty``: OpenPose found nobody).
    """

    family = "pose2img"
    identity_stages = ("source",)
    frame_stages = ("frame",)

    def __init__(self, config: Pose2ImgConfig, source_image: Path, source_keypoints: Path):
        self.config = config
        self.canvas_hw = tuple(config.canvas_hw)
        # read and check the identity before anything else exists (bad input -> no output)
        self._image = load_source_image(source_image, config)
        self._source_xy, self._source_valid = load_source_keypoints(source_keypoints, config)
        self._identity = None

    def open_file(self, path: Path, fps: float) -> FrameSource:
        """A folder of OpenPose JSON is parsed file by file; .npz/.npy/.json are read whole."""
        if Path(path).is_dir():
            return OpenPoseFolderSource(Path(path), fps)
        return SequenceSource(read_keypoints(path, self.config), fps)

    def identity_feed(self) -> Dict[str, np.ndarray]:
        return {"source_image": self._image, "source_keypoints": self._source_xy, "source_valid": self._source_valid}

    def keep_identity(self, outputs: Mapping[str, np.ndarray]) -> None:
        self._identity = {"source_keypoints": self._source_xy, "source_valid": self._source_valid, **outputs}

    def normalise(self, frame: Frame) -> Tuple[np.ndarray, np.ndarray]:
        """(122, 2) float32 canvas pixels and (122,) float32 validity."""
        xy, valid = frame.xy, frame.valid
        if xy.shape[0] == N_OPENPOSE:
            xy, valid = xy[_OPENPOSE_MAP], valid[_OPENPOSE_MAP]
        elif xy.shape[0] != N_JOINTS:
            raise BadFrame(f"{xy.shape[0]} joints; expected {N_OPENPOSE} (OpenPose body+face+hands) "
                           f"or {N_JOINTS}", kind="shape", frame=frame.index)
        problem = frame_problem(xy)         # sources check too; an array source may not have
        if problem is not None:
            raise BadFrame(problem[1], kind=problem[0], frame=frame.index)
        if not valid.any():
            raise BadFrame("no person detected (no valid joint)", kind="empty", frame=frame.index)
        return canvas_transform(xy, self.config).astype(np.float32), valid.astype(np.float32)


# -- export ---------------------------------------------------------------------------------------

def verification_inputs(height: int, width: int, frames: int = 2, seed: int = 0):
    """A smooth synthetic source image and template poses: realistic ranges for every input."""
    import cv2

    from ..keypoints.template import gesture_sequence, template_pose

    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, size=(max(height // 16, 2), max(width // 16, 2), 3)).astype(np.float32)
    # bilinear with half-pixel centres (torch's align_corners=False), without needing torch
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)[None].copy()
    source = template_pose(height, width)[None].astype(np.float32)
    targets = gesture_sequence(frames, height, width, seed=seed).astype(np.float32)
    ones = lambda n: np.ones((n, source.shape[1]), np.float32)  # noqa: E731
    return ({"source_image": image, "source_keypoints": source, "source_valid": ones(1)},
            {"target_keypoints": targets, "target_valid": ones(frames)})


def resolve_warp_mode(requested: Optional[str], meta: Mapping[str, Any]) -> str:
    from ..models.warp import WARP_MODES

    mode = requested or meta.get("warp_mode") or "legacy"   # the authors' checkpoints use legacy
    if mode not in WARP_MODES:
        raise UserError(f"warp mode {mode!r}; expected one of {', '.join(WARP_MODES)}")
    return mode


def generator_plan(generator, config: Pose2ImgConfig, warp_mode: str = "legacy",
                   checkpoint: Optional[Dict[str, Any]] = None) -> ExportPlan:
    """The export plan of a generator already in memory (a checkpoint, training, the demo model).

    Graphs are traced from an exactly rewritten copy (fewer multiply-adds) and verified against
    the unmodified reference-layout modules."""
    from ..models.fuse import fuse_upsample_convs
    from ..models.pose2img import FrameStage, Pose2ImgGeometry, SourceStage

    config.check_canvas()
    geometry = Pose2ImgGeometry.from_config(config, warp_mode)
    source_spec, frame_spec = stage_specs(geometry.height, geometry.width)
    generator.eval()
    fused = fuse_upsample_convs(generator)
    source_feed, target_feed = verification_inputs(geometry.height, geometry.width)

    def frame_feed(outputs):
        return {**target_feed, "source_keypoints": source_feed["source_keypoints"],
                "source_valid": source_feed["source_valid"], **outputs["source"]}

    stages = [ExportStage(source_spec, SourceStage(fused, geometry).eval(), SourceStage(generator, geometry).eval(),
                          lambda outputs: source_feed),
              ExportStage(frame_spec, FrameStage(fused, geometry).eval(), FrameStage(generator, geometry).eval(),
                          frame_feed)]
    manifest = {"canvas": [geometry.height, geometry.width], "warp_mode": warp_mode, "width": generator.width,
                "precision": "fp32", "graph_rewrites": ["upsample_conv_to_subpixel_2x2"], "config": config.to_dict(),
                "checkpoint": checkpoint or {}}
    return ExportPlan(stages, manifest)


class Pose2ImgFamily(Family):
    name = "pose2img"
    identity_inputs = (IdentityInput("source", "image"), IdentityInput("source_keypoints", "its OpenPose keypoints"))
    identity_stages = ("source",)
    frame_stages = ("frame",)
    export_options = ("config", "scale", "warp_mode")
    int8 = Int8Plan("frame", ("/unet_stageC/",),
                    fp32_stages_why="the source stage runs once per identity: INT8 there costs quality, saves no "
                                    "frame time")

    def is_checkpoint(self, path: Path) -> bool:
        return Path(path).is_file()

    def export_plan(self, checkpoint: Path, options: Mapping[str, Any], log: Log) -> ExportPlan:
        from ..config import load_pose2img_config
        from ..manifest import sha256_file
        from ..models.checkpoint import load_generator

        config_path, scale = options.get("config"), options.get("scale")
        if config_path is None and scale is not None:
            raise UserError("--scale needs --config (or re-export from a config)")
        config = config_path if isinstance(config_path, Pose2ImgConfig) or config_path is None \
            else load_pose2img_config(config_path, scale=scale)
        generator, meta = load_generator(checkpoint)
        if config is None:
            if not meta.get("config"):
                raise UserError("has no embedded config (an authors' checkpoint?); pass --config CFG.yaml", checkpoint)
            config = Pose2ImgConfig.from_dict(meta["config"])
        info = {"path": str(Path(checkpoint).resolve()), "sha256": sha256_file(checkpoint),
                "meta": {k: v for k, v in meta.items() if k != "config"}}
        return generator_plan(generator, config, resolve_warp_mode(options.get("warp_mode"), meta), info)

    def describe(self, manifest: Mapping[str, Any]) -> str:
        return f"warp {manifest.get('warp_mode')}"

    def cache_key(self, checkpoint: Path, options: Mapping[str, Any]):
        import json

        from ..manifest import sha256_file

        config = options.get("config")
        if isinstance(config, Pose2ImgConfig):
            config = json.dumps(config.to_dict(), sort_keys=True)
        elif config and Path(config).is_file():
            config = sha256_file(config)
        return [sha256_file(checkpoint), str(config), str(options.get("scale")), str(options.get("warp_mode"))]

    def adapter(self, manifest: Mapping[str, Any], identity: Mapping[str, Path], warn: Warn = lambda m: None):
        return Pose2ImgAdapter(Pose2ImgConfig.from_dict(manifest["config"]), identity["source"],
                               identity["source_keypoints"])

    def torch_stage(self, manifest: Mapping[str, Any], stage_name: str):
        from ..models.checkpoint import load_generator
        from ..models.pose2img import FrameStage, Pose2ImgGeometry, SourceStage

        ckpt = (manifest.get("checkpoint") or {}).get("path")
        if not ckpt or not Path(ckpt).is_file():
            raise UserError(f"--backend torch needs the checkpoint this model was exported from "
                            f"({ckpt or 'not recorded'}), and it is not there; use --backend ort-cpu")
        generator, _ = load_generator(ckpt)
        geometry = Pose2ImgGeometry.from_config(Pose2ImgConfig.from_dict(manifest["config"]), manifest["warp_mode"])
        return (SourceStage if stage_name == "source" else FrameStage)(generator, geometry)

    def training(self, options: Mapping[str, Any]) -> TrainingPlan:
        """``poserender train pose2img``: the generator (+ discriminator) on frames of one person."""
        from ..training.config import load_train_config
        from ..training.pose2img_trainer import Pose2ImgTrainer, RunOptions

        config = options["config"]
        cfg = load_train_config(config, {k: options.get(k) for k in ("frames", "keypoints", "steps", "batch_size",
                                                                     "lr", "seed", "workers")})
        run_dir = Path(options["output"]) if options.get("output") else Path("runs") / Path(config).stem

        def describe(trainer) -> str:
            return (f"{len(trainer.train_set)} training / {len(trainer.val_set)} validation frames, "
                    f"{trainer.geometry.height}x{trainer.geometry.width}, width {cfg.width}")

        def finished(result, seconds: float) -> str:
            last = result["last"]
            return (f"trained to step {result['step']} in {seconds:.1f} s (loss {last.get('total', float('nan')):.4g}, "
                    f"{last.get('it_per_s', 0):.2f} it/s): {result['checkpoint'] or run_dir}")

        def build(say, on_step, ctx):
            return Pose2ImgTrainer(cfg, RunOptions(run_dir, options.get("resume"), options.get("vgg_weights"),
                                                   options.get("amp", "off"), warn=say, on_step=on_step), ctx)
        return TrainingPlan("pose2img", cfg.batch_size, build, describe, finished)

    def reference_forward(self, manifest: Mapping[str, Any], threads: int):
        """The authors' way: PyTorch eager FP32, ``FullPipeline`` (all three U-Nets) per frame at
        batch 1, every per-sample input (source heat maps, limb-mask prior, target heat maps, limb
        transforms) recomputed each frame, then ``(y + 1) * 127.5`` to uint8 BGR. The per-sample
        preprocessing is our vectorised torch code, faster than the reference's numpy loops, so a
        baseline built on it is flattered, never handicapped."""
        checkpoint = (manifest.get("checkpoint") or {}).get("path")
        if not checkpoint or not Path(checkpoint).is_file():
            raise UserError(f"needs the checkpoint the model was exported from ({checkpoint or 'not recorded'}); "
                            "bench the checkpoint itself")
        try:
            import torch
        except ImportError:
            raise UserError("needs torch (pip install 'poserender[export]')") from None
        from ..models.checkpoint import load_generator
        from ..models.pose2img import FullPipeline, Pose2ImgGeometry, to_uint8_bgr

        torch.set_num_threads(threads)
        generator, _ = load_generator(checkpoint)
        geometry = Pose2ImgGeometry.from_config(Pose2ImgConfig.from_dict(manifest["config"]),
                                                manifest.get("warp_mode", "legacy"))
        pipeline = FullPipeline(generator, geometry).eval()
        names = ("source_image", "source_keypoints", "source_valid", "target_keypoints", "target_valid")

        def forward(identity, frame):
            feed = {**identity, **frame}
            with torch.no_grad():
                return to_uint8_bgr(pipeline(*(torch.from_numpy(feed[n]) for n in names))).numpy()[0]
        return forward

    def verification_inputs(self, manifest: Mapping[str, Any]):
        h, w = manifest["canvas"]
        source, target = verification_inputs(h, w, frames=2)
        return {**source, **target}

