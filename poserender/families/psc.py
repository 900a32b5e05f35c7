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
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from ..errors import BadFrame, UserError
from ..keypoints.coco18 import BODY25_TO_COCO18, MISSING, N_COCO18
from ..keypoints.layout import N_OPENPOSE
from ..keypoints.validate import frame_problem
from ..runtime.adapters import KeypointBatches
from ..runtime.sources import Coco18FileSource, Frame, FrameSource
from .base import ExportPlan, Family, IdentityInput, Int8Plan, Log, TrainingPlan, Warn
from .psc_io import CHECKPOINT_NAMES, load_psc_image, load_psc_parsing, verification_feeds

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

    def describe(self, manifest: Mapping[str, Any]) -> str:
        return f"AA-Net norm {manifest['config'].get('aa_norm')}"

    def render_mode(self, options: Mapping[str, Any], model_dir: Path):
        from .psc_modes import select_mode

        return select_mode(dict(options), self.torch_stage)

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
