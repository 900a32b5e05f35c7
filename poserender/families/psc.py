"""PSC (Pose-Shape-Content inference, TMM 2022): PM-Net, AA-Net and CT-Net.

Stages: ``source`` (once per identity: S0 one-hot, AA-Net's parsing code, CT-Net's source
features), ``interp`` (auxiliary: PM-Net between two key poses), ``parsing`` (per frame: peak snap,
heat maps, AA-Net, argmax) and ``frame`` (per frame: CT-Net to uint8 BGR). Identity: the source
image I0 and its parsing S0 (a label PNG). Frames: 18 COCO joints (or OpenPose BODY_25/137
rows, their COCO-18 joints picked) in canvas pixels, -1 for a missing joint. A checkpoint is a
folder with the authors' pm.pth, aa.pth and ct.pth. The reference-layout and interpolation
render modes are in :mod:`.psc_modes`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import cv2
import numpy as np

from ..errors import BadFrame, UserError
from ..images import read_image
from ..keypoints.coco18 import BODY25_TO_COCO18, MISSING, N_COCO18, template_pose
from ..keypoints.layout import N_OPENPOSE
from ..keypoints.validate import frame_problem
from ..runtime.adapters import KeypointBatches
from ..runtime.sources import Coco18FileSource, Frame, FrameSource
from ..specs import StageSpec, TensorSpec
from .base import ExportPlan, Family, IdentityInput, Int8Plan, Log, TrainingPlan, Warn

JOINTS = 18
CLASSES = 7
CHECKPOINT_NAMES = ("pm.pth", "aa.pth", "ct.pth")
#: user-facing names of AA-Net's BatchNorm statistics (export --aa-norm) -> models.psc.blocks.BN_STATS
AA_NORM_CHOICES = {"authors": "sample", "eval": "running"}


def stage_specs(height: int = 256, width: int = 256, ngf: int = 16) -> List[StageSpec]:
    if height % 16 or width % 16:
        raise ValueError(f"PSC canvas {height}x{width}: both sides must be multiples of 16")
    q, e, s = (height // 4, width // 4), (height // 8, width // 8), (height // 16, width // 16)
    features = (TensorSpec("parsing_code", "float32", ("batch", ngf * 16) + s, "AA-Net: normalised S0 code"),
                TensorSpec("s0_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: S0 features"),
                TensorSpec("s0_enc_3", "float32", ("batch", ngf * 8) + e, "CT-Net: S0 features"),
                TensorSpec("s0_enc_4", "float32", ("batch", ngf * 16) + s, "CT-Net: S0 features"),
                TensorSpec("body_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: body-masked I0 features"),
                TensorSpec("cloth_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: cloth-masked I0 features"),
                TensorSpec("cloth_grad_enc_2", "float32", ("batch", ngf * 4) + q, "CT-Net: Sobel-branch features"),
                TensorSpec("style_code", "float32", ("batch", CLASSES, ngf * 4), "CT-Net: per-label style code"))
    one = lambda t: TensorSpec(t.name, t.dtype, (1,) + t.shape[1:], t.doc)  # noqa: E731
    kp = lambda name: TensorSpec(name, "float32", ("batch", JOINTS, 2), "COCO-18 (x, y) canvas pixels")  # noqa: E731
    kv = lambda name: TensorSpec(name, "float32", ("batch", JOINTS), "1 = joint present, 0 = missing")  # noqa: E731
    key = lambda t: TensorSpec(t.name, t.dtype, (1,) + t.shape[1:], t.doc + " (key pose)")  # noqa: E731
    labels = TensorSpec("target_labels", "uint8", ("batch", height, width), f"parsing labels 0..{CLASSES - 1}")
    return [
        StageSpec("source", inputs=(TensorSpec("source_image", "float32", ("batch", 3, height, width), "RGB in [-1, 1]"),
                                    TensorSpec("source_labels", "uint8", ("batch", height, width),
                                               f"S0 parsing labels 0..{CLASSES - 1}")),
                  outputs=features, min_batch=1, opt_batch=1, max_batch=4, file="source.onnx",
                  doc="once per identity: S0 one-hot, AA-Net parsing encoder, CT-Net source encoders, style code"),
        StageSpec("interp", inputs=(key(kp("pose_a")), key(kv("valid_a")), key(kp("pose_b")), key(kv("valid_b")),
                                    TensorSpec("t", "float32", ("batch",), "interpolation parameter, 0 = A, 1 = B")),
                  outputs=(kp("keypoints"), kv("valid")), min_batch=1, opt_batch=4, max_batch=64, file="interp.onnx",
                  doc="PM-Net between two key poses: heat maps, PM-Net, per-joint peak (> 0.5)"),
        StageSpec("parsing", inputs=(kp("target_keypoints"), kv("target_valid"), one(features[0])),
                  outputs=(labels,), min_batch=1, opt_batch=4, max_batch=16, file="parsing.onnx",
                  doc="per frame: peak snap, heat maps (sigma 100), AA-Net, argmax"),
        StageSpec("frame", inputs=(labels,) + tuple(one(f) for f in features[1:]),
                  outputs=(TensorSpec("frames", "uint8", ("batch", height, width, 3), "BGR"),),
                  min_batch=1, opt_batch=4, max_batch=16, file="frame.onnx",
                  doc="per frame: one-hot, CT-Net flows, warps, decoders, to uint8 BGR"),
    ]


# -- identity inputs ------------------------------------------------------------------------------

def load_psc_image(path: Path, height: int, width: int, warn: Warn) -> np.ndarray:
    """I0 as the reference's dataset makes it: (1, 3, H, W) float32 RGB, (x / 255 - 0.5) / 0.5.
    Another size is resized bilinearly (the reference resizes too, with PIL) and a warning says so."""
    image = read_image(path, cv2.IMREAD_COLOR, "source image")
    if image.shape[:2] != (height, width):
        warn(f"{path}: image is {image.shape[1]}x{image.shape[0]}, the model's canvas is {width}x{height}; "
             "resized bilinearly (the reference resizes images too; poses must be in canvas pixels)")
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    rgb = image[:, :, ::-1].astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(((rgb - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)[None])


def _is_palette_png(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(26)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[25] == 3


def load_psc_parsing(path: Path, height: int, width: int, classes: int) -> np.ndarray:
    """S0 as labels (1, H, W) uint8: the png's first channel (quirk parsing-channel0). Refused: another
    size (label maps cannot be interpolated safely, and the reference does not resize them either),
    labels >= ``classes``, palette PNGs (their pixel values are colours, not labels)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("source parsing not found; expected a label-map PNG", path)
    if _is_palette_png(path):
        raise UserError("is a palette PNG; expected the labels as pixel values (grey or RGB with equal channels)", path)
    image = read_image(path, cv2.IMREAD_UNCHANGED, "parsing")
    labels = image if image.ndim == 2 else image[:, :, 2]   # OpenCV is BGR(A): the first channel is index 2
    if labels.shape != (height, width):
        raise UserError(f"parsing is {labels.shape[1]}x{labels.shape[0]}; expected {width}x{height} (refused, not "
                        "resized: interpolating a label map invents labels; resize it with nearest-neighbour)", path)
    top = int(labels.max())
    if top >= classes:
        raise UserError(f"has label {top} ({int((labels >= classes).sum())} pixels); the model has {classes} "
                        f"classes, labels 0..{classes - 1}", path)
    return np.ascontiguousarray(labels.astype(np.uint8)[None])


class PSCAdapter(KeypointBatches):
    """The runtime adapter: ``source`` (I0, S0) once per identity, then per batch ``parsing``
    (target pose -> target labels) and ``frame`` (CT-Net -> BGR frames).

    Accepted per-frame points, in PSC canvas pixels: the 18 COCO joints, or OpenPose BODY_25 /
    137-point rows (their COCO-18 joints are picked). A frame in which no joint is valid is bad
    (kind ``empty``); values failing the value check are ``nan``/``range``.
    """

    family = "psc"
    identity_stages = ("source",)
    frame_stages = ("parsing", "frame")

    def __init__(self, manifest: Mapping, source_image: Path, source_parsing: Path, warn: Warn = lambda m: None):
        height, width = (int(v) for v in manifest["canvas"])
        self.canvas_hw = (height, width)
        # read and check the identity before anything else exists (bad input -> no output)
        self._image = load_psc_image(Path(source_image), height, width, warn)
        self._labels = load_psc_parsing(Path(source_parsing), height, width, int(manifest["config"]["classes"]))
        self._identity = None

    def open_file(self, path: Path, fps: float) -> FrameSource:
        """PSC csv (a file or a folder of them; a pose with a NaN/inf or out-of-range value is a bad
        frame, not an error), OpenPose JSON (folder or file) or .npy."""
        return Coco18FileSource(Path(path), fps)

    def identity_feed(self) -> Dict[str, np.ndarray]:
        return {"source_image": self._image, "source_labels": self._labels}

    def normalise(self, frame: Frame) -> Tuple[np.ndarray, np.ndarray]:
        """(18, 2) float32 canvas pixels (missing joints at -1) and (18,) float32 validity."""
        xy, valid = frame.xy, frame.valid
        if xy.shape[0] in (25, N_OPENPOSE):
            pick = list(BODY25_TO_COCO18)
            xy, valid = xy[pick], valid[pick]
        elif xy.shape[0] != N_COCO18:
            raise BadFrame(f"{xy.shape[0]} joints; expected {N_COCO18} (COCO-18), 25 (BODY_25) or {N_OPENPOSE} "
                           "(OpenPose body+face+hands)", kind="shape", frame=frame.index)
        problem = frame_problem(xy[valid])
        if problem is not None:
            raise BadFrame(problem[1], kind=problem[0], frame=frame.index)
        if not valid.any():
            raise BadFrame("no person detected (no valid joint)", kind="empty", frame=frame.index)
        xy = np.where(valid[:, None], xy, MISSING)
        return xy.astype(np.float32), valid.astype(np.float32)


# -- export ---------------------------------------------------------------------------------------

def verification_feeds(height: int, width: int, seed: int = 0) -> Dict[str, Dict[str, np.ndarray]]:
    """Realistic inputs for every stage at batch 2: a smooth image, a parsing of a drawn figure
    (labels 0-4), template poses with jitter (one joint missing) and two t values."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, size=(max(height // 16, 2), max(width // 16, 2), 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)[None]
    pose = template_pose(height, width)
    labels = np.zeros((height, width), np.uint8)
    pts = lambda idx: np.round(pose[list(idx)]).astype(np.int32)  # noqa: E731
    thick = max(2, width // 20)
    cv2.fillConvexPoly(labels, pts((2, 5, 11, 8)), 4)
    for limb in ((2, 3), (3, 4), (5, 6), (6, 7), (8, 9), (9, 10), (11, 12), (12, 13)):
        cv2.line(labels, *map(tuple, pts(limb)), 3, thick)
    cv2.circle(labels, tuple(pts((0,))[0]), max(3, width // 18), 2, -1)
    cv2.circle(labels, tuple(pts((14,))[0]), max(2, width // 40), 1, -1)
    targets = pose[None] + rng.normal(0, width / 40, size=(2, 18, 2))
    valid = np.ones((2, 18), np.float32)
    valid[1, 10] = 0
    targets[1, 10] = -1
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return {
        "source": {"source_image": f32(image), "source_labels": labels[None]},
        "interp": {"pose_a": f32(pose[None]), "valid_a": np.ones((1, 18), np.float32),
                   "pose_b": f32(targets[:1]), "valid_b": np.ones((1, 18), np.float32),
                   "t": np.array([0.3, 0.7], np.float32)},
        "parsing": {"target_keypoints": f32(targets), "target_valid": valid},
    }


class PSCFamily(Family):
    name = "psc"
    identity_inputs = (IdentityInput("source", "I0 image"), IdentityInput("source_parsing", "S0 label PNG"))
    identity_stages = ("source",)
    frame_stages = ("parsing", "frame")
    export_options = ("aa_norm", "size")
    render_options = ("psc_data", "t_values", "panels", "key_poses", "frames")
    # CT-Net: encoders, bottleneck, style codes and decoders; its heads (/output, /flow_out,
    # /occ_mask), the flow warps (GridSample) and the label masks are outside the trunk
    int8 = Int8Plan("frame", ("/encoder", "/decoder", "/bottle_neck", "/style_conv"), heads_outside_trunk=True,
                    fp32_ops={"InstanceNormalization": "instance_norm"},
                    fp32_stages_why="source runs once per identity and interp on key poses only (no frame time to "
                                    "save); parsing (AA-Net) ends in an argmax whose flipped labels change whole "
                                    "regions: not quantized")

    def is_checkpoint(self, path: Path) -> bool:
        path = Path(path)
        return path.is_dir() and all((path / name).is_file() for name in CHECKPOINT_NAMES)

    def export_plan(self, checkpoint: Path, options: Mapping[str, Any], log: Log) -> ExportPlan:
        from .psc_export import psc_plan

        return psc_plan(checkpoint, options.get("aa_norm") or "authors", options.get("size") or 256, log)

    def render_mode(self, options: Mapping[str, Any], model_dir: Path):
        from .psc_modes import select_mode

        return select_mode(dict(options))

    def cache_key(self, checkpoint: Path, options: Mapping[str, Any]):
        from ..manifest import sha256_file

        return [sha256_file(Path(checkpoint) / n) for n in CHECKPOINT_NAMES] + [options.get("aa_norm") or "authors"]

    def adapter(self, manifest: Mapping[str, Any], identity: Mapping[str, Path], warn: Warn = lambda m: None):
        return PSCAdapter(manifest, identity["source"], identity["source_parsing"], warn)

    def torch_stage(self, manifest: Mapping[str, Any], stage_name: str):
        from ..models.psc.checkpoint import load_psc_nets
        from ..models.psc.stages import psc_modules

        folder = (manifest.get("checkpoint") or {}).get("path")
        if not folder or not self.is_checkpoint(Path(folder)):
            raise UserError(f"--backend torch needs the PSC checkpoint folder this model was exported from "
                            f"({folder or 'not recorded'}, with pm.pth/aa.pth/ct.pth), and it is not there; "
                            "use --backend ort-cpu")
        pm, aa, ct, _ = load_psc_nets(folder, manifest.get("bn_stats", "sample"))
        h, w = manifest["canvas"]
        return psc_modules(pm, aa, ct, h, w, manifest["config"].get("sigma", 100.0))[stage_name]

    def training(self, options: Mapping[str, Any]) -> TrainingPlan:
        """``poserender train psc --stage pm|aa|ct``: one net; the run folder collects pm.pth, aa.pth
        and ct.pth (a PSC checkpoint folder)."""
        from ..training.loop import RunOptions
        from ..training.psc_trainer import PscTrainer, load_psc_config

        stage, config = options["stage"], options["config"]
        cfg = load_psc_config(config, stage, {k: options.get(k) for k in ("data", "steps", "batch_size", "lr", "seed",
                                                                          "workers", "size")})
        out_dir = Path(options["output"]) if options.get("output") else Path("runs") / Path(config).stem

        def describe(trainer) -> str:
            return f"{len(trainer.train_set)} samples, {cfg.size}x{cfg.size}, {trainer.schedule.steps} steps"

        def finished(result, seconds: float) -> str:
            return (f"trained {stage} to step {result['step']} in {seconds:.1f} s "
                    f"(loss {result['last'].get('total', float('nan')):.4g}): {out_dir / (stage + '.pth')} "
                    f"(resumable: {result['checkpoint'] or out_dir / stage})")

        def build(say, on_step, ctx):
            return PscTrainer(cfg, RunOptions(out_dir / stage, options.get("resume"), options.get("vgg_weights"),
                                              options.get("amp", "off"), warn=say, on_step=on_step), ctx)
        return TrainingPlan(f"psc {stage}", cfg.batch_size, build, describe, finished)

    def verification_inputs(self, manifest: Mapping[str, Any]):
        h, w = manifest["canvas"]
        feeds = verification_feeds(h, w)
        return {name: value for feed in feeds.values() for name, value in feed.items()}
